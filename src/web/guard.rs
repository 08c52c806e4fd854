//! What a server on localhost must refuse although it reaches it, and the headers that keep its
//! page to itself.
//!
//! Every web page the user visits can make the browser send requests to `127.0.0.1`. Two
//! defences follow:
//!
//! - **DNS rebinding.** A hostile name that resolves to 127.0.0.1 would make the browser treat
//!   this server as that name's origin and read its answers. Requests are served only when their
//!   `Host` is an IP address, `localhost` (or a `*.localhost` name), or a name given with
//!   `--allow-host`; others get `421 Misdirected Request`.
//! - **Cross-site requests.** A form on another site could still post an image into the segment.
//!   Requests that change state (anything but GET, HEAD and OPTIONS) are refused with `403` when
//!   the browser says they come from elsewhere: `Sec-Fetch-Site` other than `same-origin`/`none`,
//!   or an `Origin` that is not this server's own. curl and scripts send neither and pass.
//!
//! Requests that take longer than `--request-timeout` are answered with `408` and a message.
//!
//! Every response also carries a Content-Security-Policy that allows only what the page needs
//! (its own scripts, styles, images and connections), and refuses framing.

use super::error::Reply;
use super::{AppError, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;

/// The Content-Security-Policy of every response: the page's own resources only, no framing,
/// forms only to this server.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The security headers set on every response.
pub fn security_headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// Host names a server answers to besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// Names given with `--allow-host`, compared case-insensitively, without port.
    pub fn new(names: impl IntoIterator<Item = String>) -> AllowedHosts {
        AllowedHosts(
            names
                .into_iter()
                .map(|name| name.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect(),
        )
    }

    /// Whether a request for `host` (the host part of a `Host` header, without port) is served.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.0.contains(&host)
    }
}

/// Splits the host from the port of a `Host` header value: `example.com:8080` → `example.com`,
/// `[::1]:8080` → `[::1]`.
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The request's `Host`, from the header or (HTTP/2) the URI.
fn request_authority(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Why a cross-site request is refused, if it is: the origin it came from.
///
/// `Sec-Fetch-Site` is set by the browser and cannot be forged by a page, so when it is present
/// it decides alone (a same-origin form may still say `Origin: null`, e.g. under some referrer
/// policies). Without it, an `Origin` other than this server's own is refused. Clients that
/// send neither (curl, scripts) are not browsers acting for another site, and pass.
fn cross_site_origin(method: &Method, headers: &HeaderMap, authority: &str) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
    match headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some("same-origin") | Some("none") => None,
        Some(_) => Some(origin.unwrap_or_else(|| "another site".to_owned())),
        None => {
            origin.filter(|origin| !origin.eq_ignore_ascii_case(&format!("http://{authority}")))
        }
    }
}

/// The middleware that answers `408` with a message when a request, upload included, takes
/// longer than `--request-timeout`. (The response body of `/events` is a stream sent after the
/// response is returned, so it is not cut off.)
pub(crate) async fn limit_request_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let reply = Reply::for_headers(request.headers());
    let limit = state.limits().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => reply.error(
            AppError::RequestTimeout {
                seconds: limit.as_secs(),
            },
            &state,
        ),
    }
}

/// The middleware: refuses rebinding Hosts and cross-site writes before any handler runs.
pub(crate) async fn refuse_foreign_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let reply = Reply::for_headers(request.headers());
    let Some(authority) = request_authority(&request) else {
        return reply.error(AppError::UnknownHost { host: None }, &state);
    };
    let host = host_part(&authority);
    if !state.allowed_hosts().allows(host) {
        return reply.error(
            AppError::UnknownHost {
                host: Some(host.to_owned()),
            },
            &state,
        );
    }
    if let Some(origin) = cross_site_origin(request.method(), request.headers(), &authority) {
        return reply.error(AppError::CrossSite { origin }, &state);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_ip_addresses_are_served() {
        let hosts = AllowedHosts::default();
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "app.localhost",
            "127.0.0.1",
            "10.1.2.3",
            "[::1]",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn other_names_are_refused_unless_allowed() {
        let hosts = AllowedHosts::default();
        for host in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!hosts.allows(host), "{host:?}");
        }
        let hosts = AllowedHosts::new(["My-Box.lan".to_owned()]);
        assert!(hosts.allows("my-box.lan"));
        assert!(!hosts.allows("other.lan"));
    }

    #[test]
    fn the_port_is_split_off_the_host() {
        assert_eq!(host_part("localhost:8080"), "localhost");
        assert_eq!(host_part("localhost"), "localhost");
        assert_eq!(host_part("[::1]:8080"), "[::1]");
        assert_eq!(host_part("[::1]"), "[::1]");
        assert_eq!(host_part("evil.example:x"), "evil.example:x");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn writes_from_other_origins_are_refused_and_reads_are_not() {
        let own = "127.0.0.1:8080";
        let post = Method::POST;
        assert_eq!(cross_site_origin(&post, &headers(&[]), own), None);
        assert_eq!(
            cross_site_origin(&post, &headers(&[("origin", "http://127.0.0.1:8080")]), own),
            None
        );
        assert_eq!(
            cross_site_origin(&post, &headers(&[("origin", "https://evil.example")]), own),
            Some("https://evil.example".to_owned())
        );
        // Another port is another origin.
        assert!(
            cross_site_origin(&post, &headers(&[("origin", "http://127.0.0.1:3000")]), own)
                .is_some()
        );
        assert!(cross_site_origin(&post, &headers(&[("origin", "null")]), own).is_some());
        assert!(
            cross_site_origin(&post, &headers(&[("sec-fetch-site", "cross-site")]), own).is_some()
        );
        assert!(
            cross_site_origin(&post, &headers(&[("sec-fetch-site", "same-site")]), own).is_some()
        );
        assert_eq!(
            cross_site_origin(&post, &headers(&[("sec-fetch-site", "same-origin")]), own),
            None
        );
        // The browser's word on the request's site wins over an opaque Origin.
        let own_form = headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(cross_site_origin(&post, &own_form, own), None);
        let cross = headers(&[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert_eq!(cross_site_origin(&Method::GET, &cross, own), None);
    }
}
