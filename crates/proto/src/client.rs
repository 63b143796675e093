//! The client end: connect to the daemon's socket, send typed requests,
//! get typed replies.

use crate::{Call, Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a reply may take (a port add opens sockets and starts threads).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket: the CNI plugin's "try again later".
    #[error(
        "cannot reach the daemon at {}: {source} (is `userbridge run` running? pass --socket if it uses another path)",
        path.display()
    )]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error("talking to the daemon at {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("malformed reply from the daemon at {}: {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },
    /// The daemon serves as many clients as it will: the request was not
    /// run; connect again a little later.
    #[error("the daemon at {} is busy (too many clients at once); retry", path.display())]
    Busy { path: PathBuf },
    /// The daemon answered with an error: its message, as it said it.
    #[error("{0}")]
    Refused(String),
}

/// A connection to the daemon; several requests may go over one.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    conn: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let conn =
            UnixStream::connect(path).map_err(|source| ClientError::Unreachable { path: path.into(), source })?;
        let io = |source| ClientError::Io { path: path.into(), source };
        conn.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
        let reader = BufReader::new(conn.try_clone().map_err(io)?);
        Ok(Client { path: path.into(), conn, reader })
    }

    /// Sends `req` and returns its reply, or the daemon's error.
    pub fn call<C: Call>(&mut self, req: C) -> Result<C::Reply, ClientError> {
        let r = self.send(&req.into())?;
        if !r.ok && r.error.as_deref() == Some(crate::BUSY) {
            return Err(ClientError::Busy { path: self.path.clone() });
        }
        if !r.ok {
            return Err(ClientError::Refused(r.error.unwrap_or_else(|| "the daemon refused the request".into())));
        }
        serde_json::from_value(r.result.unwrap_or_default())
            .map_err(|e| ClientError::Malformed { path: self.path.clone(), detail: e.to_string() })
    }

    /// [`Client::call`], but while the daemon says it is busy (serving as
    /// many clients as it takes at once: many pods starting together), it
    /// connects again after a short, growing pause that differs per
    /// process, for up to `patience`.
    pub fn call_patiently<C: Call + Clone>(
        &mut self,
        req: C,
        patience: std::time::Duration,
    ) -> Result<C::Reply, ClientError> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5 + u64::from(std::process::id() % 16));
        loop {
            match self.call(req.clone()) {
                Err(ClientError::Busy { .. }) if start.elapsed() < patience => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                    *self = Client::connect(&self.path)?;
                }
                other => return other,
            }
        }
    }

    /// Sends any request and returns the reply as it came.
    pub fn send(&mut self, req: &Request) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io { path: self.path.clone(), source };
        let line =
            req.to_line().map_err(|e| ClientError::Malformed { path: self.path.clone(), detail: e.to_string() })?;
        let sent = self.conn.write_all(line.as_bytes());
        let mut reply = String::new();
        let read = self.reader.read_line(&mut reply);
        // A busy daemon answers and closes before reading: the write may
        // fail, and its answer is still there to read.
        let n = match (sent, read) {
            (_, Ok(n)) if n > 0 => n,
            (Err(e), _) => return Err(io(e)),
            (Ok(()), r) => r.map_err(io)?,
        };
        if n == 0 {
            return Err(ClientError::Malformed {
                path: self.path.clone(),
                detail: "the daemon closed the connection".into(),
            });
        }
        serde_json::from_str(&reply)
            .map_err(|e| ClientError::Malformed { path: self.path.clone(), detail: e.to_string() })
    }
}

/// Connects, sends one request, returns its reply.
pub fn call<C: Call>(socket: &Path, req: C) -> Result<C::Reply, ClientError> {
    Client::connect(socket)?.call(req)
}
