//! One request's response: the `Host` checked, then the file streamed by tower-http's `ServeFile`
//! (Range, HEAD, Last-Modified / If-Modified-Since, Content-Length).

use super::files::{content_type, wanted, whole_suffix, Roots};
use super::hosts::Hosts;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tower_http::services::ServeFile;

/// What every request is answered from.
pub struct Served {
    pub roots: Roots,
    pub hosts: Hosts,
}

/// Answers a request: 400 without one `Host` header, 403 for a host this server does not answer to, 405 for
/// methods other than GET and HEAD, 404 for anything not served (missing, outside the folders,
/// dotfiles, folders), else the file (206 for a satisfiable range, 416 for another).
pub async fn respond(State(s): State<Arc<Served>>, req: Request) -> Response {
    let mut res = answer(&s, req).await;
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A run folder's files change when it is extracted again: revalidate (Last-Modified) each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn answer(s: &Served, req: Request) -> Response {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return text(StatusCode::BAD_REQUEST, "a request needs one Host header\n");
    };
    // An absolute-form request (`GET http://name/ HTTP/1.1`) names its host in the URI as well.
    let named = [Some(host.to_str().unwrap_or("")), req.uri().authority().map(|a| a.as_str())];
    if let Some(bad) = named.into_iter().flatten().find(|h| !s.hosts.allows(h)) {
        let shown: String = bad.chars().take(100).collect();
        let msg = format!(
            "carve serve does not answer to the host `{shown}`: use localhost or an IP address, or start it with --allow-host NAME\n"
        );
        return text(StatusCode::FORBIDDEN, &msg);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let Some(w) = wanted(req.uri().path()) else { return not_found() };
    let Some((file, len)) = s.roots.resolve(&w).await else { return not_found() };
    let mut req = req;
    let whole = req.headers().get(header::RANGE).and_then(|r| r.to_str().ok()).and_then(|r| whole_suffix(r, len));
    if let Some(whole) = whole {
        req.headers_mut().insert(header::RANGE, HeaderValue::from_static(whole));
    }
    let mime = content_type(w.names.last().map_or("", |n| n.as_str()));
    match ServeFile::new(&file).try_call(req).await {
        Ok(res) => {
            let mut res = res.map(Body::new);
            if res.status().is_success() {
                res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
            }
            res
        }
        // The file went away or became unreadable since it was resolved.
        Err(_) => not_found(),
    }
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.to_string()).into_response()
}
