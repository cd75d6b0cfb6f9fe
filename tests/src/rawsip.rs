//! Raw SIP for tests that write messages by hand: receiving over UDP or a stream until a
//! wanted message arrives, framing a stream by Content-Length, and reading header values.

use std::io::Read;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// The next SIP datagram on `s` within `timeout` that `want` accepts; others are skipped.
#[must_use]
pub fn recv_udp_until(
    s: &UdpSocket,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < end {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let t = String::from_utf8_lossy(&buf[..n]).into_owned();
            if want(&t) {
                return Some(t);
            }
        }
    }
    None
}

/// Every value of header `name` (long form, any case) in the header section of `msg`.
#[must_use]
pub fn header_values<'m>(msg: &'m str, name: &str) -> Vec<&'m str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The first value of header `name`.
#[must_use]
pub fn header<'m>(msg: &'m str, name: &str) -> Option<&'m str> {
    header_values(msg, name).into_iter().next()
}

/// Why [`StreamReader::recv_until`] stopped without a message.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Nothing wanted arrived in time.
    Timeout,
    /// The peer closed the connection (or it failed).
    Closed,
}

/// SIP messages framed by Content-Length from a byte stream (TCP or TLS) whose reads time
/// out (set a read timeout on the socket).
#[derive(Debug, Default)]
pub struct StreamReader {
    buf: Vec<u8>,
}

impl StreamReader {
    /// The next message within `timeout` that `want` accepts (others are skipped; leading
    /// CRLF keep-alives are dropped).
    ///
    /// # Errors
    /// [`StreamEnd`] when nothing wanted came in time or the stream ended.
    pub fn recv_until<S: Read>(
        &mut self,
        s: &mut S,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<String, StreamEnd> {
        let end = Instant::now() + timeout;
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(head) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..head + 4]).into_owned();
                let len: usize = header(&text, "Content-Length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= head + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..head + 4 + len).collect();
                    let msg = String::from_utf8_lossy(&msg).into_owned();
                    if want(&msg) {
                        return Ok(msg);
                    }
                    continue;
                }
            }
            if Instant::now() >= end {
                return Err(StreamEnd::Timeout);
            }
            let mut chunk = [0u8; 16_384];
            match s.read(&mut chunk) {
                Ok(0) => return Err(StreamEnd::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Err(StreamEnd::Closed),
            }
        }
    }
}
