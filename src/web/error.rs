//! Everything a request can fail with, as one [`AppError`] with a status and a message.
//!
//! Browsers (an `Accept` header naming `text/html`) get the message on a page that extends the
//! layout; other clients get JSON `{"error": "..."}`. Client mistakes keep their status and say
//! what to do next; internal errors are logged with `tracing::error!` and shown as a plain 500.

use super::AppState;
use super::units::human_bytes;
use crate::imaging::{DecodeError, EncodeError};
use crate::segment::SegmentError;
use askama::Template;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use std::any::Any;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `POST /image` got a body that is neither a form nor an image.
    #[error(
        "POST /image takes a multipart/form-data form with the file in the field \"image\", or \
         the image itself with Content-Type image/* or application/octet-stream; this request \
         had {}",
        describe_content_type(content_type)
    )]
    UnsupportedContentType { content_type: Option<String> },

    /// The form had no field named `image`.
    #[error(
        "the form has no field named \"image\": send the file in a multipart field called image \
         (curl -F image=@photo.jpg)"
    )]
    MissingImageField,

    /// The request body could not be read as a form.
    #[error("the upload could not be read: {0}")]
    MalformedUpload(String),

    /// The request body is larger than `--max-upload-bytes`.
    #[error(
        "the upload is larger than this server's limit of {}: send a smaller file, or start the \
         server with a larger --max-upload-bytes",
        human_bytes(*limit as u64)
    )]
    UploadTooLarge { limit: usize },

    /// The upload is not an image this server can use.
    #[error(transparent)]
    Decode(#[from] DecodeError),

    /// The segment refused or failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),

    /// The image could not be encoded as PNG.
    #[error(transparent)]
    Encode(#[from] EncodeError),

    /// `GET /image.png?width=` named no usable width.
    #[error(
        "the width must be a whole number of pixels from 1 to {max}, not {given:?}: ask for \
         /image.png?width=1280, say, or for /image.png for the full image"
    )]
    BadWidth { given: String, max: u32 },

    /// The segment holds no image yet.
    #[error("no image in shared memory segment \"{segment}\" yet: load one first")]
    NoImage { segment: String },

    /// No route matches.
    #[error(
        "there is nothing at {method} {path}: the page is at /, the image at /image.png, the \
         segment's state at /api/segment"
    )]
    NotFound { method: Method, path: String },

    /// The request names a host this server does not answer to (DNS rebinding protection).
    #[error(
        "this server answers only to localhost, IP addresses and names given with --allow-host; \
         {}",
        match host {
            Some(host) => format!(
                "this request was for {host:?}: open the page through http://localhost or \
                 http://127.0.0.1, or start the server with --allow-host {host}"
            ),
            None => "this request named no host at all".to_owned(),
        }
    )]
    UnknownHost { host: Option<String> },

    /// A page on another site tried to change the segment's image.
    #[error(
        "cross-site request refused: a page at {origin} may not change this server's image; \
         upload through this server's own page, or with curl"
    )]
    CrossSite { origin: String },

    /// The path exists, but not for this method.
    #[error(
        "{method} {path} is not something this server does: {path} takes only {allowed} requests"
    )]
    MethodNotAllowed {
        method: Method,
        path: String,
        /// The methods the path takes, e.g. "POST" or "GET and HEAD".
        allowed: String,
    },

    /// The request took longer than `--request-timeout`.
    #[error(
        "the request took longer than {seconds} seconds and was stopped: send the upload faster \
         or a smaller file, or start the server with a larger --request-timeout"
    )]
    RequestTimeout { seconds: u64 },

    /// An HTTP/1.1 request without a Host header, with more than one, or with one that names
    /// no host (RFC 9112, section 3.2).
    #[error(
        "the request's Host header is missing or wrong ({problem}): send exactly one Host \
         header naming this server, as browsers and curl do by themselves"
    )]
    BadHost { problem: String },

    /// A header line longer than `--max-header-bytes`.
    #[error(
        "the request header {name} is {bytes} bytes long, more than this server's limit of \
         {limit} bytes per header line: send a shorter one (cookies for localhost count too), \
         or start the server with a larger --max-header-bytes"
    )]
    HeaderTooLarge {
        name: String,
        bytes: usize,
        limit: usize,
    },

    /// A request target longer than `--max-header-bytes`.
    #[error(
        "the request's address is {bytes} bytes long, more than this server's limit of {limit} \
         bytes: use a shorter one, or start the server with a larger --max-header-bytes"
    )]
    UriTooLong { bytes: usize, limit: usize },

    /// The memory budget has no room for this request's work right now.
    #[error(
        "the server is busy: {work} needs {} MiB of memory and the other requests hold the \
         rest of its budget of {} MiB (--max-memory); try again in a few seconds",
        mebibytes(*needed),
        mebibytes(*budget)
    )]
    MemoryBusy {
        work: &'static str,
        needed: u64,
        budget: u64,
    },

    /// This request's work needs more memory than the whole budget.
    #[error(
        "{work} needs {} MiB of memory, more than this server may use at once ({} MiB, \
         --max-memory): send a smaller image, or start the server with a larger --max-memory",
        mebibytes(*needed),
        mebibytes(*budget)
    )]
    OverMemoryBudget {
        work: &'static str,
        needed: u64,
        budget: u64,
    },

    /// An allocation the server asked the system for failed.
    #[error(
        "the server could not get the {} MiB of memory that {work} needs: try again later, or \
         send a smaller image",
        mebibytes(*bytes)
    )]
    OutOfMemory { work: &'static str, bytes: u64 },

    /// Every connection the server may hold is handling a request.
    #[error(
        "the server is handling as many connections as it may ({limit}, --max-connections): \
         try again in a moment"
    )]
    TooManyConnections { limit: usize },

    /// Something on the server's side went wrong.
    #[error("{0}")]
    Internal(String),
}

/// Bytes in MiB, rounded up, for messages.
fn mebibytes(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

/// Whether an OS error means the process or the system ran out of file descriptors.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// What clients see instead of an internal error's details.
const INTERNAL_MESSAGE: &str =
    "the server failed to handle this request; the details are in its log";

impl AppError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::MissingImageField
            | AppError::MalformedUpload(_)
            | AppError::BadWidth { .. } => StatusCode::BAD_REQUEST,
            AppError::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Decode(error) => match error {
                DecodeError::Empty => StatusCode::BAD_REQUEST,
                DecodeError::NotAnImage
                | DecodeError::UnreadableFormat { .. }
                | DecodeError::Unsupported { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                DecodeError::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                DecodeError::TooManyPixels { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                DecodeError::OutOfMemory { .. } => StatusCode::SERVICE_UNAVAILABLE,
            },
            AppError::Segment(error) => match error {
                SegmentError::TooManyPixels { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                SegmentError::OutOfSharedMemory { .. } => StatusCode::INSUFFICIENT_STORAGE,
                SegmentError::Busy { .. }
                | SegmentError::GateBusy { .. }
                | SegmentError::OutOfMemory { .. }
                | SegmentError::CannotMap { .. }
                | SegmentError::Corrupt { .. } => StatusCode::SERVICE_UNAVAILABLE,
                SegmentError::Os { source, .. } if out_of_descriptors(source) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                SegmentError::Name(_)
                | SegmentError::Os { .. }
                | SegmentError::IncompleteImage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            AppError::Encode(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::NoImage { .. } | AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::UnknownHost { .. } => StatusCode::MISDIRECTED_REQUEST,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::CrossSite { .. } => StatusCode::FORBIDDEN,
            AppError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            AppError::BadHost { .. } => StatusCode::BAD_REQUEST,
            AppError::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AppError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            AppError::MemoryBusy { .. }
            | AppError::OutOfMemory { .. }
            | AppError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::OverMemoryBudget { .. } => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    /// For an overload that passes, the seconds after which the client may try again
    /// (`Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::MemoryBusy { .. } | AppError::OutOfMemory { .. } => {
                Some(super::budget::RETRY_AFTER_SECS)
            }
            AppError::Decode(DecodeError::OutOfMemory { .. }) => {
                Some(super::budget::RETRY_AFTER_SECS)
            }
            AppError::TooManyConnections { .. } => Some(1),
            AppError::Segment(SegmentError::Busy { .. }) => Some(1),
            AppError::Segment(SegmentError::Os { source, .. }) if out_of_descriptors(source) => {
                Some(1)
            }
            _ => None,
        }
    }

    /// Adds `Retry-After` to `response` if this error passes.
    fn with_retry_after(&self, mut response: Response) -> Response {
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }

    /// The message shown to the client. Internal errors are logged here and hidden.
    pub fn message(&self) -> String {
        if self.status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            INTERNAL_MESSAGE.to_owned()
        } else {
            self.to_string()
        }
    }

    /// A few words for the page's title: what kind of thing went wrong.
    pub fn title(&self) -> &'static str {
        match self {
            AppError::UnsupportedContentType { .. }
            | AppError::MissingImageField
            | AppError::MalformedUpload(_)
            | AppError::UploadTooLarge { .. }
            | AppError::Decode(_) => "The image was not loaded",
            AppError::NoImage { .. } => "No image yet",
            AppError::NotFound { .. } => "Nothing here",
            AppError::MethodNotAllowed { .. } => "Not something this server does",
            AppError::UnknownHost { .. } => "Refused: unknown host name",
            AppError::CrossSite { .. } => "Refused: a request from another site",
            AppError::RequestTimeout { .. } => "The request took too long",
            _ if self.status() == StatusCode::INTERNAL_SERVER_ERROR => "The server failed",
            _ => "That did not work",
        }
    }

    /// The error as a page that extends the layout, for browsers: its status line is the message
    /// as a sentence.
    pub fn into_page(self, segment: &str) -> Response {
        self.page(segment, None)
    }

    /// The error of an upload as a page for browsers: "photo.heic was not loaded: ...", naming
    /// the file when the browser gave its name.
    pub fn into_upload_page(self, segment: &str, file: Option<&str>) -> Response {
        let headline = match file {
            Some(file) => format!("{file} was not loaded"),
            None => "The image was not loaded".to_owned(),
        };
        self.page(segment, Some(headline))
    }

    fn page(self, segment: &str, headline: Option<String>) -> Response {
        let status = self.status();
        let message = self.message();
        let page = ErrorPage {
            segment,
            code: status.as_u16(),
            title: headline.clone().unwrap_or_else(|| self.title().to_owned()),
            message: if headline.is_some() {
                message
            } else {
                sentence(&message)
            },
            headline,
        };
        let response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!("cannot render the error page: {error}");
                (status, page.message).into_response()
            }
        };
        self.with_retry_after(response)
    }
}

impl IntoResponse for AppError {
    /// JSON `{"error": "..."}` with the error's status: the answer for API clients.
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.message() });
        self.with_retry_after((status, Json(body)).into_response())
    }
}

impl From<askama::Error> for AppError {
    fn from(error: askama::Error) -> Self {
        AppError::Internal(format!("cannot render a page: {error}"))
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    segment: &'a str,
    /// The HTTP status, in small print for whoever reports the problem: not in the status line.
    code: u16,
    /// The page's title, e.g. "photo.txt was not loaded" or "Nothing here".
    title: String,
    /// What failed, when the message alone does not say: "photo.txt was not loaded".
    headline: Option<String>,
    message: String,
}

/// `message` with a capital first letter, to stand alone as a sentence.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Which kind of answer a client wants, from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A browser: pages and redirects.
    Page,
    /// A program: JSON.
    Json,
}

impl Reply {
    /// [`Reply::Page`] when `Accept` names `text/html`, else [`Reply::Json`].
    pub fn for_headers(headers: &HeaderMap) -> Reply {
        let wants_html = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|accept| accept.to_ascii_lowercase().contains("text/html"));
        if wants_html { Reply::Page } else { Reply::Json }
    }

    /// `error` the way this client wants it.
    pub fn error(self, error: AppError, state: &AppState) -> Response {
        match self {
            Reply::Page => error.into_page(&state.segment_name()),
            Reply::Json => error.into_response(),
        }
    }

    /// The failure of an upload of `file` the way this client wants it: a page naming the file,
    /// or JSON.
    pub fn upload_error(self, error: AppError, state: &AppState, file: Option<&str>) -> Response {
        match self {
            Reply::Page => error.into_upload_page(&state.segment_name(), file),
            Reply::Json => error.into_response(),
        }
    }
}

/// The middleware that gives a `405 Method Not Allowed` a message: the router answers it with
/// an `Allow` header and no body; this says in words which methods the path takes.
pub(crate) async fn explain_wrong_method(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let reply = Reply::for_headers(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let methods: Vec<&str> = allow
        .as_ref()
        .and_then(|allow| allow.to_str().ok())
        .map(|allow| {
            allow
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let allowed = match methods.as_slice() {
        [] => "no method".to_owned(),
        [only] => (*only).to_owned(),
        [first @ .., last] => format!("{} and {last}", first.join(", ")),
    };
    let error = AppError::MethodNotAllowed {
        method,
        path,
        allowed,
    };
    let mut answer = reply.error(error, &state);
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

/// The answer for paths no route matches.
pub(crate) async fn not_found(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let error = AppError::NotFound {
        method,
        path: uri.path().to_owned(),
    };
    Reply::for_headers(&headers).error(error, &state)
}

/// Turns a panic in a handler into a logged 500, so no request can take the server down.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    };
    AppError::Internal(format!("a request handler panicked: {detail}")).into_response()
}

/// "Content-Type \"text/plain\"" or "no Content-Type", for messages.
fn describe_content_type(content_type: &Option<String>) -> String {
    match content_type {
        Some(content_type) => format!("Content-Type {content_type:?}"),
        None => "no Content-Type".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_file_descriptors_is_a_503_to_retry_never_a_500() {
        let error = AppError::Segment(SegmentError::Os {
            op: "shm_open",
            os_name: "/shmimage.demo.00000002".to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        });
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");

        let other = AppError::Segment(SegmentError::Os {
            op: "mmap",
            os_name: "/shmimage.demo".to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(other.retry_after().is_none());
    }

    #[test]
    fn an_exhausted_memory_budget_says_when_to_retry_and_a_too_large_decode_does_not() {
        let busy = AppError::MemoryBusy {
            work: "decoding the upload",
            needed: 800 << 20,
            budget: 1500 << 20,
        };
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.to_string().contains("800 MiB"), "{busy}");
        let response = busy.into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));

        let over = AppError::OverMemoryBudget {
            work: "decoding the upload",
            needed: 3 << 30,
            budget: 2 << 30,
        };
        assert_eq!(over.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(over.to_string().contains("--max-memory"), "{over}");
        assert!(over.retry_after().is_none());
    }
}
