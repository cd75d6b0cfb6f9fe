//! SIP over TCP and TLS (RFC 3261 §18, §26.2): the listeners, one task per connection,
//! framing by Content-Length, limits on connections, and idle timeouts. TLS is the same code
//! path with a rustls handshake after accept.
//!
//! The engine owns every decision: each framed message reaches it as [`StreamIn::Message`] and
//! goes through the same allow list, rate limit and node as a UDP datagram. A connection task
//! only moves bytes: it reads and frames, and writes what the engine hands it on its channel.
//! Dropping a connection's sender closes the connection.
//!
//! Framing: leading CRLFs are keep-alives (RFC 5626 §3.5.1: a CRLFCRLF ping is answered with
//! a CRLF pong); a message is its header section up to the blank line plus `Content-Length`
//! bytes of body (a missing Content-Length is 0). A message larger than
//! [`shared::limits::SIP_MAX_DATAGRAM`] or a header section that cannot be framed ends the
//! connection, after the engine answered what it could read (513 or 400), because the stream
//! cannot be resynchronised.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::sip::route::Transport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

/// Messages waiting to be written on one connection before the engine's sends are dropped
/// (the SIP timers retransmit).
const WRITE_QUEUE: usize = 64;

/// What connections tell the engine.
#[derive(Debug)]
pub(crate) enum StreamIn {
    /// A connection is open (accepted, or connected by us): `tx` writes on it.
    Opened {
        /// The peer's address (the connection's key).
        peer: SocketAddr,
        /// Bytes to write.
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// One framed SIP message.
    Message {
        /// The connection's peer.
        peer: SocketAddr,
        /// TCP or TLS.
        transport: Transport,
        /// The message.
        data: Vec<u8>,
    },
    /// A message that cannot be framed (too large, or no usable Content-Length): what could
    /// be read of it, for an answer; the connection closes after this.
    Broken {
        /// The connection's peer.
        peer: SocketAddr,
        /// TCP or TLS.
        transport: Transport,
        /// The start of the message.
        head: Vec<u8>,
        /// 513 (too large) or 400.
        status: u16,
    },
    /// The connection closed.
    Closed {
        /// The connection's peer.
        peer: SocketAddr,
    },
}

/// Limits of the stream transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A connection with no traffic this long is closed.
    pub idle: Duration,
    /// Most connections at once (accepted and our own).
    pub max_connections: usize,
    /// Largest message.
    pub max_message: usize,
}

/// The next frame at the start of `buf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A message of this many bytes.
    Message(usize),
    /// Keep-alive bytes to skip; `true` for a ping that wants a pong.
    KeepAlive(usize, bool),
    /// More bytes are needed.
    Incomplete,
    /// The message is larger than the limit.
    TooLarge,
    /// The header section has a Content-Length that is not a number.
    Bad,
}

/// Frames the start of `buf` (see the module docs).
pub(crate) fn next_frame(buf: &[u8], max: usize) -> Frame {
    if buf.starts_with(b"\r\n\r\n") {
        return Frame::KeepAlive(4, true);
    }
    if buf.starts_with(b"\r\n") {
        // A lone CRLF (a pong) unless a second one may still arrive to make a ping.
        return match buf.get(2) {
            None | Some(b'\r') => Frame::Incomplete,
            Some(_) => Frame::KeepAlive(2, false),
        };
    }
    if buf == b"\r" {
        return Frame::Incomplete;
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > max {
            Frame::TooLarge
        } else {
            Frame::Incomplete
        };
    };
    let head = &buf[..end];
    let mut length = 0usize;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            match value.trim().parse::<usize>() {
                Ok(n) => length = n,
                Err(_) => return Frame::Bad,
            }
        }
    }
    let total = end + 4 + length;
    if total > max {
        Frame::TooLarge
    } else if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

/// Accepts connections until the engine's channel closes; with `tls`, each one first
/// completes a TLS handshake (within 10 s). Beyond `limits.max_connections` open connections
/// a new one is closed at once.
pub(crate) async fn listen(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    to_engine: mpsc::Sender<StreamIn>,
    limits: Limits,
    slots: Arc<Semaphore>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                warn!(error = %e, "SIP stream accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if to_engine.is_closed() {
            return;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "SIP stream connection refused: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let to_engine = to_engine.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => run(stream, peer, Transport::Tcp, to_engine, limits, None).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(s)) => run(s, peer, Transport::Tls, to_engine, limits, None).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "SIP TLS handshake failed"),
                        Err(_) => debug!(%peer, "SIP TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// The TLS server settings from PEM files: the certificate chain and its private key.
///
/// # Errors
/// A readable message naming the file when a file cannot be read or holds no usable
/// certificate or key.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let cert_pem = read(cert)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert.display()));
    }
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Connects to `peer`, writes `first`, then serves the connection like an accepted one.
pub(crate) async fn connect(
    peer: SocketAddr,
    first: Vec<u8>,
    to_engine: mpsc::Sender<StreamIn>,
    limits: Limits,
    slots: Arc<Semaphore>,
) {
    let Ok(permit) = slots.try_acquire_owned() else {
        debug!(%peer, "SIP TCP connect skipped: too many connections");
        let _ = to_engine.send(StreamIn::Closed { peer }).await;
        return;
    };
    let stream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "SIP TCP connect failed");
            let _ = to_engine.send(StreamIn::Closed { peer }).await;
            return;
        }
        Err(_) => {
            debug!(%peer, "SIP TCP connect timed out");
            let _ = to_engine.send(StreamIn::Closed { peer }).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    run(stream, peer, Transport::Tcp, to_engine, limits, Some(first)).await;
    drop(permit);
}

/// Serves one connection: reads and frames towards the engine, writes what the engine sends,
/// closes on idle, on a framing error, when the engine drops its sender, or on shutdown of
/// the engine's channel.
async fn run<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    to_engine: mpsc::Sender<StreamIn>,
    limits: Limits,
    first: Option<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if to_engine.send(StreamIn::Opened { peer, tx }).await.is_err() {
        return;
    }
    if let Some(first) = first {
        if wr.write_all(&first).await.is_err() {
            let _ = to_engine.send(StreamIn::Closed { peer }).await;
            return;
        }
    }
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let idle = tokio::time::sleep(limits.idle);
    tokio::pin!(idle);
    'conn: loop {
        tokio::select! {
            r = rd.read(&mut chunk) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match next_frame(&buf, limits.max_message) {
                        Frame::Incomplete => break,
                        Frame::KeepAlive(skip, ping) => {
                            buf.drain(..skip);
                            if ping && wr.write_all(b"\r\n").await.is_err() {
                                break 'conn;
                            }
                        }
                        Frame::Message(len) => {
                            let data: Vec<u8> = buf.drain(..len).collect();
                            let msg = StreamIn::Message { peer, transport, data };
                            if to_engine.send(msg).await.is_err() {
                                break 'conn;
                            }
                        }
                        f @ (Frame::TooLarge | Frame::Bad) => {
                            let status = if f == Frame::Bad { 400 } else { 513 };
                            let head_len = buf.len().min(limits.max_message);
                            let head = buf[..head_len].to_vec();
                            let broken = StreamIn::Broken { peer, transport, head, status };
                            let _ = to_engine.send(broken).await;
                            // Let the engine's answer go out before closing.
                            if let Ok(Some(answer)) =
                                tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
                            {
                                let _ = wr.write_all(&answer).await;
                            }
                            break 'conn;
                        }
                    }
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                if wr.write_all(&out).await.is_err() {
                    break;
                }
            }
            () = &mut idle => {
                debug!(%peer, "SIP TCP connection idle: closed");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = to_engine.send(StreamIn::Closed { peer }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16_384;

    #[test]
    fn frames_by_content_length() {
        let msg = b"OPTIONS sip:x SIP/2.0\r\nl: 4\r\nVia: x\r\n\r\nbodyNEXT";
        assert_eq!(next_frame(msg, MAX), Frame::Message(msg.len() - 4));
        let no_len = b"BYE sip:x SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(next_frame(no_len, MAX), Frame::Message(no_len.len()));
        let short = b"INVITE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(next_frame(short, MAX), Frame::Incomplete);
        assert_eq!(
            next_frame(b"INVITE sip:x SIP/2.0\r\nVia", MAX),
            Frame::Incomplete
        );
        let bad = b"INVITE sip:x SIP/2.0\r\nContent-Length: ten\r\n\r\n";
        assert_eq!(next_frame(bad, MAX), Frame::Bad);
        let big = b"INVITE sip:x SIP/2.0\r\nContent-Length: 20000\r\n\r\n";
        assert_eq!(next_frame(big, MAX), Frame::TooLarge);
        assert_eq!(next_frame(&vec![b'a'; MAX + 1], MAX), Frame::TooLarge);
    }

    #[test]
    fn keepalives() {
        assert_eq!(
            next_frame(b"\r\n\r\nOPTIONS", MAX),
            Frame::KeepAlive(4, true)
        );
        assert_eq!(next_frame(b"\r\nOPTIONS", MAX), Frame::KeepAlive(2, false));
        assert_eq!(next_frame(b"\r\n", MAX), Frame::Incomplete);
        assert_eq!(next_frame(b"\r\n\r", MAX), Frame::Incomplete);
        assert_eq!(next_frame(b"\r", MAX), Frame::Incomplete);
        assert_eq!(next_frame(b"", MAX), Frame::Incomplete);
    }
}
