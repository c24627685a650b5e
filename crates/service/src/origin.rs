//! Browsers as attack vectors: a page on any site can send requests to a service on the
//! operator's loopback address (cross-site request forgery), and a site whose name is made to
//! resolve to 127.0.0.1 can even read the answers (DNS rebinding). The token stops both when
//! there is one; without one — the loopback default — these checks do: a request must name
//! this service in its `Host` (one `Host` only), and a request that changes something must
//! not come from another origin.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What the checks compare against.
#[derive(Clone)]
pub(crate) struct Origins {
    /// The address bound.
    addr: SocketAddr,
}

impl Origins {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// Whether `host` (a `Host` header) names this service. Only checked on loopback: a
    /// service on a routable address is reached by whatever names its operators give it,
    /// and has a token.
    fn host_allowed(&self, host: &str) -> bool {
        if !self.addr.ip().is_loopback() {
            return true;
        }
        let port = self.addr.port();
        [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            self.addr.to_string(),
        ]
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }
}

fn refuse(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// Refuses a request for another host name, and a cross-origin request that changes
/// something.
pub(crate) async fn check(
    State(origins): State<Origins>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // Two `Host`s: a proxy and this service could each believe a different one.
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "a request may have one Host header, not several" })),
        )
            .into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    if let Some(host) = &host
        && !origins.host_allowed(host)
    {
        return refuse("this service answers only to its own address (Host header)");
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && cross_origin(headers, host.as_deref()) {
        return refuse("cross-origin requests may not change anything here");
    }
    next.run(request).await
}

/// Whether a browser says the request comes from a page of another origin.
fn cross_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(origin) => {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            match (authority, host) {
                (Some(authority), Some(host)) => !authority.eq_ignore_ascii_case(host),
                _ => true,
            }
        }
    }
}
