//! The floor for `bench/load.sh`: the least a proxy on Yardmaster's stack can do. An axum
//! server on a single-threaded tokio runtime that forwards each POST body unchanged to the
//! upstream through one pooled reqwest client and returns the reply's bytes: no JSON, no policy,
//! no accounting, no headers of its own. What it costs is what the stack costs; what the gateway
//! costs beyond it is Yardmaster's own work. Loopback only.
//!
//! Usage: floor-proxy LISTEN UPSTREAM_URL

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;

// The same allocator as the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn forward(State((http, url)): State<(reqwest::Client, String)>, body: Bytes) -> Response {
    let sent = http.post(&url).header("content-type", "application/json").body(body).send().await;
    let Ok(resp) = sent else { return StatusCode::BAD_GATEWAY.into_response() };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match resp.bytes().await {
        Ok(b) => (status, [("content-type", "application/json")], b).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = args.as_slice() else {
        eprintln!("usage: floor-proxy LISTEN UPSTREAM_URL");
        std::process::exit(2);
    };
    if !listen.starts_with("127.0.0.1:") || !upstream.starts_with("http://127.0.0.1:") {
        eprintln!("floor-proxy only listens on and forwards to 127.0.0.1");
        std::process::exit(2);
    }
    let Ok(http) = reqwest::Client::builder().tcp_nodelay(true).build() else {
        eprintln!("cannot build the HTTP client");
        std::process::exit(1);
    };
    let app = axum::Router::new().route("/v1/chat/completions", post(forward)).with_state((http, upstream.clone()));
    let Ok(listener) = tokio::net::TcpListener::bind(listen.as_str()).await else {
        eprintln!("cannot listen on {listen}");
        std::process::exit(1);
    };
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, app).await;
}
