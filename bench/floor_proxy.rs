//! The floor for `bench/load.sh`: the least a proxy on Yardmaster's stack can do. A server on a
//! single-threaded tokio runtime that forwards each POST body unchanged to the upstream through
//! one pooled client and returns the reply's bytes: no JSON, no policy, no accounting, no headers
//! of its own. What it costs is what the stack costs; what the gateway costs beyond it is
//! Yardmaster's own work. A reply of type `text/event-stream` is relayed as it arrives, chunk by
//! chunk and unchanged: the streaming floor. Loopback only.
//!
//! The server and the client can each be swapped, to split the stack's cost between its layers:
//! `--server axum` (the gateway's: axum's router on hyper) or `--server hyper` (hyper's HTTP/1
//! connection with a bare service function), and `--client reqwest` (the gateway's) or
//! `--client hyper` (hyper-util's pooled client, which reqwest wraps).
//!
//! Usage: floor-proxy LISTEN UPSTREAM_URL [--server axum|hyper] [--client reqwest|hyper]

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

// The same allocator as the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One pooled client of either kind.
enum Client {
    Reqwest(reqwest::Client, reqwest::Url),
    Hyper(Box<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>>, hyper::Uri),
}

impl Client {
    /// Forwards `body`; the upstream's reply (streamed through when it is an event stream), or
    /// 502 when the call failed.
    async fn forward(&self, body: Bytes) -> Response {
        let forwarded = match self {
            Client::Reqwest(http, url) => {
                match http.post(url.clone()).header("content-type", "application/json").body(body).send().await {
                    Ok(resp) if is_stream(resp.headers()) => {
                        let status = resp.status().as_u16();
                        Some((status, EVENTS, axum::body::Body::from_stream(resp.bytes_stream())))
                    }
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        resp.bytes().await.ok().map(|b| (status, JSON, axum::body::Body::from(b)))
                    }
                    Err(_) => None,
                }
            }
            Client::Hyper(http, uri) => {
                let req =
                    hyper::Request::post(uri.clone()).header("content-type", "application/json").body(Full::new(body));
                match req {
                    Ok(req) => match http.request(req).await {
                        Ok(resp) if is_stream(resp.headers()) => {
                            let status = resp.status().as_u16();
                            Some((status, EVENTS, axum::body::Body::new(resp.into_body())))
                        }
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            resp.into_body()
                                .collect()
                                .await
                                .ok()
                                .map(|b| (status, JSON, axum::body::Body::from(b.to_bytes())))
                        }
                        Err(_) => None,
                    },
                    Err(_) => None,
                }
            }
        };
        reply(forwarded)
    }
}

fn is_stream(headers: &axum::http::HeaderMap) -> bool {
    headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

const JSON: &str = "application/json";
const EVENTS: &str = "text/event-stream";

fn reply(forwarded: Option<(u16, &'static str, axum::body::Body)>) -> Response {
    match forwarded {
        Some((status, kind, b)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [("content-type", kind)], b).into_response()
        }
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn forward(State(client): State<Arc<Client>>, body: Bytes) -> Response {
    client.forward(body).await
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = match args.as_slice() {
        [_, listen, upstream, ..] => (listen.clone(), upstream.clone()),
        _ => fail("usage: floor-proxy LISTEN UPSTREAM_URL [--server axum|hyper] [--client reqwest|hyper]"),
    };
    let option = |name: &str, default: &'static str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default.to_string(), Clone::clone)
    };
    if !listen.starts_with("127.0.0.1:") || !upstream.starts_with("http://127.0.0.1:") {
        fail("floor-proxy only listens on and forwards to 127.0.0.1");
    }
    let client = match option("--client", "reqwest").as_str() {
        // As the gateway builds and calls it: the URL parsed once, the client pooled.
        "reqwest" => match (reqwest::Client::builder().tcp_nodelay(true).build(), upstream.parse()) {
            (Ok(http), Ok(url)) => Client::Reqwest(http, url),
            _ => fail("cannot build the HTTP client for that upstream"),
        },
        "hyper" => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let http = Box::new(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector));
            match upstream.parse() {
                Ok(uri) => Client::Hyper(http, uri),
                Err(_) => fail("the upstream is not a URL"),
            }
        }
        _ => fail("--client is reqwest or hyper"),
    };
    let client = Arc::new(client);
    let Ok(listener) = tokio::net::TcpListener::bind(listen.as_str()).await else {
        fail(&format!("cannot listen on {listen}"))
    };
    match option("--server", "axum").as_str() {
        "axum" => {
            let app = axum::Router::new().route("/v1/chat/completions", post(forward)).with_state(client);
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        }
        "hyper" => loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Ok::<_, Infallible>(client.forward(body).await)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        },
        _ => fail("--server is axum or hyper"),
    }
}
