//! The streaming relay: upstream events are parsed one by one, `model` is rewritten to the
//! catalog name, and each event is flushed as soon as it is complete. A stream that breaks (an
//! upstream error, a reset, or no chunk within the idle timeout) ends with an error event and no
//! `[DONE]`. When the client goes away, the body is dropped, and with it the upstream request.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::providers::EventStream;

fn frame(data: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {data}\n\n"))
}

fn error_frame(message: &str) -> bytes::Bytes {
    let e = serde_json::json!({"error": {"message": message, "type": "api_error", "code": "stream_interrupted", "param": null}});
    frame(&e.to_string())
}

/// Relays `events` to the client as server-sent events.
pub fn relay(events: EventStream, model: String, idle: Duration) -> Response {
    let out = futures_util::stream::unfold((events, model, false), move |(mut events, model, done)| async move {
        if done {
            return None;
        }
        match tokio::time::timeout(idle, events.next()).await {
            Err(_) => Some((Ok::<_, std::io::Error>(error_frame("the upstream stalled")), (events, model, true))),
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                Some((Ok(error_frame(&format!("the upstream stream broke: {}", e.describe()))), (events, model, true)))
            }
            Ok(Some(Ok(data))) => {
                if data.trim() == "[DONE]" {
                    return Some((Ok(frame("[DONE]")), (events, model, true)));
                }
                let out = match serde_json::from_str::<serde_json::Value>(&data) {
                    Ok(mut v) => {
                        if let Some(obj) = v.as_object_mut() {
                            if obj.contains_key("model") {
                                obj.insert("model".into(), serde_json::Value::String(model.clone()));
                            }
                        }
                        frame(&v.to_string())
                    }
                    Err(_) => error_frame("the upstream sent an event that is not JSON"),
                };
                Some((Ok(out), (events, model, false)))
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(out),
    )
        .into_response()
}
