//! Raw HTTP/1.1 over a TCP socket, for the requests reqwest will not send: malformed multipart
//! bodies, file names that are not UTF-8, bodies far larger than the server reads, and bodies
//! that stop half-way and stall.
//!
//! The request is written by one task while the answer is read by another, so a server that
//! answers before reading the whole body (as it must for a body over its limit) is heard even
//! though the rest of the body is never taken.

use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How the body follows the request head.
#[derive(Debug, Clone)]
pub enum Body {
    /// These bytes, at once.
    Whole(Vec<u8>),
    /// `chunk` again and again until `total` bytes are sent or the server stops reading.
    Repeated { chunk: Vec<u8>, total: usize },
    /// These bytes, then nothing more while the connection stays open: a stalled client.
    StallAfter(Vec<u8>),
    /// These bytes one at a time, `every` apart: a client too slow to ever finish.
    Trickle { bytes: Vec<u8>, every: Duration },
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From connecting to the end of the answer.
    pub elapsed: Duration,
    /// How many bytes of the request (head included) the socket took before the answer ended.
    pub bytes_sent: usize,
}

impl Answer {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A request head: `POST path`, the given headers, `Host`, `Connection: close`, and a
/// `Content-Length` unless `content_length` is `None` (then the caller says how the body ends,
/// e.g. `Transfer-Encoding: chunked`).
pub fn head(path: &str, headers: &[(&str, &[u8])], content_length: Option<usize>) -> Vec<u8> {
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        head.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Sends `head` and `body` to `addr` and reads the answer; fails if no whole answer comes
/// within `patience`.
pub async fn send(addr: &str, head: Vec<u8>, body: Body, patience: Duration) -> io::Result<Answer> {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let (done, answered) = oneshot::channel::<()>();
    let writing = tokio::spawn(async move {
        let mut sent = 0;
        let mut write = async |bytes: &[u8]| -> io::Result<()> {
            writer.write_all(bytes).await?;
            sent += bytes.len();
            Ok(())
        };
        let sending = async {
            write(&head).await?;
            match body {
                Body::Whole(bytes) => write(&bytes).await?,
                Body::Repeated { chunk, total } => {
                    let mut left = total;
                    while left > 0 {
                        let take = left.min(chunk.len());
                        write(&chunk[..take]).await?;
                        left -= take;
                    }
                }
                Body::Trickle { bytes, every } => {
                    for byte in bytes {
                        write(&[byte]).await?;
                        tokio::time::sleep(every).await;
                    }
                }
                Body::StallAfter(bytes) => write(&bytes).await?,
            }
            // Keep the connection open, sending nothing more, until the answer is in.
            std::future::pending::<io::Result<()>>().await
        };
        // Stop sending once the answer is in. A server that answered early may also close the
        // connection under the writer: expected, so write errors end the sending quietly.
        tokio::select! {
            _ = sending => {}
            _ = answered => {}
        }
        (sent, writer)
    });

    let read = tokio::time::timeout(patience, read_answer(&mut reader)).await;
    let _ = done.send(());
    let (bytes_sent, _writer) = writing.await.expect("the writer task ends");
    let (status, headers, body) = match read {
        Ok(answer) => answer?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {patience:?}"),
            ));
        }
    };
    Ok(Answer {
        status,
        headers,
        body,
        elapsed: started.elapsed(),
        bytes_sent,
    })
}

type Parsed = (u16, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 response: status line, headers, and a body delimited by
/// `Content-Length`, chunked encoding, or the end of the connection.
async fn read_answer(reader: &mut (impl AsyncReadExt + Unpin)) -> io::Result<Parsed> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if read_more(reader, &mut buffer).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the connection closed after {} bytes, before a whole response head",
                    buffer.len()
                ),
            ));
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut rest = buffer.split_off(head_end + 4);
    let value = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_ascii_lowercase())
    };
    let body = if let Some(length) = value("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        while rest.len() < length {
            if read_more(reader, &mut rest).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended early",
                ));
            }
        }
        rest.truncate(length);
        rest
    } else if value("transfer-encoding").is_some_and(|coding| coding.contains("chunked")) {
        read_chunked(reader, rest).await?
    } else {
        // A body that ends when the connection does; a reset after it still counts as its end.
        while let Ok(read) = read_more(reader, &mut rest).await {
            if read == 0 {
                break;
            }
        }
        rest
    };
    Ok((status, headers, body))
}

/// Decodes a chunked body, `buffer` holding what was already read.
async fn read_chunked(
    reader: &mut (impl AsyncReadExt + Unpin),
    mut buffer: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&buffer, b"\r\n") {
                break end;
            }
            if read_more(reader, &mut buffer).await? == 0 {
                return Err(invalid("the chunked body ended early".to_owned()));
            }
        };
        let size_text = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        buffer.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        while buffer.len() < size + 2 {
            if read_more(reader, &mut buffer).await? == 0 {
                return Err(invalid("a chunk ended early".to_owned()));
            }
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
    }
}

async fn read_more(
    reader: &mut (impl AsyncReadExt + Unpin),
    buffer: &mut Vec<u8>,
) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let read = reader.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..read]);
    Ok(read)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
