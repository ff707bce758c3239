//! One request's response: the `Host` checked, then the file streamed by tower-http's `ServeFile`
//! (Range, HEAD, Last-Modified / If-Modified-Since, Content-Length).

use super::files::{content_type, wanted, Roots};
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

/// Answers a request: 400 without exactly one `Host` header, 403 for a host this server does not
/// answer to, 405 for methods other than GET and HEAD, 404 for anything not served (missing,
/// outside the folders, dotfiles, folders), else the file (206 for a satisfiable range, 416 for
/// another).
pub async fn respond(State(s): State<Arc<Served>>, req: Request) -> Response {
    let mut res = answer(&s, req).await;
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A run folder's files change when it is extracted again: revalidate (Last-Modified) each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn answer(s: &Served, mut req: Request) -> Response {
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
    // A suffix longer than the file is the whole file (RFC 9110), which ServeFile would refuse;
    // an empty file has no byte to give, so it is sent whole rather than as a range of nothing.
    let whole = req.headers().get(header::RANGE).and_then(|r| r.to_str().ok()).and_then(|r| whole_suffix(r, len));
    if let Some(whole) = whole {
        req.headers_mut().insert(header::RANGE, HeaderValue::from_static(whole));
    }
    if len == 0 {
        req.headers_mut().remove(header::RANGE);
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

/// `bytes=0-` (the whole file, as RFC 9110 asks) when `range` is a suffix longer than the file
/// (`bytes=-N`, N > `len`); `None` for any other range, which is served as it is.
fn whole_suffix(range: &str, len: u64) -> Option<&'static str> {
    let n = range.trim().strip_prefix("bytes=")?.trim().strip_prefix('-')?;
    (n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u64>().map_or(!n.is_empty(), |n| n > len) && len > 0).then_some("bytes=0-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_longer_than_the_file_ask_for_all_of_it() {
        assert_eq!(whole_suffix("bytes=-5000", 1000), Some("bytes=0-"));
        assert_eq!(whole_suffix("bytes=-99999999999999999999999", 1000), Some("bytes=0-"));
        for kept in ["bytes=-1000", "bytes=-5", "bytes=10-", "bytes=-", "bytes=-5000,-1", "items=-5000"] {
            assert_eq!(whole_suffix(kept, 1000), None, "{kept}");
        }
        assert_eq!(whole_suffix("bytes=-5", 0), None, "an empty file has no range to give");
    }
}
