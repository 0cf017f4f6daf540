//! The body that leaves for one target: the client's body (as the front door made it, in
//! OpenAI's chat or embeddings shape) -> JSON bytes with `model` set to the upstream id and the
//! rule's `with (...)` overrides applied, serialised straight from the client's body (no copy
//! of its messages).

use serde_json::Value;

/// The body that leaves for one target, serialised straight from the client's body (no copy of
/// its messages): `model` set to the upstream id, overrides applied (`max_tokens` caps the
/// client's value; the others replace it). With `include_usage`, a stream asks for its usage
/// (`stream_options.include_usage`), whatever the client asked.
pub fn outgoing_body(client: &Value, upstream_id: &str, with: &[(String, Value)], include_usage: bool) -> bytes::Bytes {
    let bytes = match client.as_object() {
        Some(map) => serde_json::to_vec(&Outgoing { client: map, model: upstream_id, with, include_usage }),
        None => serde_json::to_vec(client),
    };
    bytes::Bytes::from(bytes.unwrap_or_default())
}

fn is_max(k: &str) -> bool {
    k == "max_tokens" || k == "max_completion_tokens"
}

struct Outgoing<'a> {
    client: &'a serde_json::Map<String, Value>,
    model: &'a str,
    with: &'a [(String, Value)],
    include_usage: bool,
}

impl serde::Serialize for Outgoing<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let cap = self.with.iter().find(|(k, _)| is_max(k)).map(|(_, v)| v.as_u64().unwrap_or(u64::MAX));
        let mut m = s.serialize_map(None)?;
        let mut capped = false;
        for (k, v) in self.client {
            if k == "model" {
                m.serialize_entry(k, self.model)?;
            } else if k == "stream_options" && self.include_usage {
                let mut opts = v.as_object().cloned().unwrap_or_default();
                opts.insert("include_usage".into(), Value::Bool(true));
                m.serialize_entry(k, &opts)?;
            } else if is_max(k) && cap.is_some() {
                // A numeric client value is capped in place; anything else gives way to the override.
                if let (Some(c), Some(cur)) = (cap, v.as_u64()) {
                    m.serialize_entry(k, &cur.min(c))?;
                    capped = true;
                }
            } else if !self.with.iter().any(|(w, _)| w == k) {
                m.serialize_entry(k, v)?;
            }
        }
        if !self.client.contains_key("model") {
            m.serialize_entry("model", self.model)?;
        }
        if self.include_usage && !self.client.contains_key("stream_options") {
            m.serialize_entry("stream_options", &serde_json::json!({"include_usage": true}))?;
        }
        for (k, v) in self.with {
            if !(is_max(k) && capped) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build_body(client: &Value, upstream_id: &str, with: &[(String, Value)]) -> Value {
        serde_json::from_slice(&outgoing_body(client, upstream_id, with, false)).unwrap()
    }

    #[test]
    fn overrides_cap_max_tokens_and_replace_the_rest() {
        let client = json!({"model": "auto", "max_tokens": 2000, "temperature": 1.0, "messages": []});
        let b = build_body(&client, "up", &[("max_tokens".into(), json!(512)), ("temperature".into(), json!(0.2))]);
        assert_eq!(b["model"], "up");
        assert_eq!(b["max_tokens"], 512);
        assert_eq!(b["temperature"], 0.2);
        let small = json!({"model": "auto", "max_tokens": 100, "messages": []});
        assert_eq!(build_body(&small, "up", &[("max_tokens".into(), json!(512))])["max_tokens"], 100);
        let none = json!({"model": "auto", "messages": []});
        assert_eq!(build_body(&none, "up", &[("max_tokens".into(), json!(512))])["max_tokens"], 512);
        // The client's `max_completion_tokens` is capped by a `max_tokens` override, not duplicated.
        let mct = json!({"model": "auto", "max_completion_tokens": 900, "messages": []});
        let b = build_body(&mct, "up", &[("max_tokens".into(), json!(512))]);
        assert_eq!((b["max_completion_tokens"].clone(), b.get("max_tokens")), (json!(512), None));
        // Keys are never written twice, and the rest of the body is kept as it was.
        let text =
            String::from_utf8(outgoing_body(&client, "up", &[("temperature".into(), json!(0.2))], false).to_vec())
                .unwrap();
        assert_eq!(text.matches("temperature").count(), 1);
        assert_eq!(text.matches("\"model\"").count(), 1);
        let nomodel = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(build_body(&nomodel, "up", &[])["messages"][0]["content"], "hi");
        assert_eq!(build_body(&nomodel, "up", &[])["model"], "up");
    }

    #[test]
    fn streams_ask_for_usage_and_keep_the_clients_stream_options() {
        let client = json!({"model": "auto", "stream": true, "messages": []});
        let b: Value = serde_json::from_slice(&outgoing_body(&client, "up", &[], true)).unwrap();
        assert_eq!(b["stream_options"], json!({"include_usage": true}));
        let asked = json!({"model": "auto", "stream": true, "stream_options": {"include_usage": false, "x": 1}, "messages": []});
        let b: Value = serde_json::from_slice(&outgoing_body(&asked, "up", &[], true)).unwrap();
        assert_eq!(b["stream_options"], json!({"include_usage": true, "x": 1}));
        let b: Value = serde_json::from_slice(&outgoing_body(&client, "up", &[], false)).unwrap();
        assert_eq!(b.get("stream_options"), None);
    }
}
