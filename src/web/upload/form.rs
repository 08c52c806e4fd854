//! `multipart/form-data` (RFC 7578) read as it arrives, in place: the image field is found in
//! the [`BodyBuffer`] the body is copied into, and handed over as a view of it.
//!
//! A general multipart parser (axum's `Multipart`, that is multer) copies every piece of the
//! body into its own buffer and hands out the fields in pieces, which the upload then copies
//! once more into one slice for the decoder: three passes over a 3 MB body. This reader makes
//! one. It knows what `POST /image` wants, the one field named `image`, and keeps nothing else:
//!
//! - before the first boundary line and in every other field, the bytes that cannot start a
//!   boundary any more are discarded as soon as they arrive, so other fields cost no memory;
//! - a part's head (at most [`MAX_PART_HEAD_BYTES`], at most [`MAX_PART_HEADERS`] lines) is
//!   parsed with `httparse`, its `Content-Disposition` for `name` and `filename`;
//! - the first bytes of the image field are checked as soon as they arrive: a file that is no
//!   image this server reads is refused (`415`) without waiting for the rest;
//! - once the image field's closing boundary has arrived, the image is complete, and the rest
//!   of the body is not read.
//!
//! The boundary is searched for with `memchr`'s `memmem`, over each byte once (plus the length
//! of the boundary at the seams between pieces).

use super::body::BodyBuffer;
use crate::imaging::{self, Sniffed};
use crate::web::AppError;
use crate::web::budget::Reservation;
use axum::body::Bytes;
use memchr::memmem;
use std::ops::Range;

/// The longest boundary accepted, in bytes (RFC 2046 allows 70; browsers use about 40).
pub(super) const MAX_BOUNDARY_BYTES: usize = 200;

/// The most bytes one part's head (its header lines and the blank line after them) may take.
pub(super) const MAX_PART_HEAD_BYTES: usize = 16 * 1024;

/// The most header lines one part may have.
pub(super) const MAX_PART_HEADERS: usize = 32;

/// The most spaces and tabs allowed after a boundary, before its line break (RFC 2046's
/// "transport padding").
const MAX_PADDING: usize = 256;

/// The field of a form that was looked for, found complete.
#[derive(Debug)]
pub(super) struct FormField {
    /// Its bytes: a view of the body buffer.
    pub bytes: Bytes,
    /// The memory the body buffer holds.
    pub memory: Reservation,
}

/// A form being read, piece by piece, for the field named [`FormReader::new`]'s `field`.
#[derive(Debug)]
pub(super) struct FormReader {
    field: &'static str,
    /// `\r\n--` and the boundary: what ends every part.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    body: BodyBuffer,
    state: State,
}

/// Where the reader is in the form. Offsets are into the body buffer's kept bytes.
#[derive(Debug)]
enum State {
    /// Before the first boundary line. `at_start`: nothing of the body has been discarded and
    /// it may still begin with the boundary line itself.
    Preamble { at_start: bool },
    /// Right after `CRLF--boundary` (or `--boundary` at the start of the body) in the preamble,
    /// at `at`: the form ends (`--`), a part begins (padding and a line break), or the match
    /// was data of the preamble, whose search then goes on from `resume`.
    AfterBoundary { at: usize, resume: usize },
    /// A part's head begins at `at`; no blank line begins before `searched`.
    PartHead { at: usize, searched: usize },
    /// A part's data begins at `start`; no delimiter begins before `searched`.
    PartData {
        start: usize,
        searched: usize,
        wanted: Option<WantedPart>,
    },
    /// The field's data, complete, in `range`.
    Found {
        range: Range<usize>,
        file_name: Option<String>,
    },
}

/// What is known of the part being read when it is the wanted field.
#[derive(Debug)]
struct WantedPart {
    file_name: Option<String>,
    /// Whether its first bytes have been recognised as an image.
    recognised: bool,
}

impl FormReader {
    /// A reader for a form with `content_type` (`multipart/form-data; boundary=...`), looking
    /// for `field`, keeping its bytes in `body`.
    pub(super) fn new(
        content_type: &str,
        field: &'static str,
        body: BodyBuffer,
    ) -> Result<FormReader, AppError> {
        let boundary = multer::parse_boundary(content_type).map_err(|error| {
            AppError::MalformedUpload(format!(
                "its Content-Type has no usable boundary ({error}): send the form as \
                 multipart/form-data; boundary=..., as browsers and curl -F do"
            ))
        })?;
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_BYTES {
            return Err(AppError::MalformedUpload(format!(
                "the form's boundary is {} bytes long; it must have 1 to {MAX_BOUNDARY_BYTES}",
                boundary.len()
            )));
        }
        let delimiter = [b"\r\n--".as_slice(), boundary.as_bytes()].concat();
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Ok(FormReader {
            field,
            delimiter,
            finder,
            body,
            state: State::Preamble { at_start: true },
        })
    }

    /// Takes the next piece of the body; `true` once the field is complete (the rest of the
    /// body is not needed then).
    pub(super) fn push(&mut self, piece: &[u8]) -> Result<bool, AppError> {
        self.body.append(piece)?;
        self.advance()
    }

    /// The field, once [`FormReader::push`] has said it is complete; otherwise, when the body
    /// ended before that, why the form cannot be used.
    pub(super) fn finish(self) -> Result<FormField, AppError> {
        match self.state {
            State::Found { range, .. } => {
                let (bytes, memory) = self.body.into_bytes(range);
                Ok(FormField { bytes, memory })
            }
            _ => Err(self.ended()),
        }
    }

    /// The file name the field came with (the `filename` of its `Content-Disposition`, if
    /// that is UTF-8), once its head has been read.
    pub(super) fn file_name(&self) -> Option<&str> {
        match &self.state {
            State::PartData {
                wanted: Some(part), ..
            } => part.file_name.as_deref(),
            State::Found { file_name, .. } => file_name.as_deref(),
            _ => None,
        }
    }

    /// Why the form is unusable when the body ended before the field was complete.
    fn ended(&self) -> AppError {
        let detail = match &self.state {
            State::Preamble { .. } => format!(
                "the body has no line \"--{}\" that begins a part, though its Content-Type \
                 declares that boundary",
                String::from_utf8_lossy(&self.delimiter[4..])
            ),
            State::AfterBoundary { .. } | State::PartHead { .. } => {
                "the form ends inside a part's headers: the upload was cut short".to_owned()
            }
            State::PartData {
                wanted: Some(_), ..
            } => format!(
                "the form ends inside the field \"{}\", before the boundary that closes it: \
                 the upload was cut short",
                self.field
            ),
            State::PartData { wanted: None, .. } => {
                "the form ends inside a field, before its closing boundary: the upload was cut \
                 short"
                    .to_owned()
            }
            State::Found { .. } => "the form was read".to_owned(),
        };
        AppError::MalformedUpload(detail)
    }

    /// Reads as far as the bytes kept allow; `true` once the field is complete.
    fn advance(&mut self) -> Result<bool, AppError> {
        let delimiter_len = self.delimiter.len();
        loop {
            let kept = self.body.len();
            match &mut self.state {
                State::Found { .. } => return Ok(true),
                State::Preamble { at_start } => {
                    let dash_boundary = &self.delimiter[2..];
                    let bytes = self.body.as_slice();
                    if *at_start {
                        if bytes.len() < dash_boundary.len() && dash_boundary.starts_with(bytes) {
                            return Ok(false);
                        }
                        if bytes.starts_with(dash_boundary) {
                            self.state = State::AfterBoundary {
                                at: dash_boundary.len(),
                                resume: 1,
                            };
                            continue;
                        }
                        *at_start = false;
                    }
                    match self.finder.find(bytes) {
                        Some(found) => {
                            self.state = State::AfterBoundary {
                                at: found + delimiter_len,
                                resume: found + 1,
                            };
                        }
                        None => {
                            self.body
                                .discard_front(undecided_tail(bytes, &self.delimiter, 0));
                            return Ok(false);
                        }
                    }
                }
                State::AfterBoundary { at, resume } => {
                    let (at, resume) = (*at, *resume);
                    match after_boundary(&self.body.as_slice()[at..]) {
                        After::Undecided => return Ok(false),
                        After::Close => return Err(AppError::MissingImageField),
                        After::Part { line_len } => {
                            self.body.discard_front(at + line_len);
                            self.state = State::PartHead { at: 0, searched: 0 };
                        }
                        After::Data => {
                            self.body.discard_front(resume);
                            self.state = State::Preamble { at_start: false };
                        }
                    }
                }
                State::PartHead { at, searched } => {
                    let (at, searched) = (*at, *searched);
                    let bytes = self.body.as_slice();
                    let head_end = if bytes[at..].starts_with(b"\r\n") {
                        Some(at + 2)
                    } else {
                        memmem::find(&bytes[searched..], b"\r\n\r\n")
                            .map(|found| searched + found + 4)
                    };
                    let Some(head_end) = head_end else {
                        if kept - at > MAX_PART_HEAD_BYTES {
                            return Err(AppError::MalformedUpload(format!(
                                "the headers of a part of the form are longer than {} KiB",
                                MAX_PART_HEAD_BYTES / 1024
                            )));
                        }
                        if kept - at < 2 {
                            return Ok(false);
                        }
                        self.state = State::PartHead {
                            at,
                            searched: kept.saturating_sub(3).max(at),
                        };
                        return Ok(false);
                    };
                    if head_end - at > MAX_PART_HEAD_BYTES {
                        return Err(AppError::MalformedUpload(format!(
                            "the headers of a part of the form are longer than {} KiB",
                            MAX_PART_HEAD_BYTES / 1024
                        )));
                    }
                    let disposition = part_disposition(&bytes[at..head_end])?;
                    let wanted =
                        (disposition.name.as_deref() == Some(self.field)).then_some(WantedPart {
                            file_name: disposition.file_name,
                            recognised: false,
                        });
                    self.body.discard_front(head_end);
                    self.state = State::PartData {
                        start: 0,
                        searched: 0,
                        wanted,
                    };
                }
                State::PartData {
                    start,
                    searched,
                    wanted,
                } => {
                    let bytes = self.body.as_slice();
                    match self.finder.find(&bytes[*searched..]) {
                        Some(found) => {
                            let end = *searched + found;
                            let line_len = match after_boundary(&bytes[end + delimiter_len..]) {
                                // Wait for the bytes that tell; the search resumes here.
                                After::Undecided => {
                                    *searched = end;
                                    return Ok(false);
                                }
                                // The boundary is followed by other bytes: it is data.
                                After::Data => {
                                    *searched = end + 1;
                                    continue;
                                }
                                After::Close => None,
                                After::Part { line_len } => Some(line_len),
                            };
                            if wanted.as_ref().is_some_and(|part| !part.recognised) {
                                refuse_if_no_image(&bytes[*start..end], true)?;
                            }
                            match wanted.take() {
                                Some(part) => {
                                    self.state = State::Found {
                                        range: *start..end,
                                        file_name: part.file_name,
                                    };
                                    return Ok(true);
                                }
                                None => {
                                    let Some(line_len) = line_len else {
                                        // The form ends without the field.
                                        return Err(AppError::MissingImageField);
                                    };
                                    self.body.discard_front(end + delimiter_len + line_len);
                                    self.state = State::PartHead { at: 0, searched: 0 };
                                }
                            }
                        }
                        None => {
                            // Bytes before `safe` are data: no delimiter begins there.
                            let safe = undecided_tail(bytes, &self.delimiter, *start);
                            match wanted {
                                Some(part) => {
                                    if !part.recognised {
                                        part.recognised =
                                            refuse_if_no_image(&bytes[*start..safe], false)?;
                                    }
                                    *searched = safe;
                                }
                                None => {
                                    self.body.discard_front(safe);
                                    self.state = State::PartData {
                                        start: 0,
                                        searched: 0,
                                        wanted: None,
                                    };
                                }
                            }
                            return Ok(false);
                        }
                    }
                }
            }
        }
    }
}

/// Where a delimiter may begin of which `bytes` (searched from `from` on, and holding no whole
/// delimiter there) has only the start: the first position among its last `delimiter.len() - 1`
/// bytes from which the rest of `bytes` begins the delimiter, or `bytes.len()` if there is none.
/// Everything before it is data.
fn undecided_tail(bytes: &[u8], delimiter: &[u8], from: usize) -> usize {
    let tail = bytes
        .len()
        .saturating_sub(delimiter.len() - 1)
        .max(from)
        .min(bytes.len());
    memchr::memchr_iter(b'\r', &bytes[tail..])
        .map(|offset| tail + offset)
        .find(|&at| delimiter.starts_with(&bytes[at..]))
        .unwrap_or(bytes.len())
}

/// Refuses the field if its first bytes start no image this server reads; `true` once they
/// are known to start one.
fn refuse_if_no_image(first: &[u8], complete: bool) -> Result<bool, AppError> {
    match imaging::sniff(first, complete) {
        Sniffed::Image(_) => Ok(true),
        Sniffed::Refused(error) => Err(error.into()),
        Sniffed::NeedMore => Ok(false),
    }
}

/// What follows `CRLF--boundary` (RFC 2046, section 5.1.1): a delimiter is followed by
/// optional spaces and tabs (at most [`MAX_PADDING`]) and a line break, the close delimiter by
/// `--`; followed by anything else, the bytes are data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Too few bytes have arrived to tell.
    Undecided,
    /// The close delimiter: the form ends.
    Close,
    /// A delimiter: the next part's head begins `line_len` bytes on (padding and line break).
    Part { line_len: usize },
    /// Not a delimiter: data.
    Data,
}

/// Tells what `bytes`, the bytes after a `CRLF--boundary` match, make of it.
fn after_boundary(bytes: &[u8]) -> After {
    if bytes.starts_with(b"--") {
        return After::Close;
    }
    if bytes == b"-" {
        return After::Undecided;
    }
    let padding = bytes
        .iter()
        .take(MAX_PADDING + 1)
        .position(|&b| b != b' ' && b != b'\t');
    match padding {
        Some(padding) if padding <= MAX_PADDING => match &bytes[padding..] {
            [b'\r', b'\n', ..] => After::Part {
                line_len: padding + 2,
            },
            [b'\r'] | [] => After::Undecided,
            _ => After::Data,
        },
        None if bytes.len() <= MAX_PADDING => After::Undecided,
        _ => After::Data,
    }
}

/// What a part's `Content-Disposition` says.
#[derive(Debug, Default, PartialEq)]
struct Disposition {
    name: Option<String>,
    file_name: Option<String>,
}

/// The `name` and `filename` of the part whose head (header lines and the blank line) is
/// `head`. A part without a `Content-Disposition` has neither.
fn part_disposition(head: &[u8]) -> Result<Disposition, AppError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
    match httparse::parse_headers(head, &mut headers) {
        Ok(httparse::Status::Complete((_, headers))) => Ok(headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("content-disposition"))
            .map(|header| parse_disposition(header.value))
            .unwrap_or_default()),
        Ok(httparse::Status::Partial) => Err(AppError::MalformedUpload(
            "a part's headers do not end with a blank line".to_owned(),
        )),
        Err(httparse::Error::TooManyHeaders) => Err(AppError::MalformedUpload(format!(
            "a part of the form has more than {MAX_PART_HEADERS} header lines"
        ))),
        Err(error) => Err(AppError::MalformedUpload(format!(
            "a part of the form has a header line that is not a header ({error})"
        ))),
    }
}

/// `form-data; name="image"; filename="photo.jpg"`: the `name` and `filename` parameters,
/// as tokens or quoted strings (with `\` escapes); names compared without regard to case. A
/// value that is not UTF-8 counts as absent.
fn parse_disposition(value: &[u8]) -> Disposition {
    let mut disposition = Disposition::default();
    let mut rest = value;
    // The disposition type itself ("form-data") comes first.
    match rest.iter().position(|&b| b == b';') {
        Some(semicolon) => rest = &rest[semicolon + 1..],
        None => return disposition,
    }
    while !rest.is_empty() {
        rest = rest.trim_ascii_start();
        let name_end = rest
            .iter()
            .position(|&b| b == b'=' || b == b';')
            .unwrap_or(rest.len());
        let name = rest[..name_end].trim_ascii();
        rest = &rest[name_end..];
        let mut value = None;
        if let Some(after) = rest.strip_prefix(b"=") {
            let after = after.trim_ascii_start();
            let (parsed, remaining) = parameter_value(after);
            value = parsed;
            rest = remaining;
        }
        // Skip to the next parameter.
        match rest.iter().position(|&b| b == b';') {
            Some(semicolon) => rest = &rest[semicolon + 1..],
            None => rest = &[],
        }
        let slot = if name.eq_ignore_ascii_case(b"name") {
            &mut disposition.name
        } else if name.eq_ignore_ascii_case(b"filename") {
            &mut disposition.file_name
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = value.and_then(|bytes| String::from_utf8(bytes).ok());
        }
    }
    disposition
}

/// A parameter's value at the start of `bytes` (a quoted string or a token) and what follows
/// it.
fn parameter_value(bytes: &[u8]) -> (Option<Vec<u8>>, &[u8]) {
    if let Some(quoted) = bytes.strip_prefix(b"\"") {
        let mut value = Vec::new();
        let mut index = 0;
        while index < quoted.len() {
            match quoted[index] {
                b'"' => return (Some(value), &quoted[index + 1..]),
                b'\\' if index + 1 < quoted.len() => {
                    value.push(quoted[index + 1]);
                    index += 2;
                }
                byte => {
                    value.push(byte);
                    index += 1;
                }
            }
        }
        // An unterminated quoted string: not a value.
        (None, &[])
    } else {
        let end = bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len());
        (Some(bytes[..end].trim_ascii_end().to_vec()), &bytes[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::budget::MemoryBudget;

    const PNG_START: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

    /// A PNG-looking field body of `len` bytes (its first bytes are a PNG signature and IHDR).
    fn png_like(len: usize) -> Vec<u8> {
        let mut bytes = PNG_START.to_vec();
        bytes.extend((0..len.saturating_sub(PNG_START.len())).map(|i| (i * 7 % 251) as u8));
        bytes.truncate(len);
        bytes
    }

    fn form(parts: &[(&str, &str, &[u8])], boundary: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (headers, _, data) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    /// Reads `body` in pieces of `piece` bytes; the field's file name and bytes, or the error.
    fn read(
        body: &[u8],
        boundary: &str,
        piece: usize,
    ) -> Result<(Option<String>, Vec<u8>), AppError> {
        let budget = MemoryBudget::new(1 << 30);
        let buffer = BodyBuffer::new(Some(body.len() as u64), 1 << 28, &budget);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let mut reader = FormReader::new(&content_type, "image", buffer)?;
        for chunk in body.chunks(piece.max(1)) {
            if reader.push(chunk)? {
                break;
            }
        }
        let file_name = reader.file_name().map(str::to_owned);
        let field = reader.finish()?;
        Ok((file_name, field.bytes.to_vec()))
    }

    #[test]
    fn the_image_field_is_found_whatever_the_pieces_it_arrives_in() {
        let image = png_like(5000);
        let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let body = form(
            &[
                (
                    "Content-Disposition: form-data; name=\"comment\"",
                    "",
                    b"hello\r\n--almost",
                ),
                (
                    "Content-Disposition: form-data; name=\"image\"; filename=\"photo.png\"\r\n\
                     Content-Type: image/png",
                    "",
                    &image,
                ),
                ("Content-Disposition: form-data; name=\"after\"", "", b"x"),
            ],
            boundary,
        );
        for piece in [1, 2, 3, 7, 41, 42, 43, 100, 4096, body.len()] {
            let (name, bytes) = read(&body, boundary, piece).unwrap();
            assert_eq!(name.as_deref(), Some("photo.png"), "pieces of {piece}");
            assert!(bytes == image, "pieces of {piece}: {} bytes", bytes.len());
        }
    }

    #[test]
    fn data_that_looks_like_a_boundary_but_is_not_one_stays_in_the_field() {
        let boundary = "bnd";
        let mut image = png_like(200);
        image.extend_from_slice(b"\r\n--bn\r\n-bnd\r--bnd");
        image.extend_from_slice(b"\r\n--bnX tail");
        let body = form(
            &[("Content-Disposition: form-data; name=image", "", &image)],
            boundary,
        );
        for piece in [1, 5, 64, body.len()] {
            let (name, bytes) = read(&body, boundary, piece).unwrap();
            assert_eq!(name, None);
            assert_eq!(bytes, image, "pieces of {piece}");
        }
    }

    /// Reads `body` in two pieces split at `seam`; the field's bytes, or the error.
    fn read_split(body: &[u8], boundary: &str, seam: usize) -> Result<Vec<u8>, AppError> {
        let budget = MemoryBudget::new(1 << 30);
        let buffer = BodyBuffer::new(Some(body.len() as u64), 1 << 28, &budget);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let mut reader = FormReader::new(&content_type, "image", buffer)?;
        let (first, second) = body.split_at(seam);
        if !reader.push(first)? {
            reader.push(second)?;
        }
        Ok(reader.finish()?.bytes.to_vec())
    }

    #[test]
    fn a_boundary_followed_by_anything_but_a_line_break_or_dashes_is_data() {
        // RFC 2046: a delimiter is CRLF "--" boundary, then optional spaces and tabs and CRLF,
        // or "--" for the last one. Followed by anything else, those bytes are data.
        let boundary = "bnd";
        let mut image = png_like(120);
        for look_alike in [
            &b"\r\n--bndX"[..],
            b"\r\n--bnd-x",
            b"\r\n--bnd \t x",
            b"\r\n--bnd\rx",
            b"\r\n--bnd\nx",
            b"\r\n--bnd\r\r\n",
            b"\r\n--bndbnd\r\n",
        ] {
            image.extend_from_slice(look_alike);
            image.extend_from_slice(b"middle");
        }
        image.extend_from_slice(b"\r\n--bnd!");
        let body = form(
            &[
                (
                    "Content-Disposition: form-data; name=\"comment\"",
                    "",
                    b"see\r\n--bnd: not the end",
                ),
                ("Content-Disposition: form-data; name=image", "", &image),
            ],
            boundary,
        );
        for piece in [1, 2, 3, 5, 7, 64, body.len()] {
            let (_, bytes) = read(&body, boundary, piece).unwrap();
            assert!(bytes == image, "pieces of {piece}: {} bytes", bytes.len());
        }
        for seam in 0..=body.len() {
            let bytes = read_split(&body, boundary, seam).unwrap();
            assert!(bytes == image, "split at {seam}: {} bytes", bytes.len());
        }
        // The close delimiter ends the field too, with or without a line break after it, and
        // padding before a line break is allowed.
        for ending in [&b"\r\n--bnd--"[..], b"\r\n--bnd--\r\n", b"\r\n--bnd \t\r\n"] {
            let mut body = b"--bnd\r\nContent-Disposition: form-data; name=image\r\n\r\n".to_vec();
            body.extend_from_slice(&image);
            body.extend_from_slice(ending);
            for seam in 0..=body.len() {
                let bytes = read_split(&body, boundary, seam).unwrap();
                assert!(bytes == image, "split at {seam}: {} bytes", bytes.len());
            }
        }
    }

    #[test]
    fn a_preamble_padding_and_empty_parts_are_read_as_rfc_2046_says() {
        let image = png_like(100);
        let mut body = b"preamble to ignore\r\n--b \t\r\n\r\nheadless part\r\n--b\r\n".to_vec();
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"image\"\r\n\r\n");
        body.extend_from_slice(&image);
        body.extend_from_slice(b"\r\n--b--\r\nepilogue");
        let (_, bytes) = read(&body, "b", 3).unwrap();
        assert_eq!(bytes, image);
    }

    #[test]
    fn a_form_without_the_field_or_cut_short_is_refused() {
        let image = png_like(300);
        let other = form(
            &[("Content-Disposition: form-data; name=\"file\"", "", &image)],
            "b",
        );
        assert!(matches!(
            read(&other, "b", 10),
            Err(AppError::MissingImageField)
        ));
        let full = form(
            &[("Content-Disposition: form-data; name=\"image\"", "", &image)],
            "b",
        );
        for cut in [0, 3, 10, 40, 60, full.len() - 12] {
            let error = read(&full[..cut], "b", 10).unwrap_err();
            assert!(
                matches!(error, AppError::MalformedUpload(_)),
                "cut at {cut}: {error:?}"
            );
        }
        let message = read(&full[..full.len() - 12], "b", 10)
            .unwrap_err()
            .to_string();
        assert!(message.contains("cut short"), "{message}");
        let wrong = read(&full, "other", 10).unwrap_err().to_string();
        assert!(wrong.contains("--other"), "{wrong}");
    }

    #[test]
    fn a_field_that_starts_no_image_is_refused_from_its_first_bytes() {
        let mut body =
            b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n<!DOCTYPE html>"
                .to_vec();
        body.extend(std::iter::repeat_n(b'x', 100));
        // No closing boundary: the refusal must not wait for it.
        let error = read(&body, "b", 16).unwrap_err();
        assert!(matches!(error, AppError::Decode(_)), "{error:?}");
        // Just enough bytes to tell, and then nothing (a client that waits for the answer).
        let text = b"This is a shopping list, not a picture: bread, milk, eggs and tea.";
        let mut body =
            b"--XyZzY\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n".to_vec();
        body.extend_from_slice(text);
        let error = read(&body, "XyZzY", body.len()).unwrap_err();
        assert!(matches!(error, AppError::Decode(_)), "{error:?}");
        let short = form(
            &[(
                "Content-Disposition: form-data; name=\"image\"",
                "",
                b"photo.png",
            )],
            "b",
        );
        assert!(matches!(read(&short, "b", 4), Err(AppError::Decode(_))));
    }

    #[test]
    fn part_heads_are_bounded_and_must_be_headers() {
        let huge = format!(
            "--b\r\nContent-Disposition: form-data; name=\"image\"\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(MAX_PART_HEAD_BYTES)
        );
        let error = read(huge.as_bytes(), "b", 1000).unwrap_err().to_string();
        assert!(error.contains("16 KiB"), "{error}");
        let many: String = (0..=MAX_PART_HEADERS)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let body = format!("--b\r\n{many}\r\nx\r\n--b--\r\n");
        let error = read(body.as_bytes(), "b", 1000).unwrap_err().to_string();
        assert!(error.contains("header lines"), "{error}");
        let body = "--b\r\nthis is not a header\r\n\r\nx\r\n--b--\r\n";
        assert!(matches!(
            read(body.as_bytes(), "b", 1000),
            Err(AppError::MalformedUpload(_))
        ));
        let body = "--b\r\n\r\nx\r\n--b\r\nContent-Type: image/png\r\n\r\ny\r\n--b--\r\n";
        assert!(matches!(
            read(body.as_bytes(), "b", 1000),
            Err(AppError::MissingImageField)
        ));
    }

    #[test]
    fn boundaries_come_from_the_content_type_within_bounds() {
        let budget = MemoryBudget::new(1 << 20);
        let new = |content_type: &str| {
            FormReader::new(content_type, "image", BodyBuffer::new(None, 1000, &budget))
        };
        assert!(new("multipart/form-data; boundary=abc").is_ok());
        assert!(new("multipart/form-data; boundary=\"a b:c\"").is_ok());
        assert!(new("multipart/form-data").is_err());
        let long = format!("multipart/form-data; boundary={}", "x".repeat(201));
        assert!(new(&long).unwrap_err().to_string().contains("200"));
    }

    #[test]
    fn dispositions_give_name_and_file_name() {
        let parse = |value: &str| parse_disposition(value.as_bytes());
        assert_eq!(
            parse("form-data; name=\"image\"; filename=\"a b.png\""),
            Disposition {
                name: Some("image".into()),
                file_name: Some("a b.png".into())
            }
        );
        assert_eq!(
            parse("form-data; FILENAME=x.png ; Name = image")
                .name
                .as_deref(),
            Some("image")
        );
        assert_eq!(
            parse(r#"form-data; name="im\"age"; filename="q\\.png""#),
            Disposition {
                name: Some("im\"age".into()),
                file_name: Some("q\\.png".into())
            }
        );
        assert_eq!(
            parse("form-data; filename=\"x;y.png\"; name=image").file_name,
            Some("x;y.png".into())
        );
        assert_eq!(parse("form-data; xname=\"image\"").name, None);
        assert_eq!(parse("form-data; name=\"unterminated").name, None);
        assert_eq!(parse("form-data").name, None);
        assert_eq!(
            parse_disposition(b"form-data; name=\"image\"; filename=\"caf\xE9.png\""),
            Disposition {
                name: Some("image".into()),
                file_name: None
            }
        );
        assert_eq!(
            parse("form-data; name=\" image\"").name.as_deref(),
            Some(" image")
        );
    }
}
