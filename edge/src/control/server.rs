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
use tokio::sync::{broadcast, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::protocol::{
    self, CancelData, MqttData, ReloadData, Request, RequestError, StatusData, StreamData,
};
use super::{ControlContext, ControlError};
use crate::view::{AnnouncementView, CallView, CallbackView, Command};

/// Clients served at once (one-shot commands, and every client until its request is read);
/// one more gets a "busy" error reply and is closed. `events_tail` followers leave this pool
/// once their request is read, so followers never lock the other commands out.
pub const MAX_CLIENTS: usize = 16;
/// `events_tail` followers at once, counted apart from [`MAX_CLIENTS`]; one more gets an error
/// reply naming the limit and is closed.
pub const MAX_FOLLOWERS: usize = 16;
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
    let followers = Arc::new(Semaphore::new(MAX_FOLLOWERS));
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
                        let followers = Arc::clone(&followers);
                        let uid = l.uid;
                        tokio::spawn(async move {
                            serve_client(stream, &ctx, uid, permit, &followers).await;
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

/// Serves one client; `permit` is its place among [`MAX_CLIENTS`], given up when the client
/// turns out to be an `events_tail` follower (which then takes one of [`MAX_FOLLOWERS`]).
async fn serve_client(
    stream: UnixStream,
    ctx: &ControlContext,
    our_uid: u32,
    permit: OwnedSemaphorePermit,
    followers: &Arc<Semaphore>,
) {
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
        let Ok(follower) = Arc::clone(followers).try_acquire_owned() else {
            debug!("control socket: too many events tail followers");
            let msg = format!(
                "busy: {MAX_FOLLOWERS} clients already follow events (ccedge events tail); stop one and try again (other commands still work)"
            );
            let _ = write_all(&mut wr, protocol::error_line(&msg).as_bytes()).await;
            let _ = wr.shutdown().await;
            return;
        };
        drop(permit);
        tail_events(rd, wr, ctx, reveal).await;
        drop(follower);
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
            let rows: Vec<AnnouncementView> = ctx.snapshot.borrow().announcements.clone();
            protocol::ok_line(&rows)
        }
        Request::Calls { reveal } => {
            let calls = ask(ctx, Command::Calls).await?;
            let rows: Vec<CallView> = calls.into_iter().map(|c| call_row(c, reveal)).collect();
            protocol::ok_line(&rows)
        }
        Request::Callbacks { reveal } => {
            let cbs = ask(ctx, Command::Callbacks).await?;
            let rows: Vec<CallbackView> =
                cbs.into_iter().map(|c| callback_row(c, reveal)).collect();
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
    let r = ctx.reloads.borrow().clone();
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
            oversized: link.oversized,
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
        stats: s,
        reloads: ReloadData {
            ok: r.ok,
            failed: r.failed,
            last_at_ms: r.last_at_ms,
            last_ok: r.last_ok,
            last_error: r.last_error,
            restart_pending: r.restart_pending,
        },
        log_write_errors: crate::logsink::write_errors(),
        store_problem: snap.store.problem.clone(),
    }
}

fn masked(n: Option<String>, reveal: bool) -> Option<String> {
    n.map(|n| if reveal { n } else { protocol::mask_number(&n) })
}

/// A call as `ccedge calls` shows it: the caller's number masked unless revealed.
fn call_row(mut c: CallView, reveal: bool) -> CallView {
    c.caller = masked(c.caller, reveal);
    c
}

/// A callback as `ccedge callbacks` shows it: numbers masked unless revealed.
fn callback_row(mut c: CallbackView, reveal: bool) -> CallbackView {
    if !reveal {
        c.callback_number = protocol::mask_number(&c.callback_number);
    }
    c.caller = masked(c.caller, reveal);
    c
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader as StdBufReader, Write as _};
    use std::os::unix::net::UnixStream as StdUnixStream;

    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::control::client;
    use crate::link::LinkStatus;
    use crate::view::Snapshot;

    struct Fixture {
        dir: PathBuf,
        path: PathBuf,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
        events: broadcast::Sender<Arc<str>>,
        _snapshot: watch::Sender<Snapshot>,
        _link: watch::Sender<LinkStatus>,
    }

    /// A server on a fresh socket; `engine` gets the command receiver (dropped: no engine).
    async fn start(tag: &str, engine: impl FnOnce(mpsc::Receiver<Command>)) -> Fixture {
        let dir = std::env::temp_dir().join(format!("ccedge-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run").join("control.sock");
        let (snap_tx, snapshot) = watch::channel(Snapshot {
            calls: 2,
            callbacks_waiting: 1,
            ..Snapshot::default()
        });
        let (link_tx, link_status) = watch::channel(LinkStatus {
            last_error: Some("connection refused".into()),
            outbox_depth: 7,
            ..LinkStatus::default()
        });
        let (commands, rx) = mpsc::channel(8);
        engine(rx);
        let (events, _) = broadcast::channel(16);
        let (stop, shutdown) = watch::channel(false);
        let ctx = ControlContext {
            node_id: "pi-001".into(),
            site: "phl".into(),
            version: "0.0.0-test".into(),
            mqtt_url: "mqtt://127.0.0.1:1".into(),
            sip_addr: "127.0.0.1:5060".parse().unwrap(),
            started_at: crate::clock::wall_now(),
            snapshot,
            commands,
            link_status,
            events: events.clone(),
            reloads: watch::channel(crate::view::ReloadStatus::default()).1,
            shutdown,
        };
        let task = crate::control::serve(&path, ctx).await.unwrap();
        Fixture {
            dir,
            path,
            stop,
            task,
            events,
            _snapshot: snap_tx,
            _link: link_tx,
        }
    }

    impl Fixture {
        async fn ask(&self, req: Request) -> Result<serde_json::Value, client::ClientError> {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || client::request(&path, &req))
                .await
                .unwrap()
        }

        async fn raw(&self, bytes: Vec<u8>) -> String {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut s = StdUnixStream::connect(&path).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                // A huge request is cut off by the server: a failed write is expected.
                let _ = s.write_all(&bytes);
                let mut line = String::new();
                let _ = StdBufReader::new(s).read_line(&mut line);
                line
            })
            .await
            .unwrap()
        }

        async fn finish(self) {
            self.stop.send(true).unwrap();
            self.task.await.unwrap();
            assert!(!self.path.exists(), "socket file left behind");
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test]
    async fn status_reads_the_snapshot_and_link_and_the_socket_is_0660() {
        let f = start("status", drop).await;
        let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let data = f.ask(Request::Status).await.unwrap();
        let s: StatusData = serde_json::from_value(data).unwrap();
        assert_eq!((s.node_id.as_str(), s.site.as_str()), ("pi-001", "phl"));
        assert_eq!(s.active_calls, 2);
        assert_eq!(s.callbacks_waiting, 1);
        assert_eq!(s.outbox_backlog, 7);
        assert_eq!(s.sip_listen, "127.0.0.1:5060");
        assert_eq!(s.mqtt.last_error.as_deref(), Some("connection refused"));
        f.finish().await;
    }

    #[tokio::test]
    async fn an_engine_that_does_not_answer_is_an_error_reply() {
        let f = start("noengine", drop).await;
        match f.ask(Request::Calls { reveal: false }).await {
            Err(client::ClientError::Agent(msg)) => {
                assert!(msg.contains("did not answer"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // And the server still answers.
        assert!(f.ask(Request::Status).await.is_ok());
        f.finish().await;
    }

    #[tokio::test]
    async fn calls_are_masked_unless_revealed_and_cancel_reports_the_engine_answer() {
        let f = start("engine", |mut rx| {
            tokio::spawn(async move {
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        Command::Calls(reply) => {
                            let _ = reply.send(vec![CallView {
                                call_id: "00ab".into(),
                                caller: Some("+12155550123".into()),
                                dialled: Some("+18005550100".into()),
                                state: "menu".into(),
                                age_ms: 1500,
                                codec: Some("PCMU".into()),
                                language: "es".into(),
                                packets_sent: 75,
                                packets_received: 70,
                                lost: 2,
                                jitter_ms: 3,
                                rtcp_reports: 1,
                                peer_lost: 1,
                                peer_fraction_lost: 1,
                                peer_jitter_ms: 4,
                                rtt_ms: Some(12),
                            }]);
                        }
                        Command::Callbacks(reply) => {
                            let _ = reply.send(Vec::new());
                        }
                        Command::CancelCallback { id, reply } => {
                            let _ = reply.send(if id == "cb-1" {
                                Ok(())
                            } else {
                                Err(format!("no waiting callback {id}"))
                            });
                        }
                        // Not asked for by the control socket.
                        Command::CacheState(_) | Command::Reload { .. } => {}
                    }
                }
            });
        })
        .await;
        let masked = f.ask(Request::Calls { reveal: false }).await.unwrap();
        let rows: Vec<CallView> = serde_json::from_value(masked).unwrap();
        assert_eq!(rows[0].caller.as_deref(), Some("+1215•••0123"));
        assert_eq!(rows[0].dialled.as_deref(), Some("+18005550100"));
        assert_eq!(rows[0].language, "es");
        let shown = f.ask(Request::Calls { reveal: true }).await.unwrap();
        assert_eq!(shown[0]["caller"], "+12155550123");
        let ok = f
            .ask(Request::CancelCallback { id: "cb-1".into() })
            .await
            .unwrap();
        assert_eq!(ok["cancelled"], true);
        match f.ask(Request::CancelCallback { id: "cb-9".into() }).await {
            Err(client::ClientError::Agent(msg)) => assert!(msg.contains("cb-9"), "{msg}"),
            other => panic!("{other:?}"),
        }
        f.finish().await;
    }

    #[tokio::test]
    async fn garbage_huge_and_wrong_version_get_error_replies_and_the_server_goes_on() {
        let f = start("garbage", drop).await;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GET / HTTP/1.0\r\n\r\n".to_vec(), "not JSON"),
            (b"{\"v\":9,\"cmd\":\"status\"}\n".to_vec(), "version 9"),
            (
                b"{\"v\":1,\"cmd\":\"rm -rf\"}\n".to_vec(),
                "unknown command",
            ),
            (vec![b'{'; 1024 * 1024], "too large"),
            (vec![0xff, 0xfe, b'\n'], "not JSON"),
        ];
        for (bytes, want) in cases {
            let line = f.raw(bytes).await;
            let reply: protocol::Reply = serde_json::from_str(&line).unwrap();
            assert!(!reply.ok);
            let err = reply.error.unwrap_or_default();
            assert!(err.contains(want), "{want}: {err}");
            assert!(f.ask(Request::Status).await.is_ok());
        }
        f.finish().await;
    }

    #[tokio::test]
    async fn events_tail_streams_masked_events_until_stopped() {
        let f = start("tail", drop).await;
        let path = f.path.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut s = client::EventStream::open(&path, false).unwrap();
            let first = s.next_item().unwrap();
            let end = s.next_item().unwrap();
            (first, end)
        });
        // Publish until the subscriber is there.
        for _ in 0..200 {
            if f.events.receiver_count() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f.events
            .send(Arc::from(
                r#"{"seq":1,"type":"call.offered","call_id":"ab","data":{"caller":"+12155550123"}}"#,
            ))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (stop, task, dir, sock) = (f.stop, f.task, f.dir, f.path);
        stop.send(true).unwrap();
        task.await.unwrap();
        let (first, end) = reader.await.unwrap();
        match first {
            Some(client::StreamItem::Event(ev)) => {
                assert_eq!(ev["type"], "call.offered");
                assert_eq!(ev["data"]["caller"], "+1215•••0123");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(end, None);
        assert!(!sock.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_a_live_agent_or_a_plain_file_is_not() {
        let f = start("stale", drop).await;
        // A second agent on the same path fails clearly.
        let err = ControlListener::bind(&f.path).await.unwrap_err();
        assert!(matches!(err, ControlError::InUse { .. }), "{err}");
        let (dir, path) = (f.dir.clone(), f.path.clone());
        f.finish().await;
        // A socket nobody listens on (an agent killed with -9) is replaced.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let l = ControlListener::bind(&path).await.unwrap();
        drop(l);
        assert!(!path.exists());
        // A regular file is never removed.
        std::fs::write(&path, "precious").unwrap();
        let err = ControlListener::bind(&path).await.unwrap_err();
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_dropped_without_blocking_others() {
        let f = start("idle", drop).await;
        let path = f.path.clone();
        let idle: Vec<StdUnixStream> = (0..MAX_CLIENTS - 1)
            .map(|_| StdUnixStream::connect(&path).unwrap())
            .collect();
        assert!(f.ask(Request::Status).await.is_ok());
        drop(idle);
        f.finish().await;
    }
}
