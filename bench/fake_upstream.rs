//! A fast fake OpenAI-compatible upstream for load benchmarks (`bench/load.sh`): answers
//! `POST /v1/chat/completions` at once with a fixed completion, or, for `"stream": true`, with
//! `max_tokens` chunks (64 when the request has none), `--gap-ms` apart (20 by default; 0 sends
//! them as fast as the connection takes them). `POST /v1/traces` is a trace sink: it takes an
//! OTLP/HTTP export and answers with an empty (protobuf) success, so the same binary stands in
//! for a local collector (`bench/traces.sh`). Loopback only.
//!
//! Usage: `fake-upstream 127.0.0.1:18081 [--gap-ms N]`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark tool fails loudly")]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

const COMPLETION: &str = r#"{"id":"bench","object":"chat.completion","created":1,"model":"fast","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

/// The number after `"max_tokens":` in a compact JSON body.
fn max_tokens(body: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"\"max_tokens\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> =
        body[at..].iter().copied().skip_while(|b| *b == b' ').take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

async fn handle(req: Request<Incoming>, gap: Duration) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    if req.uri().path() == "/v1/traces" {
        let _ = req.into_body().collect().await;
        let b = Full::new(Bytes::new()).boxed();
        return Ok(Response::builder().header("content-type", "application/x-protobuf").body(b).unwrap());
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let stream = body.windows(13).any(|w| w == b"\"stream\":true");
    if !stream {
        let b = Full::new(Bytes::from_static(COMPLETION.as_bytes())).boxed();
        return Ok(Response::builder().header("content-type", "application/json").body(b).unwrap());
    }
    // Like OpenAI, a usage chunk before [DONE] when `stream_options.include_usage` is set.
    let usage = body.windows(20).any(|w| w == b"\"include_usage\":true");
    let count = max_tokens(&body).unwrap_or(64);
    let chunks = futures_util::stream::unfold(0u32, move |i| async move {
        if i > count {
            return None;
        }
        if i > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let data = if i == count && usage {
            format!("data: {{\"id\":\"bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fast\",\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{count},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", count + 5)
        } else if i == count {
            "data: [DONE]\n\n".to_string()
        } else {
            format!("data: {{\"id\":\"bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fast\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}},\"finish_reason\":null}}]}}\n\n")
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(data))), i + 1))
    });
    let b = BodyExt::boxed(StreamBody::new(chunks));
    Ok(Response::builder().header("content-type", "text/event-stream").body(b).unwrap())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:18081".into());
    let gap = args
        .iter()
        .position(|a| a == "--gap-ms")
        .and_then(|i| args.get(i + 1))
        .map_or(20, |g| g.parse().expect("--gap-ms N"));
    let gap = Duration::from_millis(gap);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(move |r| handle(r, gap)))
                .await;
        });
    }
}
