//! Contract tests for the translating front doors, on fixtures (`tests/doors/{messages,responses}/*.json`):
//! the client's body (`door_request`) -> the internal chat body (`chat_request`), the internal reply
//! (`chat_reply`) -> the door's reply (`door_reply`), and the internal chunks (`chat_stream`) -> the
//! door's events (`door_events`, as `[event, data]`). `YM_BLESS=1` writes the expected sides of a
//! fixture that lacks them (to review before committing); without it a missing side fails.

use std::path::Path;

use serde_json::{json, Value};
use yardmaster::gateway::edge::{Events, Translation};
use yardmaster::gateway::{messages, responses};

fn fixtures(door: &str) -> Vec<(std::path::PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/doors").join(door);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "too few {door} fixtures");
    out
}

fn events<T: Events>(mut t: Translation<T>, chunks: &Value) -> Value {
    let mut text = String::new();
    for c in chunks.as_array().unwrap() {
        let data = match c {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        text.push_str(&t.feed(format!("data: {data}\n\n").as_bytes()));
    }
    let mut out = Vec::new();
    for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
        let event = frame.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
        let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        out.push(json!([event, serde_json::from_str::<Value>(data).unwrap()]));
    }
    Value::Array(out)
}

/// Compares `got` with the fixture's `key`, or writes it there when blessing.
fn expect(path: &Path, f: &mut Value, key: &str, got: Value, blessed: &mut bool) {
    match f.get(key) {
        Some(want) => assert_eq!(&got, want, "{}: {key}", path.display()),
        None if std::env::var_os("YM_BLESS").is_some() => {
            f[key] = got;
            *blessed = true;
        }
        None => panic!("{}: no `{key}` (YM_BLESS=1 writes it, to review)", path.display()),
    }
}

fn run(door: &str, to_chat: fn(Value) -> Value, reply: fn(&Value, &Value) -> Value, stream: fn(&Value) -> Value) {
    for (path, mut f) in fixtures(door) {
        let mut blessed = false;
        let chat = to_chat(f["door_request"].clone());
        expect(&path, &mut f, "chat_request", chat, &mut blessed);
        let r = reply(&f["door_request"], &f["chat_reply"]);
        expect(&path, &mut f, "door_reply", r, &mut blessed);
        let e = stream(&f);
        expect(&path, &mut f, "door_events", e, &mut blessed);
        if blessed {
            std::fs::write(&path, serde_json::to_string_pretty(&f).unwrap() + "\n").unwrap();
        }
    }
}

#[test]
fn the_messages_door_keeps_its_contract() {
    run(
        "messages",
        |b| messages::to_chat(b).unwrap(),
        |_, r| messages::to_message(r),
        |f| events(Translation::new(messages::Relay::default()), &f["chat_stream"]),
    );
}

#[test]
fn the_responses_door_keeps_its_contract() {
    run(
        "responses",
        |b| responses::to_chat(b).unwrap(),
        |req, r| responses::to_response(r, &responses::Echo::of(req)),
        |f| events(Translation::new(responses::Relay::new(responses::Echo::of(&f["door_request"]))), &f["chat_stream"]),
    );
}

/// Bodies each door refuses, with the status: never a panic, never a 500.
#[test]
fn malformed_bodies_are_refused_by_each_door() {
    for body in [
        json!(null),
        json!([1]),
        json!("x"),
        json!({}),
        json!({"model": "m", "max_tokens": -1, "messages": []}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]}),
    ] {
        let e = messages::to_chat(body.clone()).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{body}");
    }
    for body in [
        json!(null),
        json!({"model": "m"}),
        json!({"model": "m", "input": 5}),
        json!({"model": "m", "input": [{"type": "computer_call"}]}),
        json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
        json!({"model": "m", "input": "x", "tool_choice": 7}),
        json!({"model": "m", "input": "x", "instructions": 3}),
    ] {
        let e = responses::to_chat(body.clone()).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{body}");
    }
}
