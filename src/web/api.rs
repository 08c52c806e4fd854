//! `GET /api/segment`, the segment's state as JSON, and `GET /healthz`.

use super::{AppError, AppState, blocking};
pub use crate::json::{AttachmentJson, ImageJson, SegmentJson};
use axum::Json;
use axum::extract::State;

/// `GET /api/segment`.
pub(crate) async fn segment(State(state): State<AppState>) -> Result<Json<SegmentJson>, AppError> {
    let segment = state.segment.clone();
    let snapshot = blocking(move || Ok(segment.state()?)).await?;
    Ok(Json(SegmentJson::from(snapshot)))
}

/// `GET /healthz`: the server is up.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}
