//! The agent's side of the control socket: a Unix listener, one task per client, each
//! answering one request from the engine's snapshot, link status or a [`Command`].

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::protocol::{
    self, AnnouncementRow, CallRow, CallbackRow, CancelData, MqttData, Request, RequestError,
    StatsData, StatusData, StreamData,
};
use super::{ControlContext, ControlError};
use crate::agent::{AnnouncementView, CallView, CallbackView, Command};

/// Clients served at once; one more gets a "busy" error reply and is closed.
pub const MAX_CLIENTS: usize = 16;
/// Time a client has to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the engine has to answer a [`Command`].
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);
/// Time a reply (or one streamed event) has to be taken by the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long binding waits for an existing socket's owner to answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A bound control socket, not yet serving (bind before starting the agent, so a second
/// agent on the same socket fails before it touches anything else).
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode, to remove only our own file on shutdown.
    ino: u64,
    /// The uid allowed besides root: the one the socket file belongs to (our effective uid).
    uid: u32,
}

impl ControlListener {
    /// Binds `path`: creates its directory when missing, removes a stale socket left by an
    /// agent that died (one nothing answers on), binds, and sets mode 0660.
    ///
    /// # Errors
    /// [`ControlError::InUse`] when another agent answers on `path`,
    /// [`ControlError::NotASocket`] when `path` is some other file (never removed), and
    /// [`ControlError::Io`] when the directory, the bind or the permissions fail.
    pub async fn bind(path: &Path) -> Result<ControlListener, ControlError> {
        let io_err = |what: &'static str| {
            let path = path.to_path_buf();
            move |source: io::Error| ControlError::Io { what, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err("cannot create the directory of"))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                let probe = tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await;
                match probe {
                    Ok(Ok(_)) | Err(_) => {
                        return Err(ControlError::InUse {
                            path: path.to_path_buf(),
                        })
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                        return Err(io_err("cannot probe the existing socket")(e))
                    }
                    Ok(Err(_)) => {
                        info!(socket = %path.display(), "removing a stale control socket");
                        std::fs::remove_file(path)
                            .map_err(io_err("cannot remove the stale socket"))?;
                    }
                }
            }
            Ok(_) => {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot inspect")(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err("cannot bind"))?;
        // The window between bind and chmod is covered by the peer uid check.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(io_err("cannot set the permissions of"))?;
        let meta = std::fs::metadata(path).map_err(io_err("cannot inspect"))?;
        Ok(ControlListener {
            listener,
            path: path.to_path_buf(),
            ino: meta.ino(),
            uid: meta.uid(),
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts serving: the task ends (and removes the socket file) when `ctx.shutdown`
    /// turns `true` or its sender is dropped. A listener dropped without serving removes its
    /// socket file too.
    #[must_use]
    pub fn serve(self, ctx: ControlContext) -> JoinHandle<()> {
        tokio::spawn(accept_loop(self, Arc::new(ctx)))
    }
}

async fn accept_loop(l: ControlListener, ctx: Arc<ControlContext>) {
    info!(socket = %l.path.display(), "control socket listening");
    let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut shutdown = ctx.shutdown.clone();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = l.listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = Arc::clone(&ctx);
                        let uid = l.uid;
                        tokio::spawn(async move {
                            serve_client(stream, &ctx, uid).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        debug!("control socket busy: refusing a client");
                        // A fresh socket's send buffer is empty: this does not block.
                        let _ = stream.try_write(
                            protocol::error_line("busy: too many control clients, try again")
                                .as_bytes(),
                        );
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(l);
    info!("control socket closed");
}

impl Drop for ControlListener {
    /// Removes the socket file, but only when it is still the one this listener bound (a
    /// newer agent may have replaced it).
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn serve_client(stream: UnixStream, ctx: &ControlContext, our_uid: u32) {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == our_uid || cred.uid() == 0 => {}
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                "control socket: refused a client of another user"
            );
            let msg = format!(
                "permission denied: uid {} may not use this agent's control socket (run as uid {our_uid} or root)",
                cred.uid()
            );
            let _ = write_line(&stream, &protocol::error_line(&msg)).await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "control socket: no peer credentials");
            return;
        }
    }
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let request = match read_request(&mut rd).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            debug!(error = %e, "control socket: bad request");
            let _ = write_all(&mut wr, protocol::error_line(&e.to_string()).as_bytes()).await;
            return;
        }
    };
    debug!(cmd = request.cmd(), "control request");
    if let Request::EventsTail { reveal } = request {
        tail_events(rd, wr, ctx, reveal).await;
        return;
    }
    let line = match answer(ctx, request).await {
        Ok(line) => line,
        Err(e) => protocol::error_line(&e),
    };
    let _ = write_all(&mut wr, line.as_bytes()).await;
    let _ = wr.shutdown().await;
}

/// Reads one request line (at most [`protocol::MAX_REQUEST_BYTES`], within
/// [`REQUEST_TIMEOUT`]); `None` when the client left without sending anything.
async fn read_request(rd: &mut BufReader<OwnedReadHalf>) -> Result<Option<Request>, RequestError> {
    let mut buf = Vec::new();
    let cap = u64::try_from(protocol::MAX_REQUEST_BYTES).unwrap_or(u64::MAX);
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut *rd).take(cap).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| RequestError::Timeout)?;
    if read.is_err() {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() >= protocol::MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge);
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
    }
    Request::parse(&buf).map(Some)
}

async fn write_all(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not read"))?
}

async fn write_line(stream: &UnixStream, line: &str) -> io::Result<()> {
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        tokio::time::timeout(WRITE_TIMEOUT, stream.writable())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not read"))??;
        match stream.try_write(rest) {
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The reply line to a one-shot request, or the error text.
async fn answer(ctx: &ControlContext, request: Request) -> Result<String, String> {
    Ok(match request {
        Request::Status => protocol::ok_line(&status(ctx)),
        Request::Announcements => {
            let rows: Vec<AnnouncementRow> = ctx
                .snapshot
                .borrow()
                .announcements
                .iter()
                .map(announcement_row)
                .collect();
            protocol::ok_line(&rows)
        }
        Request::Calls { reveal } => {
            let calls = ask(ctx, Command::Calls).await?;
            let rows: Vec<CallRow> = calls.into_iter().map(|c| call_row(c, reveal)).collect();
            protocol::ok_line(&rows)
        }
        Request::Callbacks { reveal } => {
            let cbs = ask(ctx, Command::Callbacks).await?;
            let rows: Vec<CallbackRow> = cbs.into_iter().map(|c| callback_row(c, reveal)).collect();
            protocol::ok_line(&rows)
        }
        Request::CancelCallback { id } => {
            let reply = ask(ctx, |reply| Command::CancelCallback {
                id: id.clone(),
                reply,
            })
            .await?;
            reply?;
            info!(callback = %id, "callback cancelled from the control socket");
            protocol::ok_line(&CancelData {
                callback_id: id,
                cancelled: true,
            })
        }
        Request::EventsTail { .. } => return Err("events_tail streams; not a one-shot".into()),
    })
}

/// Sends a command to the engine and waits (bounded) for its answer.
async fn ask<T>(
    ctx: &ControlContext,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, String> {
    const NO_ANSWER: &str = "the agent's engine did not answer (busy or shutting down); try again";
    let (tx, rx) = oneshot::channel();
    ctx.commands
        .send_timeout(make(tx), ENGINE_TIMEOUT)
        .await
        .map_err(|_| NO_ANSWER.to_owned())?;
    match tokio::time::timeout(ENGINE_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) | Err(_) => Err(NO_ANSWER.to_owned()),
    }
}

fn status(ctx: &ControlContext) -> StatusData {
    let snap = ctx.snapshot.borrow().clone();
    let link = ctx.link_status.borrow().clone();
    let now = crate::clock::wall_now().0;
    let started_at_ms = if snap.started_at_ms > 0 {
        snap.started_at_ms
    } else {
        ctx.started_at.0
    };
    let uptime_ms = u64::try_from(now.saturating_sub(started_at_ms)).unwrap_or(0);
    let s = snap.stats;
    StatusData {
        node_id: ctx.node_id.clone(),
        site: ctx.site.clone(),
        version: ctx.version.clone(),
        pid: std::process::id(),
        started_at_ms,
        uptime_s: uptime_ms / 1000,
        sip_listen: snap.sip_addr.unwrap_or(ctx.sip_addr).to_string(),
        mqtt: MqttData {
            url: ctx.mqtt_url.clone(),
            connected: link.connected,
            since_ms: link.since_ms,
            last_error: link.last_error,
            outbox_depth: link.outbox_depth,
            outbox_dropped: link.outbox_dropped,
            last_seq: link.last_seq,
            acked_seq: link.acked_seq,
            events_published: link.events_published,
            rejected: link.rejected,
            last_rejection: link.last_rejection,
        },
        active_calls: u64::try_from(snap.calls).unwrap_or(u64::MAX),
        callbacks_waiting: u64::from(snap.callbacks_waiting),
        outbox_backlog: link.outbox_depth,
        announcements_active: u64::try_from(
            snap.announcements
                .iter()
                .filter(|a| a.state == "active")
                .count(),
        )
        .unwrap_or(u64::MAX),
        announcements_total: u64::try_from(snap.announcements.len()).unwrap_or(u64::MAX),
        draining: snap.draining,
        stats: StatsData {
            sip_denied: s.sip_denied,
            sip_rate_limited: s.sip_rate_limited,
            sip_malformed: s.sip_malformed,
            calls_total: s.calls_total,
            calls_refused: s.calls_refused,
            callbacks_booked: s.callbacks_booked,
            callbacks_failed: s.callbacks_failed,
            rtp_dropped: s.rtp_dropped,
        },
    }
}

fn masked(n: Option<String>, reveal: bool) -> Option<String> {
    n.map(|n| if reveal { n } else { protocol::mask_number(&n) })
}

fn call_row(c: CallView, reveal: bool) -> CallRow {
    CallRow {
        call_id: c.call_id,
        caller: masked(c.caller, reveal),
        dialled: c.dialled,
        state: c.state,
        age_ms: c.age_ms,
        codec: c.codec.map(str::to_owned),
        packets_sent: c.packets_sent,
        packets_received: c.packets_received,
    }
}

fn callback_row(c: CallbackView, reveal: bool) -> CallbackRow {
    CallbackRow {
        callback_id: c.callback_id,
        callback_number: if reveal {
            c.callback_number
        } else {
            protocol::mask_number(&c.callback_number)
        },
        caller: masked(c.caller, reveal),
        dialled: c.dialled,
        requested_at_ms: c.requested_at_ms,
        state: c.state.to_owned(),
        position: c.position,
        announcement_id: c.announcement_id,
    }
}

fn announcement_row(a: &AnnouncementView) -> AnnouncementRow {
    AnnouncementRow {
        id: a.id.clone(),
        version: a.version,
        state: a.state.to_owned(),
        priority: a.priority,
        sites: a.sites.clone(),
        dialled: a.dialled.clone(),
        caller_prefixes: a.caller_prefixes.clone(),
        audio_sha256: a.audio_sha256.clone(),
        audio_present: a.audio_present,
        valid_from_ms: a.valid_from_ms,
        valid_until_ms: a.valid_until_ms,
    }
}

/// Streams call events to one client until it leaves, is too slow, or the agent stops.
async fn tail_events(
    mut rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    ctx: &ControlContext,
    reveal: bool,
) {
    let mut events = ctx.events.subscribe();
    let mut shutdown = ctx.shutdown.clone();
    let head = protocol::ok_line(&StreamData {
        stream: "events".to_owned(),
    });
    if write_all(&mut wr, head.as_bytes()).await.is_err() {
        return;
    }
    let mut scratch = [0u8; 512];
    loop {
        let line = tokio::select! {
            ev = events.recv() => match ev {
                Ok(json) => match event_line(&json, reveal) {
                    Some(line) => line,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => protocol::lagged_line(n),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // Anything the client sends after its request is ignored; EOF means it left.
            n = rd.read(&mut scratch) => match n {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        if write_all(&mut wr, line.as_bytes()).await.is_err() {
            debug!("events tail client left or stalled");
            break;
        }
    }
}

/// One event as a line for a client: masked unless revealed; one line even if the JSON held
/// a raw newline (it cannot, but a line protocol must not trust that).
fn event_line(json: &str, reveal: bool) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    if !reveal {
        protocol::mask_numbers_in(&mut value);
    }
    let mut line = value.to_string();
    line.push('\n');
    Some(line)
}
