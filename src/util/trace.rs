//! W3C trace context (`traceparent`): a request's trace id, the client's span it continues, and
//! fresh span ids. Leaf code: the gateway reads the header, dispatch writes one per attempt.

use rand::Rng;

/// A span id: eight random bytes, never all zero.
pub fn span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::rng().random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The trace a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (16 bytes, not all zero).
    pub trace_id: [u8; 16],
    /// The client's span, when the request came with a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// The context of an incoming `traceparent` (version `00` and later versions' first four
    /// fields), or `None` when it is absent or malformed (then a new trace starts).
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span = [0u8; 8];
        let mut flag = [0u8; 1];
        hex::decode_to_slice(version, &mut [0u8; 1]).ok()?;
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(parent, &mut span).ok()?;
        hex::decode_to_slice(flags, &mut flag).ok()?;
        // Upper-case hex is invalid in version 00.
        let lower = |s: &str| !s.bytes().any(|b| b.is_ascii_uppercase());
        if trace_id == [0; 16] || span == [0; 8] || !(lower(trace) && lower(parent) && lower(flags)) {
            return None;
        }
        Some(TraceContext { trace_id, parent: Some(span), flags: flag[0] })
    }

    /// A new trace (sampled), for a request that came without one.
    pub fn new_root() -> TraceContext {
        let mut trace_id: [u8; 16] = rand::rng().random();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext { trace_id, parent: None, flags: 1 }
    }

    /// Whether the client asked for this trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `traceparent` that names `span` as the parent of what comes next.
    pub fn header(&self, span: [u8; 8]) -> String {
        format!("00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(span), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_the_malformed() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(h).unwrap();
        assert_eq!(c.parent, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
        assert!(c.sampled());
        assert_eq!(c.header(c.parent.unwrap()), h);
        let child = c.header([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(child, "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x").is_some());
        assert_ne!(span_id(), [0; 8]);
    }
}
