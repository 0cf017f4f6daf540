//! Connections: accepted sockets -> served HTTP/1 and HTTP/2 connections, each watched until it
//! ends. Input: the listener, the router and the limits; output: nothing, until the server stops.
//!
//! - **A cap** on open connections (`limits.max_connections`; by default half the process's file
//!   limit, so that upstream connections have descriptors too): past it a new connection is
//!   closed at once and counted (`yardmaster_connections_refused_total`).
//! - **Idle connections are closed** after the header timeout: one that never sends a request, an
//!   HTTP/2 one that sends its preface and then only PINGs or SETTINGS (on HTTP/2 only requests
//!   count, not frames), and an HTTP/1 keep-alive between requests
//!   (`yardmaster_connections_idle_closed_total`).
//! - **Accept errors back off** (5 ms doubling to 1 s) instead of spinning: out of descriptors,
//!   the loop sleeps while real clients are served.
//! - **Early answers say so**: an HTTP/1 error sent before the request's body was read to its end
//!   (401, 404, 405, 413) carries `Connection: close`, so that a client that wrote its headers and
//!   body apart knows the connection ends.
//! - **Shutdown** stops accepting, asks every connection to finish (`graceful_shutdown`), and
//!   waits for them up to the drain timeout; then it cuts the streams still running (they end
//!   with an error event and are settled), and closes what is left.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

/// The connections' counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Open now.
    pub open: AtomicU64,
    /// Closed at once because the cap was reached.
    pub refused: AtomicU64,
    /// Closed because they sent nothing for the header timeout.
    pub idle_closed: AtomicU64,
}

/// How connections are served.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Idle time after which a connection with no request in flight is closed, and the time a
    /// client has to send its request headers.
    pub idle: Duration,
    /// The most connections open at once.
    pub max: usize,
    /// How long a shutdown waits for the requests in flight.
    pub drain: Duration,
}

/// The default cap: half the process's soft file limit (upstream connections need descriptors
/// too), at most 16,384.
pub fn default_max() -> usize {
    #[cfg(unix)]
    {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        usize::try_from(soft / 2).unwrap_or(16_384).clamp(16, 16_384)
    }
    #[cfg(not(unix))]
    16_384
}

/// When a connection last began or ended a request (or opened), and how many of its requests
/// are in flight.
#[derive(Debug)]
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity { base: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// One request in flight on a connection (while its response body lives).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.touch();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which protocol a connection speaks, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// A socket that records when an HTTP/1 request's bytes arrive, and gives hyper's own rejections
/// a body.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    protocol: Option<Protocol>,
    /// Bytes still to write in place of what hyper wrote (see [`with_error_body`]).
    pending: Option<(Vec<u8>, usize)>,
}

/// hyper answers what it cannot parse itself (400, 431), with an empty body. Such a response
/// (`connection: close`, `content-length: 0`, nothing after the head; the gateway's own errors
/// always have a body) gets OpenAI's error shape instead.
fn with_error_body(head: &[u8]) -> Option<Vec<u8>> {
    const EMPTY: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";
    if !head.starts_with(b"HTTP/1.1 4")
        || !head.ends_with(b"\r\n\r\n")
        || !head.windows(EMPTY.len()).any(|w| w == EMPTY)
    {
        return None;
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let code: u16 = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    let reason = String::from_utf8_lossy(head.get(13..line_end)?).to_ascii_lowercase();
    let message = match code {
        431 => "the request's headers are too large".to_string(),
        _ => format!("the request could not be read as HTTP ({reason})"),
    };
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": "bad_http", "param": null}})
        .to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    let at = head.windows(EMPTY.len()).position(|w| w == EMPTY)?;
    out.extend_from_slice(head.get(..at)?);
    out.extend_from_slice(
        format!("\r\nconnection: close\r\ncontent-type: application/json\r\nx-should-retry: false\r\ncontent-length: {}\r\n", body.len())
            .as_bytes(),
    );
    out.extend_from_slice(head.get(at + EMPTY.len()..)?);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl Watched {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            match Pin::new(&mut self.inner).poll_write(cx, buf.get(*done..).unwrap_or(&[])) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *done += n;
                    if *done >= buf.len() {
                        self.pending = None;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            if self.protocol.is_none() {
                self.protocol = Some(if read.starts_with(b"PRI ") { Protocol::Http2 } else { Protocol::Http1 });
            }
            // On HTTP/1 every byte read belongs to a request (one arriving as the idle check
            // runs is not cut off). On HTTP/2 bytes are not activity: a peer that only sends
            // PINGs or SETTINGS is as idle as one that sends nothing.
            if self.protocol == Some(Protocol::Http1) {
                self.activity.touch();
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        if let Some(out) = with_error_body(b) {
            self.pending = Some((out, 0));
            self.activity.touch();
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(b.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, b)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        // A rejection's head is short: look at it whole when it is one.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total < 512 && bufs.first().is_some_and(|b| b.starts_with(b"HTTP/1.1 4")) {
            let whole: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if with_error_body(&whole).is_some() {
                return self.poll_write(cx, &whole);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// A request body that notes when it has been read to its end.
struct Tracked<B> {
    inner: B,
    done: Arc<AtomicBool>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`InFlight`] until it ends.
struct Held {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one request: counted in flight, its body tracked, `Connection: close` on an HTTP/1
/// error answered before the body was read to its end.
async fn handle(
    router: Router,
    activity: Arc<Activity>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let in_flight = InFlight::begin(&activity);
    let http1 = req.version() <= Version::HTTP_11;
    let sized = |h: &header::HeaderName| req.headers().get(h).is_some();
    let has_body = sized(&header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let read = Arc::new(AtomicBool::new(false));
    let done = read.clone();
    let req = req.map(|b| Body::new(Tracked { inner: b, done }));
    let mut resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if http1 && has_body && !read.load(Ordering::Relaxed) && resp.status().as_u16() >= 400 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp.map(|b| Body::new(Held { inner: b, _in_flight: in_flight })))
}

/// Serves one connection until it ends, is idle for too long, or the server stops (then it is
/// asked to finish gracefully).
async fn serve(
    stream: TcpStream,
    router: Router,
    settings: Settings,
    stats: Arc<ConnStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone(), protocol: None, pending: None });
    let svc = {
        let activity = activity.clone();
        tower::service_fn(move |req| handle(router.clone(), activity.clone(), req))
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timeout is the backstop for headers that trickle in; it is longer than
    // ours so that a connection that sends nothing is closed (and counted) by the watch below.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.idle.saturating_mul(2));
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((settings.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tick.tick() => {
                if activity.in_flight.load(Ordering::Acquire) == 0 && activity.idle_for() >= settings.idle {
                    stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Accepts and serves connections until `shutdown` resolves, then drains them (see the module
/// header); `cut` is raised when the drain times out, for the streams still running.
pub async fn run(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    stats: Arc<ConnStats>,
    cut: tokio::sync::watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(5);
                    while tasks.try_join_next().is_some() {}
                    if stats.open.load(Ordering::Acquire) >= settings.max as u64 {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                    stats.open.fetch_add(1, Ordering::AcqRel);
                    let (router, stats, stop) = (router.clone(), stats.clone(), stop_rx.clone());
                    tasks.spawn(async move {
                        let _open = Open(stats.clone());
                        serve(stream, router, settings, stats, stop).await;
                    });
                }
                Err(e) => {
                    // Out of descriptors (or another accept error): wait, do not spin.
                    tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all_ended = |tasks: &mut tokio::task::JoinSet<()>| {
        let mut tasks = std::mem::take(tasks);
        async move { while tasks.join_next().await.is_some() {} }
    };
    let mut drained = Box::pin(all_ended(&mut tasks));
    if tokio::time::timeout(settings.drain, &mut drained).await.is_err() {
        tracing::warn!("drain timed out; ending the streams still running");
        let _ = cut.send(true);
        if tokio::time::timeout(Duration::from_secs(2), &mut drained).await.is_err() {
            tracing::warn!("closing the remaining connections");
        }
    }
}

/// Counts a connection as open while it lives.
struct Open(Arc<ConnStats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_rejections_get_a_body_and_others_are_left_alone() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 07:58:27 GMT\r\n\r\n";
        let out = String::from_utf8(with_error_body(head).unwrap()).unwrap();
        let (h, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(h.starts_with("HTTP/1.1 431 ") && h.contains("content-type: application/json"), "{h}");
        assert!(h.contains(&format!("content-length: {}", body.len())) && h.contains("x-should-retry: false"), "{h}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["message"], "the request's headers are too large");
        // The gateway's own answers have bodies; a 200 is never touched.
        assert!(with_error_body(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 90\r\n\r\n"
        )
        .is_none());
        assert!(with_error_body(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
