//! The translators on arbitrary input: every line is fed as an event to the Anthropic and Gemini
//! stream translators and, as a chunk, to the Messages and Responses doors' stream translations,
//! and parsed as JSON for the request and reply translations of the providers and the doors.
//! They may refuse input, but must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yardmaster::json::Value;
use yardmaster::providers::native::Translate;
use yardmaster::gateway::edge::Translation;
use yardmaster::gateway::{messages, responses};
use yardmaster::providers::{anthropic, gemini};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let shape = anthropic::Shape { wants_usage: true, json_tool: Some("json_response".into()) };
    let mut a = anthropic::Stream::new("m", shape.clone());
    let mut g = gemini::Stream::new("m", gemini::Shape { wants_usage: true });
    let mut m = Translation::new(messages::Relay::default());
    let mut r = Translation::new(responses::Relay::new(responses::Echo::default()));
    for line in text.lines() {
        let _ = a.event("", line);
        let _ = g.event("", line);
        // A line as one event of the internal stream, and as bytes cut anywhere.
        let _ = m.feed(format!("data: {line}\n\n").as_bytes());
        let _ = r.feed(line.as_bytes());
        if let Ok(v) = yardmaster::json::from_str::<Value>(line) {
            let _ = anthropic::request(&v, true);
            let _ = anthropic::reply(&v, "m", &shape);
            let _ = gemini::request(&v);
            let _ = gemini::reply(&v, "m");
            let _ = gemini::embed_request(&v, "m");
            let _ = gemini::embed_reply(&v, "m");
            let _ = messages::to_chat(v.clone());
            let _ = messages::to_message(&v);
            let _ = responses::to_chat(v.clone());
            let _ = responses::to_response(&v, &responses::Echo::of(&v));
        }
    }
    let _ = a.end();
    let _ = g.end();
    let _ = m.feed(b"data: [DONE]\n\n");
    let _ = r.feed(b"\n\ndata: [DONE]\n\n");
});
