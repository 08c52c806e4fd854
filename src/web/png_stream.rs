//! A PNG sent while it is being encoded.
//!
//! A `GET /image.png` that must encode a large image would otherwise send nothing until the
//! last band is compressed, and then spend as long again on the wire (3-11 ms for the 4-16 MB
//! PNG of a 1920x1080 to 3840x2160 photo on loopback). A [`GrowingPng`] takes the encoder's
//! pieces as they come (see `imaging::encode_png_from`) and its [`GrowingPng::body`] sends each
//! one as soon as it is there, so the send overlaps the encode.
//!
//! Nothing may be sent before the encode is certain to finish with the image it began: the
//! pixels come from the segment, where a writer can replace them, and a response that is half
//! sent cannot start again with another image. So the pieces are held back until the encoder
//! [opens](GrowingPng::open) the stream, once every pixel it needs is in memory of its own and
//! was checked to be the image's (see `web::slot_rows`). Until then a failed attempt can be
//! [discarded](GrowingPng::discard) and the encode started again, unseen by the client.
//!
//! Once opened, the stream ends with the whole file ([`GrowingPng::finish`]) or, if the encode
//! fails after all (no memory, a panic), with an error: the connection is closed before the
//! file is complete, so the client sees a failed download, never a wrong image.

use super::timing::ServerTiming;
use crate::segment::ImageId;
use axum::body::{Body, Bytes};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// The pieces of a PNG being encoded, for one response. Shared between the encoder's threads,
/// which add to it, and the response body, which sends from it.
#[derive(Debug, Default)]
pub struct GrowingPng {
    state: Mutex<Growing>,
    /// Woken when the stream opens, or ends without opening.
    opened: Notify,
}

#[derive(Debug, Default)]
struct Growing {
    pieces: Vec<Bytes>,
    /// What the response's head says, once the stream is open.
    open: Option<StreamHead>,
    end: End,
    /// The body waiting for the next piece.
    waker: Option<Waker>,
}

/// What the head of a streamed response says: the image being encoded (its ETag) and how it is
/// being made so far (its `Server-Timing`).
#[derive(Debug, Clone)]
pub struct StreamHead {
    pub image: ImageId,
    pub timing: ServerTiming,
}

/// How far the encode is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum End {
    #[default]
    Encoding,
    /// Every piece is there.
    Finished,
    /// The encode failed: the pieces are not a whole PNG.
    Failed,
}

impl GrowingPng {
    pub fn new() -> GrowingPng {
        GrowingPng::default()
    }

    fn state(&self) -> MutexGuard<'_, Growing> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the next piece of the file.
    pub fn push(&self, piece: Bytes) {
        let mut state = self.state();
        if state.end != End::Encoding {
            return;
        }
        state.pieces.push(piece);
        if state.open.is_some()
            && let Some(waker) = state.waker.take()
        {
            waker.wake();
        }
    }

    /// Lets the pieces be sent, the response saying `head`: the encode is certain to finish
    /// with the image it began.
    pub fn open(&self, head: StreamHead) {
        let mut state = self.state();
        if state.end == End::Failed || state.open.is_some() {
            return;
        }
        state.open = Some(head);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        drop(state);
        self.opened.notify_waiters();
    }

    /// Whether the stream was opened.
    pub fn is_open(&self) -> bool {
        self.state().open.is_some()
    }

    /// Forgets the pieces of an attempt that failed before the stream was opened (nobody saw
    /// them), for another attempt to start again.
    ///
    /// # Panics
    ///
    /// If the stream is open: its pieces may be on their way to the client.
    pub fn discard(&self) {
        let mut state = self.state();
        assert!(
            state.open.is_none(),
            "an open stream is never started again"
        );
        state.pieces.clear();
    }

    /// Says the file is complete (`true`) or that the encode failed (`false`).
    pub fn finish(&self, complete: bool) {
        let mut state = self.state();
        if state.end != End::Encoding {
            return;
        }
        state.end = if complete { End::Finished } else { End::Failed };
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        drop(state);
        self.opened.notify_waiters();
    }

    /// The response's head once the stream is open; `None` if the encode ended without
    /// opening it (its result then says what to send).
    pub async fn opened(&self) -> Option<StreamHead> {
        loop {
            // Made before the check, so that an `open` after the check still wakes it.
            let notified = self.opened.notified();
            {
                let state = self.state();
                if let Some(head) = &state.open {
                    return Some(head.clone());
                }
                if state.end != End::Encoding {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A response body that sends the pieces as they come: no `Content-Length` (the file's
    /// length is known only at its end), so HTTP/1.1 sends it chunked.
    pub fn body(self: &std::sync::Arc<Self>) -> Body {
        Body::new(StreamBody {
            png: std::sync::Arc::clone(self),
            next: 0,
            done: false,
        })
    }
}

/// The body of [`GrowingPng::body`].
struct StreamBody {
    png: std::sync::Arc<GrowingPng>,
    /// The piece to send next.
    next: usize,
    done: bool,
}

/// Why a stream stopped before its end.
#[derive(Debug, thiserror::Error)]
#[error("the PNG could not be finished; the connection is closed before its end")]
pub struct Unfinished;

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Unfinished;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Unfinished>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let png = std::sync::Arc::clone(&self.png);
        let mut state = png.state();
        if state.open.is_some() {
            // Empty pieces are skipped: a frame of no data would say nothing.
            while let Some(piece) = state.pieces.get(self.next).cloned() {
                self.next += 1;
                if !piece.is_empty() {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(piece))));
                }
            }
        }
        match state.end {
            End::Finished if state.open.is_some() => {
                self.done = true;
                Poll::Ready(None)
            }
            End::Encoding => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            // Failed, or finished without ever being opened (which a body is never made for).
            _ => {
                self.done = true;
                Poll::Ready(Some(Err(Unfinished)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn timing() -> ServerTiming {
        let mut timing = ServerTiming::new();
        timing.describe("png", "local");
        timing
    }

    fn head() -> StreamHead {
        StreamHead {
            image: ImageId {
                seq: 7,
                written_at_ns: 1,
            },
            timing: timing(),
        }
    }

    #[tokio::test]
    async fn nothing_is_sent_before_the_stream_opens_and_every_piece_after() {
        let png = Arc::new(GrowingPng::new());
        png.push(Bytes::from_static(b"first attempt"));
        // An attempt that failed before opening leaves nothing behind.
        png.discard();
        png.push(Bytes::from_static(b"\x89PNG"));
        let body = png.body();
        let sent = tokio::spawn(axum::body::to_bytes(body, usize::MAX));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sent.is_finished(), "sent before the stream was opened");
        let opened = tokio::spawn({
            let png = Arc::clone(&png);
            async move { png.opened().await }
        });
        png.open(head());
        assert_eq!(
            opened.await.unwrap().map(|head| head.timing.header_value()),
            Some(timing().header_value())
        );
        png.push(Bytes::new());
        png.push(Bytes::from_static(b"IDAT"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sent.is_finished(), "ended before the file was complete");
        png.push(Bytes::from_static(b"IEND"));
        png.finish(true);
        assert_eq!(&sent.await.unwrap().unwrap()[..], b"\x89PNGIDATIEND");
    }

    #[tokio::test]
    async fn an_encode_that_fails_after_opening_ends_the_body_with_an_error() {
        let png = Arc::new(GrowingPng::new());
        png.open(head());
        png.push(Bytes::from_static(b"\x89PNG"));
        let sent = tokio::spawn(axum::body::to_bytes(png.body(), usize::MAX));
        png.finish(false);
        assert!(sent.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn an_encode_that_ends_without_opening_is_not_streamed() {
        let png = Arc::new(GrowingPng::new());
        let opened = tokio::spawn({
            let png = Arc::clone(&png);
            async move { png.opened().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        png.finish(true);
        assert!(opened.await.unwrap().is_none());
        assert!(!png.is_open());
    }

    #[test]
    #[should_panic(expected = "never started again")]
    fn an_open_stream_cannot_be_discarded() {
        let png = GrowingPng::new();
        png.open(head());
        png.discard();
    }
}
