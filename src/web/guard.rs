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
//! Before either, a request must be well-formed HTTP/1.1 as RFC 9112 asks: exactly one `Host`
//! header that names a host (else `400`; an HTTP/1.0 request may have none), and the authority
//! of an absolute-form request (`GET http://host/path`) counts instead of `Host`. No header line
//! and no request target may be longer than `--max-header-bytes` (`431`, `414`).
//!
//! Requests that take longer than `--request-timeout` are answered with `408` and a message.
//!
//! Every response also carries a Content-Security-Policy that allows only what the page needs
//! (its own scripts, styles, images and connections), and refuses framing.

use super::error::Reply;
use super::{AppError, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;

/// The Content-Security-Policy of every response: the page's own resources only, no framing,
/// forms only to this server.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The security headers set on every response.
pub fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        // Only this server's own pages may embed its image or read its API, even as a no-cors
        // request from another site.
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
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

/// The authority the request is for: that of an absolute-form target if it has one (RFC 9112,
/// section 3.2.2: it overrides `Host`), else its one `Host` header. `Ok(None)` for an HTTP/1.0
/// request without either.
fn request_authority(request: &Request) -> Result<Option<String>, AppError> {
    let bad = |problem: String| AppError::BadHost { problem };
    let hosts: Vec<&HeaderValue> = request.headers().get_all(header::HOST).iter().collect();
    let host = match hosts.as_slice() {
        [] => None,
        [host] => Some(
            host.to_str()
                .ok()
                .filter(|text| !text.contains('@'))
                .and_then(|text| text.parse::<axum::http::uri::Authority>().ok())
                .ok_or_else(|| bad(format!("{:?} is not a host name", host)))?,
        ),
        more => return Err(bad(format!("there are {} Host headers", more.len()))),
    };
    if let Some(authority) = request.uri().authority() {
        return Ok(Some(authority.as_str().to_owned()));
    }
    match host {
        Some(host) => Ok(Some(host.as_str().to_owned())),
        None if request.version() <= Version::HTTP_10 => Ok(None),
        None => Err(bad("there is none".to_owned())),
    }
}

/// Refuses a request target or header line longer than `limit` bytes.
fn check_line_lengths(request: &Request, limit: usize) -> Result<(), AppError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len())
        + request.uri().authority().map_or(0, |a| a.as_str().len());
    if target > limit {
        return Err(AppError::UriTooLong {
            bytes: target,
            limit,
        });
    }
    for (name, value) in request.headers() {
        // "Name: value\r\n"
        let line = name.as_str().len() + value.len() + 4;
        if line > limit {
            return Err(AppError::HeaderTooLarge {
                name: name.as_str().to_owned(),
                bytes: line,
                limit,
            });
        }
    }
    Ok(())
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
    if let Err(error) = check_line_lengths(&request, state.limits().max_header_bytes) {
        return reply.error(error, &state);
    }
    let authority = match request_authority(&request) {
        Ok(Some(authority)) => authority,
        // HTTP/1.0 without Host: nothing names another host, and only a page's own origin
        // could pass the cross-site check below.
        Ok(None) => String::new(),
        Err(error) => return reply.error(error, &state),
    };
    let host = host_part(&authority);
    if !authority.is_empty() && !state.allowed_hosts().allows(host) {
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
