//! The CLI's side of the control socket: blocking std I/O with timeouts (a technician
//! command needs no async runtime).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::protocol::{Reply, Request, VERSION};

/// How long a one-shot request may take (the agent bounds its own waits well below this).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest reply line accepted (a node with thousands of calls answers a few MiB).
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// Why a technician command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (no file, or a stale one).
    #[error("no agent running (control socket {})", path.display())]
    NoAgent {
        /// The socket.
        path: PathBuf,
    },
    /// The file system refused the connection.
    #[error("permission denied on control socket {} (run as the agent's user or root)", path.display())]
    PermissionDenied {
        /// The socket.
        path: PathBuf,
    },
    /// The connection failed midway.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The reply is not this protocol.
    #[error("the agent's reply is not understood: {0}")]
    Protocol(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(String),
}

fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NoAgent {
            path: path.to_path_buf(),
        },
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

fn read_line(reader: &mut impl BufRead, path: &Path) -> Result<Option<String>, ClientError> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_REPLY_BYTES)
        .read_until(b'\n', &mut buf)
        .map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if n == 0 {
        return Ok(None);
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ClientError::Protocol("reply is not UTF-8".into()))
}

fn parse_reply(line: &str) -> Result<Value, ClientError> {
    let reply: Reply =
        serde_json::from_str(line).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if reply.v != VERSION {
        return Err(ClientError::Protocol(format!(
            "agent speaks protocol version {}, this ccedge speaks {VERSION}",
            reply.v
        )));
    }
    if reply.ok {
        Ok(reply.data.unwrap_or(Value::Null))
    } else {
        Err(ClientError::Agent(
            reply.error.unwrap_or_else(|| "unspecified error".into()),
        ))
    }
}

fn send(
    path: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<UnixStream, ClientError> {
    let mut stream = connect(path)?;
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream.set_read_timeout(timeout).map_err(io_err)?;
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .map_err(io_err)?;
    match stream.write_all(request.to_line().as_bytes()) {
        Ok(()) => {}
        // The agent may refuse a peer (wrong uid, too many clients) with an error line and
        // close before reading the request: the reply is still there to read.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(io_err(e)),
    }
    Ok(stream)
}

/// Sends one request and returns the reply's `data`.
///
/// # Errors
/// [`ClientError::NoAgent`] when nothing listens, [`ClientError::Agent`] with the agent's
/// message when it refused, and the others when the exchange failed.
pub fn request(path: &Path, request: &Request) -> Result<Value, ClientError> {
    let stream = send(path, request, Some(REPLY_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    match read_line(&mut reader, path)? {
        Some(line) => parse_reply(&line),
        None => Err(ClientError::Protocol(
            "the agent closed the connection".into(),
        )),
    }
}

/// [`request`], with the data decoded as `T`.
///
/// # Errors
/// As [`request`], and [`ClientError::Protocol`] when the data is not a `T`.
pub fn request_as<T: DeserializeOwned>(path: &Path, req: &Request) -> Result<T, ClientError> {
    let data = request(path, req)?;
    serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// One line of an `events_tail` stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A call event (the JSON published to the CRM, numbers masked unless revealed).
    Event(Value),
    /// The client read too slowly and this many events were skipped.
    Lagged(u64),
}

/// A following `events_tail` connection.
#[derive(Debug)]
pub struct EventStream {
    reader: BufReader<UnixStream>,
    path: PathBuf,
}

impl EventStream {
    /// Connects and asks for the event stream.
    ///
    /// # Errors
    /// As [`request`].
    pub fn open(path: &Path, reveal: bool) -> Result<EventStream, ClientError> {
        let stream = send(path, &Request::EventsTail { reveal }, Some(REPLY_TIMEOUT))?;
        let mut reader = BufReader::new(stream);
        match read_line(&mut reader, path)? {
            Some(line) => {
                parse_reply(&line)?;
            }
            None => {
                return Err(ClientError::Protocol(
                    "the agent closed the connection".into(),
                ))
            }
        }
        // Events may be minutes apart.
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|source| ClientError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(EventStream {
            reader,
            path: path.to_path_buf(),
        })
    }

    /// The next event; `None` when the agent closed the stream (it stopped).
    ///
    /// # Errors
    /// [`ClientError::Io`] when the connection failed, [`ClientError::Protocol`] on a line
    /// that is not JSON.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, ClientError> {
        let Some(line) = read_line(&mut self.reader, &self.path)? else {
            return Ok(None);
        };
        let value: Value =
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Some(n) = value.get("lagged").and_then(Value::as_u64) {
            if value.get("v").is_some() && value.get("event_id").is_none() {
                return Ok(Some(StreamItem::Lagged(n)));
            }
        }
        Ok(Some(StreamItem::Event(value)))
    }
}
