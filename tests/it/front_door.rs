//! What a hostile or careless client sends to the front door, over a raw socket: bodies nested
//! 10,000 deep, invalid UTF-8, NUL bytes, broken chunked encoding, HTTP/1.0, pipelined requests and
//! a 64 KB cookie. Each gets a clean answer (a 4xx in OpenAI's error shape, or the request served)
//! and never a dropped connection or a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::time::Duration;

use crate::gateway_support::gateway;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One parsed response: its status, headers (lower-cased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as written and reads the responses until the server closes the connection.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Vec<Answer> {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = sock.write_all(request).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open: {}", String::from_utf8_lossy(&buf));
    let mut rest = buf.as_slice();
    let mut answers = Vec::new();
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        let body_end = (end + 4 + len).min(rest.len());
        let body = String::from_utf8_lossy(&rest[end + 4..body_end]).into_owned();
        answers.push(Answer { status, head, body });
        rest = &rest[body_end..];
    }
    answers
}

fn post(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-plain\r\n\
         Content-Type: application/json\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn assert_openai_error(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {} {}", a.head, a.body);
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", a.body));
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}: {v}");
    assert!(a.head.contains("x-should-retry: false"), "{what}: {}", a.head);
}

#[tokio::test]
async fn junk_bodies_get_a_400_in_openai_shape() {
    let g = gateway("ok", false).await;
    let deep = format!("{{\"model\": \"auto\", \"messages\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: [(&str, Vec<u8>); 4] = [
        ("10,000-level nesting", deep.into_bytes()),
        (
            "invalid UTF-8",
            b"{\"model\": \"auto\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(),
        ),
        (
            "a NUL byte",
            b"{\"model\": \"auto\", \"messages\": [{\"role\": \"user\", \"content\": \"a\x00b\"}]}".to_vec(),
        ),
        ("not JSON", b"\x00\x01\x02".to_vec()),
    ];
    for (what, body) in cases {
        let answers = raw(g.running.addr, &post(&body, "")).await;
        assert_eq!(answers.len(), 1, "{what}");
        assert_openai_error(&answers[0], 400, what);
    }
    assert_eq!(g.up.total(), 0, "no junk reached the provider");
    g.running.shutdown().await;
}

#[tokio::test]
async fn broken_framing_gets_a_clean_answer() {
    let g = gateway("ok", false).await;
    let good = br#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#;
    // A chunked body is read like any other.
    let mut chunked = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-plain\r\n\
        Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", good.len()).as_bytes());
    chunked.extend_from_slice(good);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let a = raw(g.running.addr, &chunked).await;
    assert_eq!(a.iter().map(|a| a.status).collect::<Vec<_>>(), [200], "chunked");
    // A chunk size that is not hex.
    let bad = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-plain\r\n\
        Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let a = raw(g.running.addr, bad).await;
    assert_eq!(a.len(), 1, "bad chunk size");
    assert_openai_error(&a[0], 400, "bad chunk size");
    // HTTP/1.0, no Host: served, and the connection then ends.
    let mut old = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer sk-plain\r\nContent-Length: {}\r\n\r\n",
        good.len()
    )
    .into_bytes();
    old.extend_from_slice(good);
    let a = raw(g.running.addr, &old).await;
    assert_eq!(a.iter().map(|a| a.status).collect::<Vec<_>>(), [200], "HTTP/1.0");
    // Three pipelined requests in one write: answered in order, the junk one with a 400.
    let mut three = post(good, "").strip_suffix(good).unwrap().to_vec();
    let keep = String::from_utf8(three.clone()).unwrap().replace("Connection: close\r\n", "");
    three = keep.clone().into_bytes();
    three.extend_from_slice(good);
    three.extend_from_slice(keep.replace(&format!("Content-Length: {}", good.len()), "Content-Length: 3").as_bytes());
    three.extend_from_slice(b"{x}");
    three.extend_from_slice(&post(good, ""));
    let a = raw(g.running.addr, &three).await;
    assert_eq!(a.iter().map(|a| a.status).collect::<Vec<_>>(), [200, 400, 200], "pipelined");
    assert_openai_error(&a[1], 400, "the pipelined junk");
    // A 64 KB cookie is within the header limit: served (and never logged).
    let cookie = format!("Cookie: session={}\r\n", "c".repeat(64 << 10));
    let a = raw(g.running.addr, &post(good, &cookie)).await;
    assert_eq!(a.iter().map(|a| a.status).collect::<Vec<_>>(), [200], "64 KB cookie");
    // A NUL inside a header value is refused by the HTTP layer, in OpenAI's shape.
    let a = raw(g.running.addr, &post(good, "X-Bad: a\0b\r\n")).await;
    assert_eq!(a.len(), 1, "NUL in a header");
    assert_eq!(a[0].status, 400, "NUL in a header: {}", a[0].head);
    let v: Value = serde_json::from_str(&a[0].body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(g.up.total(), 5, "the chunked, HTTP/1.0, two pipelined and cookie requests");
    g.running.shutdown().await;
}
