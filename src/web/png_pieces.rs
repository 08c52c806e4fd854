//! A PNG file held in the pieces it was made in, and the response body that sends them as they
//! are.
//!
//! The encoder hands a large image's PNG over a band of rows at a time (see
//! `imaging::encode_png_from`). Joining the bands would copy the whole file (16 MB for a
//! 3840x2160 photo) into memory of its own before the first byte is sent. [`PngPieces`] keeps
//! the pieces instead: the cache holds it, the segment's PNG area takes it piece by piece, and
//! [`PngPieces::body`] sends it with its `Content-Length`, each piece as one frame. (A PNG
//! encoded from a whole copy, after a write raced the read, or copied out of the PNG area, is
//! one piece.)

use axum::body::{Body, Bytes};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A PNG file as pieces that, one after the other, are its bytes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PngPieces {
    pieces: Arc<[Bytes]>,
    len: u64,
}

impl PngPieces {
    /// The file whose bytes are `pieces`, in order.
    pub fn from_pieces(pieces: Vec<Vec<u8>>) -> PngPieces {
        let len = pieces.iter().map(|piece| piece.len() as u64).sum();
        PngPieces {
            pieces: pieces.into_iter().map(Bytes::from).collect(),
            len,
        }
    }

    /// The file whose bytes are `pieces`, in order.
    pub fn from_bytes(pieces: Vec<Bytes>) -> PngPieces {
        let len = pieces.iter().map(|piece| piece.len() as u64).sum();
        PngPieces {
            pieces: pieces.into(),
            len,
        }
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> Vec<&[u8]> {
        self.pieces.iter().map(|piece| &piece[..]).collect()
    }

    /// The file's bytes, joined: a copy.
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces.concat()
    }

    /// A response body of the file: its length known in advance (so the response says
    /// `Content-Length`), each piece sent as it is.
    pub fn body(&self) -> Body {
        Body::new(PiecesBody {
            pieces: Arc::clone(&self.pieces),
            next: 0,
            remaining: self.len,
        })
    }
}

impl From<Vec<u8>> for PngPieces {
    fn from(file: Vec<u8>) -> PngPieces {
        PngPieces::from_pieces(vec![file])
    }
}

impl PartialEq<[u8]> for PngPieces {
    fn eq(&self, other: &[u8]) -> bool {
        self.len == other.len() as u64 && {
            let mut rest = other;
            self.pieces.iter().all(|piece| {
                let (head, tail) = rest.split_at(piece.len());
                rest = tail;
                head == &piece[..]
            })
        }
    }
}

/// The body of [`PngPieces::body`].
struct PiecesBody {
    pieces: Arc<[Bytes]>,
    /// The piece to send next.
    next: usize,
    /// The bytes not sent yet.
    remaining: u64,
}

impl http_body::Body for PiecesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        // Empty pieces are skipped: a frame of no data would say nothing.
        while let Some(piece) = self.pieces.get(self.next).cloned() {
            self.next += 1;
            if !piece.is_empty() {
                self.remaining -= piece.len() as u64;
                return Poll::Ready(Some(Ok(http_body::Frame::data(piece))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> PngPieces {
        PngPieces::from_pieces(vec![b"\x89PNG".to_vec(), Vec::new(), b"IDAT..".to_vec()])
    }

    #[test]
    fn the_pieces_are_the_file() {
        let file = file();
        assert_eq!(file.len(), 10);
        assert_eq!(file.to_vec(), b"\x89PNGIDAT..");
        assert!(file == *b"\x89PNGIDAT..".as_slice());
        assert!(file != *b"\x89PNGIDAT.!".as_slice());
        assert!(file != *b"\x89PNGIDAT.".as_slice());
        assert!(PngPieces::from(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn the_body_sends_every_piece_with_the_files_length() {
        let body = file().body();
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(10));
        let sent = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(&sent[..], b"\x89PNGIDAT..");
    }
}
