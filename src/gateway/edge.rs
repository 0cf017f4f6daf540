//! What the translating front doors ([`super::messages`], [`super::responses`]) share at the
//! edge: the internal event stream's frames (`data: ...` payloads, however the bytes were cut),
//! and a body stream mapped through a translator.

use futures_util::StreamExt;

/// The `data:` payloads of an event stream, from bytes cut anywhere.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// Takes bytes; returns the payloads of the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&frame);
            out.extend(text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.trim().to_string()));
        }
        out
    }
}

/// `body` with every piece passed through `translate` (bytes in, the events they complete out;
/// pieces that complete none are left out).
pub fn translate<S>(
    body: S,
    mut translate: impl FnMut(&[u8]) -> String + Send + 'static,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + 'static,
{
    body.map(move |chunk| chunk.map(|b| bytes::Bytes::from(translate(&b))))
        .filter(|b| std::future::ready(b.as_ref().map_or(true, |b| !b.is_empty())))
}
