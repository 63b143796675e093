//! Just enough HTTP/1.1 for Docker's plugin client: one POST with a JSON
//! body per connection turn, answered with a JSON body. Docker's client
//! (Go's net/http) always sends `Content-Length`; a chunked body is
//! refused with 411, as is anything larger than [`MAX_BODY`].

use std::io::{self, BufRead, BufReader, Read, Write};

/// The largest request body accepted: Docker's largest (CreateEndpoint
/// with every option) is a few KiB.
pub const MAX_BODY: usize = 1 << 20;
/// Header lines accepted per request.
const MAX_HEADERS: usize = 64;

/// A request: its method, path and body.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The client asked to close after this request.
    pub close: bool,
}

/// A response: its status and JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Reads one request; `None` at a clean end of the connection.
pub fn read_request<R: Read>(r: &mut BufReader<R>) -> Result<Option<Request>, Response> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(error(400, "a malformed request line"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut length: Option<usize> = None;
    let mut close = false;
    for _ in 0..MAX_HEADERS {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|_| error(400, "the headers ended early"))? == 0 {
            return Err(error(400, "the headers ended early"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            let n = length.unwrap_or(0);
            let mut body = vec![0; n];
            r.read_exact(&mut body).map_err(|_| error(400, "the body is shorter than its Content-Length"))?;
            return Ok(Some(Request { method, path, body, close }));
        }
        let Some((name, value)) = h.split_once(':') else { return Err(error(400, "a malformed header")) };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| error(400, "a malformed Content-Length"))?;
            if n > MAX_BODY {
                return Err(error(413, "the body is larger than 1 MiB"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(error(411, "send the body with a Content-Length"));
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    Err(error(431, "too many header lines"))
}

/// An error response in the protocol's shape, `{"Err": "..."}`.
pub fn error(status: u16, msg: &str) -> Response {
    Response { status, body: serde_json::json!({ "Err": msg }).to_string() }
}

pub fn write_response<W: Write>(w: &mut W, resp: &Response, close: bool) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n{}\r\n{}",
        resp.status,
        resp.body.len(),
        if close { "Connection: close\r\n" } else { "" },
        resp.body
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<Request>, Response> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn a_post_as_docker_sends_it() {
        let raw = "POST /NetworkDriver.Join HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\
                   Content-Type: application/vnd.docker.plugins.v1.2+json\r\n\r\n{}";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body.as_slice(), r.close),
            ("POST", "/NetworkDriver.Join", &b"{}"[..], false)
        );
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert_eq!(parse("nonsense\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err().status, 411);
        assert_eq!(parse("POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").unwrap_err().status, 413);
        assert_eq!(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}").unwrap_err().status, 400);
        let many = format!("POST / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(100));
        assert_eq!(parse(&many).unwrap_err().status, 431);
    }
}
