//! The provider translators on arbitrary input: every line is fed as an event to the Anthropic
//! and Gemini stream translators, and parsed as JSON for the request and reply translations.
//! They may refuse input, but must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yardmaster::json::Value;
use yardmaster::providers::native::Translate;
use yardmaster::providers::{anthropic, gemini};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let shape = anthropic::Shape { wants_usage: true, json_tool: Some("json_response".into()) };
    let mut a = anthropic::Stream::new("m", shape.clone());
    let mut g = gemini::Stream::new("m", gemini::Shape { wants_usage: true });
    for line in text.lines() {
        let _ = a.event("", line);
        let _ = g.event("", line);
        if let Ok(v) = yardmaster::json::from_str::<Value>(line) {
            let _ = anthropic::request(&v, true);
            let _ = anthropic::reply(&v, "m", &shape);
            let _ = gemini::request(&v);
            let _ = gemini::reply(&v, "m");
            let _ = gemini::embed_request(&v, "m");
            let _ = gemini::embed_reply(&v, "m");
        }
    }
    let _ = a.end();
    let _ = g.end();
});
