//! HTTP/1.1 as the Docker driver and the metrics endpoint need it: one
//! request at a time on a kept-alive connection, the head parsed by
//! `httparse` from a buffer of at most [`HttpLimits::head`] bytes, the body
//! by its `Content-Length` up to [`HttpLimits::body`]. What the limits or
//! the parser refuse is answered with its 4xx and the connection closed;
//! the server goes on.

use std::io::{self, Read, Write};

/// The most a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Bytes of the request line and headers together.
    pub head: usize,
    /// Bytes of the body.
    pub body: usize,
}

/// Header lines a request may have.
const MAX_HEADERS: usize = 64;

/// A request: its method, path and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The client asked to close after this request.
    pub close: bool,
}

/// A response: its status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, body: body.into() }
    }
}

/// Why a request was refused before it was handled: the status and what to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub why: &'static str,
}

/// Reads requests from a connection, keeping what it read past one request
/// for the next.
#[derive(Debug)]
pub struct Reader<R> {
    conn: R,
    buf: Vec<u8>,
    limits: HttpLimits,
}

impl<R: Read> Reader<R> {
    pub fn new(conn: R, limits: HttpLimits) -> Reader<R> {
        Reader { conn, buf: Vec::new(), limits }
    }

    /// The next request; `Ok(None)` when the connection ends cleanly (or
    /// times out) between requests.
    pub fn next_request(&mut self) -> Result<Option<Request>, Refused> {
        let (head_len, method, path, length, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let (length, close) = framing(req.headers, self.limits)?;
                    let method = req.method.unwrap_or_default().to_string();
                    let path = req.path.unwrap_or_default().to_string();
                    break (n, method, path, length, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Refused { status: 431, why: "too many header lines" });
                }
                Err(_) => return Err(Refused { status: 400, why: "a malformed request" }),
            }
            if self.buf.len() >= self.limits.head {
                return Err(Refused { status: 431, why: "the request's head is too large" });
            }
            let room = self.limits.head - self.buf.len();
            match self.fill(room) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(Refused { status: 400, why: "the request ended early" }),
                Ok(_) => {}
                Err(_) if self.buf.is_empty() => return Ok(None),
                Err(_) => return Err(Refused { status: 400, why: "the request ended early" }),
            }
        };
        while self.buf.len() < head_len + length {
            let want = head_len + length - self.buf.len();
            match self.fill(want) {
                Ok(n) if n > 0 => {}
                _ => return Err(Refused { status: 400, why: "the body is shorter than its Content-Length" }),
            }
        }
        let body = self.buf[head_len..head_len + length].to_vec();
        self.buf.drain(..head_len + length);
        Ok(Some(Request { method, path, body, close }))
    }

    /// The connection, to answer on.
    pub fn conn_mut(&mut self) -> &mut R {
        &mut self.conn
    }

    /// Reads at most `max` more bytes into the buffer.
    fn fill(&mut self, max: usize) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.conn.read(&mut chunk[..max.min(4096)])?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

/// The body's length and whether the client closes after this request.
fn framing(headers: &[httparse::Header<'_>], limits: HttpLimits) -> Result<(usize, bool), Refused> {
    let (mut length, mut close) = (0, false);
    for h in headers {
        let value = std::str::from_utf8(h.value).map_err(|_| Refused { status: 400, why: "a malformed header" })?;
        if h.name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| Refused { status: 400, why: "a malformed Content-Length" })?;
            if length > limits.body {
                return Err(Refused { status: 413, why: "the body is too large" });
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refused { status: 411, why: "send the body with a Content-Length" });
        } else if h.name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    Ok((length, close))
}

/// Writes `resp`, with `Connection: close` when `close`.
pub fn write_response<W: Write>(w: &mut W, resp: &Response, close: bool) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        resp.status,
        resp.content_type,
        resp.body.len(),
        if close { "Connection: close\r\n" } else { "" },
    )?;
    w.write_all(&resp.body)?;
    w.flush()
}

/// Serves requests on `conn` with `handle` until the client closes or asks
/// to, goes quiet past the connection's timeout, or sends a request the
/// limits refuse (answered by `refused`, then closed).
pub fn serve<C: Read + Write>(
    conn: C,
    limits: HttpLimits,
    refused: impl Fn(Refused) -> Response,
    handle: impl Fn(&Request) -> Response,
) {
    let mut r = Reader::new(conn, limits);
    loop {
        let (resp, close) = match r.next_request() {
            Ok(None) => return,
            Ok(Some(req)) => (handle(&req), req.close),
            Err(e) => (refused(e), true),
        };
        if write_response(r.conn_mut(), &resp, close).is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HttpLimits = HttpLimits { head: 8192, body: 1 << 20 };

    fn parse(raw: &[u8]) -> Result<Option<Request>, Refused> {
        Reader::new(raw, LIMITS).next_request()
    }

    #[test]
    fn a_post_as_docker_sends_it_and_the_next_on_the_same_connection() {
        let raw = b"POST /NetworkDriver.Join HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\
                    Content-Type: application/vnd.docker.plugins.v1.2+json\r\n\r\n{}\
                    GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = Reader::new(&raw[..], LIMITS);
        let a = r.next_request().unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), a.body.as_slice(), a.close),
            ("POST", "/NetworkDriver.Join", &b"{}"[..], false)
        );
        let b = r.next_request().unwrap().unwrap();
        assert_eq!((b.method.as_str(), b.path.as_str(), b.close), ("GET", "/metrics", true));
        assert_eq!(r.next_request(), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn what_the_limits_or_the_parser_refuse_gets_its_status() {
        let status = |raw: &[u8]| parse(raw).unwrap_err().status;
        assert_eq!(status(b"nonsense\r\n\r\n"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"), 413);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"), 400);
        let many = format!("POST / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(100));
        assert_eq!(status(many.as_bytes()), 431);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(10_000));
        assert_eq!(status(long.as_bytes()), 431, "a head over the limit, without its end in sight");
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a"), 400, "ended within the head");
    }
}
