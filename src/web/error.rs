//! Everything a request can fail with, as one [`AppError`] with a status and a message.
//!
//! Browsers (an `Accept` header naming `text/html`) get the message on a page that extends the
//! layout; other clients get JSON `{"error": "..."}`. Client mistakes keep their status and say
//! what to do next; internal errors are logged with `tracing::error!` and shown as a plain 500.

use super::AppState;
use crate::imaging::{DecodeError, EncodeError};
use crate::segment::SegmentError;
use askama::Template;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
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
        "the upload is larger than this server's limit of {limit} bytes: send a smaller file, or \
         start the server with a larger --max-upload-bytes"
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
        "this server answers only to localhost, IP addresses and names given with --allow-host;          {}",
        match host {
            Some(host) => format!(
                "this request was for {host:?}: open the page through http://localhost or                  127.0.0.1, or start the server with --allow-host {host}"
            ),
            None => "this request named no host at all".to_owned(),
        }
    )]
    UnknownHost { host: Option<String> },

    /// A page on another site tried to change the segment's image.
    #[error(
        "cross-site request refused: a page at {origin} may not change this server's image;          upload through this server's own page, or with curl"
    )]
    CrossSite { origin: String },

    /// The request took longer than `--request-timeout`.
    #[error(
        "the request took longer than {seconds} seconds and was stopped: send the upload faster \
         or a smaller file, or start the server with a larger --request-timeout"
    )]
    RequestTimeout { seconds: u64 },

    /// Something on the server's side went wrong.
    #[error("{0}")]
    Internal(String),
}

/// What clients see instead of an internal error's details.
const INTERNAL_MESSAGE: &str =
    "the server failed to handle this request; the details are in its log";

impl AppError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::MissingImageField | AppError::MalformedUpload(_) => StatusCode::BAD_REQUEST,
            AppError::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Decode(error) => match error {
                DecodeError::Empty => StatusCode::BAD_REQUEST,
                DecodeError::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                DecodeError::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                DecodeError::TooManyPixels { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            },
            AppError::Segment(error) => match error {
                SegmentError::TooManyPixels { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                SegmentError::OutOfSharedMemory { .. } => StatusCode::INSUFFICIENT_STORAGE,
                SegmentError::Busy { .. }
                | SegmentError::GateBusy { .. }
                | SegmentError::OutOfMemory { .. }
                | SegmentError::Corrupt { .. } => StatusCode::SERVICE_UNAVAILABLE,
                SegmentError::Name(_) | SegmentError::Os { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            AppError::Encode(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::NoImage { .. } | AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::UnknownHost { .. } => StatusCode::MISDIRECTED_REQUEST,
            AppError::CrossSite { .. } => StatusCode::FORBIDDEN,
            AppError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
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

    /// The error as a page that extends the layout, for browsers.
    pub fn into_page(self, segment: &str) -> Response {
        let status = self.status();
        let page = ErrorPage {
            segment,
            code: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error"),
            message: self.message(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!("cannot render the error page: {error}");
                (status, page.message).into_response()
            }
        }
    }
}

impl IntoResponse for AppError {
    /// JSON `{"error": "..."}` with the error's status: the answer for API clients.
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.message() });
        (status, Json(body)).into_response()
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
    code: u16,
    reason: &'a str,
    message: String,
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
