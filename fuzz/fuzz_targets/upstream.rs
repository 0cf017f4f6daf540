//! What upstreams send, on arbitrary input: `Retry-After` values, server-sent event bodies cut
//! into chunks anywhere (the first byte chooses the chunk size), whole replies read as raw
//! objects, and `usage` blocks (bounded by a context). They may be refused, but must never
//! panic, and an event never exceeds the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yardmaster::accounting::usage;
use yardmaster::json::Value;
use yardmaster::providers::{native, parse_retry_after};

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(body);
    let _ = parse_retry_after(&text);
    for line in text.lines() {
        let _ = parse_retry_after(line);
    }
    let chunk = usize::from(size % 64) + 1;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        body.chunks(chunk).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let max_event = 256;
    let events = futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(native::sse(
        futures::stream::iter(chunks),
        max_event,
    )));
    for ev in events.iter().flatten() {
        assert!(ev.1.len() <= max_event, "an event over the limit: {}", ev.1.len());
    }
    if let Ok(raw) = native::parse_raw(body) {
        for (_, v) in raw.iter() {
            // Every member of an accepted reply becomes a value (the nesting limit holds).
            assert!(yardmaster::json::from_str::<Value>(v.get()).is_ok());
        }
    }
    if let Ok(v) = yardmaster::json::from_slice::<Value>(body) {
        if let Some(u) = usage::reported(&v) {
            let _ = u.bounded(Some(128_000));
            let _ = u.bounded(None);
            let _ = u.total();
        }
    }
});
