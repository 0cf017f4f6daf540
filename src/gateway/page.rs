//! The admin page (SPEC §13): `GET /admin/` and its script and style sheet, built into the binary
//! so that it works with no network. The page itself holds no data and needs no key: it asks for
//! the admin key, keeps it in the browser's session storage, and reads the same admin-key-guarded
//! JSON endpoints that scripts use. Every answer carries a strict Content-Security-Policy (no
//! inline script or style, nothing from another origin, no framing).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// The policy every page answer carries.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /admin/`.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /admin`: to `/admin/`, so that the page's relative links resolve.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/admin/")
}

/// `GET /admin/assets/{file}`: the script and the style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => page("text/css; charset=utf-8", STYLE),
        _ => {
            let mut r = super::error::ApiError::no_endpoint(&format!("/admin/assets/{file}")).into_response();
            r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            r
        }
    }
}
