//! The media plane: one OS thread that sends every call's RTP and reads every call's inbound
//! RTP, apart from the task that reads SIP and runs the node.
//!
//! ## Why a thread of its own
//!
//! A 20 ms frame must leave on time whatever SIP is doing. On the agent's task a pacer tick
//! waited behind SIP datagrams, node timers and store results, and every inbound packet
//! crossed a task wake-up and a channel on its own. Here:
//!
//! * **Precise deadlines.** The thread sleeps with `clock_nanosleep(CLOCK_MONOTONIC,
//!   TIMER_ABSTIME)` until `start + n × 20 ms`, so wake-ups do not drift and are not rounded
//!   to a runtime's millisecond timer wheel. Woken late, it sends the frames it owes (up to
//!   five, then the schedule restarts from now), as before.
//! * **Sends first.** On each wake-up it applies the engine's commands (a playlist asked for
//!   since the last tick starts on this one), sends one frame per sending call
//!   ([`MediaEngine::tick`]), then reads.
//! * **Batched receive.** Every call's socket is registered (level-triggered) with one epoll
//!   instance; after the sends one `epoll_wait` with a zero timeout names the sockets that have
//!   data, and each is read with one `recvmmsg` (up to [`RECV_BATCH`] datagrams). At 50
//!   packets/s per call that is one system call per call per tick, instead of a task wake-up,
//!   a `recvfrom`, a channel send and a `recvfrom` that finds nothing.
//! * **One message per tick to the engine**: the calls whose playlist ended and every datagram
//!   read, in one [`Wake`]. If the engine's queue is full the datagrams are dropped and
//!   counted (`rtp_dropped`), but the "finished" keys are kept for the next tick: a call's IVR
//!   never waits forever for the end of a prompt.
//!
//! Inbound RTP therefore reaches the node up to 20 ms after it arrived (one tick), which is
//! well inside what DTMF (RFC 4733 events last ≥ 40 ms) and media timeouts (seconds) need.
//!
//! ## Sockets and descriptors
//!
//! Still one UDP socket per call, bound to the port named in the call's SDP (symmetric RTP:
//! the call's RTP leaves from the port the gateway sends to). The plane owns it from the
//! call's creation ([`Cmd::Attach`]) to its end ([`Cmd::Detach`], which closes it); the only
//! other descriptor is the epoll instance. Batching *sends* across calls would need shared
//! sockets (one source port for many calls, which breaks what the SDP says) or io_uring; see
//! docs/BENCHMARKS.md for what was measured.
//!
//! No `unsafe` here: the system calls go through `nix`'s safe wrappers.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
use shared::g711::Law;
use shared::rtp::{rtcp, PayloadType};
use tokio::sync::mpsc;

use super::engine::{Audio, MediaEngine, Session, PTIME};

/// Datagrams read from one socket with one `recvmmsg`.
pub const RECV_BATCH: usize = 8;
/// Largest inbound datagram kept (RTP with G.711 20 ms is 172 bytes; the rest is truncated).
pub const RTP_MAX: usize = 512;
/// Ticks' worth of messages the engine may fall behind before datagrams are dropped.
const WAKE_QUEUE: usize = 64;
/// `epoll_wait` rounds per tick (each names up to 1,024 sockets with data).
const MAX_READ_ROUNDS: usize = 16;
/// Most frames sent to catch up after a late wake-up.
const MAX_OWED: u32 = 5;

/// What the engine asks of the plane. Applied at the next tick, in order.
#[derive(Debug)]
pub enum Cmd {
    /// The call's RTP socket: read it from now on (and send on it once started).
    Attach {
        /// The call.
        key: u64,
        /// Its socket, bound to its SDP port.
        socket: UdpSocket,
    },
    /// Start sending (a call starts its media once).
    Start {
        /// The call.
        key: u64,
        /// The negotiated law.
        law: Law,
        /// Its payload type.
        payload_type: PayloadType,
        /// The stream's SSRC and random starting sequence number and timestamp.
        ssrc: u32,
        /// First sequence number.
        seq0: u16,
        /// First timestamp.
        ts0: u32,
        /// Where to send, when known.
        remote: Option<SocketAddr>,
        /// Whether to send (false while on hold or before the ACK).
        send: bool,
        /// Packets sent so far, for `ccedge calls` (updated once per tick).
        sent: Arc<AtomicU64>,
    },
    /// Send to this address from now on.
    Remote {
        /// The call.
        key: u64,
        /// The new address.
        remote: SocketAddr,
    },
    /// Hold (`false`) or resume.
    Sending {
        /// The call.
        key: u64,
        /// Whether to send.
        on: bool,
    },
    /// Replace what plays.
    Play {
        /// The call.
        key: u64,
        /// The segments (empty: silence).
        segments: Vec<Arc<dyn Audio>>,
    },
    /// Stop what plays (silence follows, no "finished").
    StopPlayback {
        /// The call.
        key: u64,
    },
    /// An RTCP sender report (RFC 3550 §6.4.1) with `block` about the peer's stream.
    RtcpReport {
        /// The call.
        key: u64,
        /// Where.
        to: SocketAddr,
        /// The reception report, if any.
        block: Option<rtcp::ReportBlock>,
        /// The wall clock in NTP format.
        ntp: u64,
    },
    /// Stop sending; `bye` sends an RTCP BYE there first.
    Stop {
        /// The call.
        key: u64,
        /// Where the call's reports went.
        bye: Option<SocketAddr>,
    },
    /// Stop reading and close the socket (the port goes back to the pool).
    Detach {
        /// The call.
        key: u64,
    },
}

/// One datagram in a [`RtpBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// The call whose socket it came in on.
    pub key: u64,
    /// Its source.
    pub from: SocketAddr,
    start: u32,
    len: u16,
}

/// Datagrams read during one tick, stored back to back.
#[derive(Debug, Default)]
pub struct RtpBatch {
    datagrams: Vec<Datagram>,
    bytes: Vec<u8>,
}

impl RtpBatch {
    fn push(&mut self, key: u64, from: SocketAddr, data: &[u8]) {
        let data = data.get(..RTP_MAX).unwrap_or(data);
        let Ok(start) = u32::try_from(self.bytes.len()) else {
            return;
        };
        self.bytes.extend_from_slice(data);
        self.datagrams.push(Datagram {
            key,
            from,
            start,
            len: data.len() as u16,
        });
    }

    /// Number of datagrams.
    #[must_use]
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Each datagram with its bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&Datagram, &[u8])> {
        self.datagrams.iter().map(|d| {
            let s = d.start as usize;
            (d, self.bytes.get(s..s + usize::from(d.len)).unwrap_or(&[]))
        })
    }
}

/// What the plane hands the engine after a tick.
#[derive(Debug, Default)]
pub struct Wake {
    /// Calls whose playlist played to its last frame.
    pub finished: Vec<u64>,
    /// What arrived on the calls' sockets.
    pub rtp: RtpBatch,
}

/// Counters the plane keeps for `ccedge status` and the metrics endpoint.
#[derive(Debug, Default)]
pub struct PlaneStats {
    /// Inbound datagrams dropped because the engine fell behind.
    pub rtp_overflow: AtomicU64,
    /// Wake-ups.
    pub ticks: AtomicU64,
    /// How busy the plane's thread was over its last second, in permille: the time it spent
    /// sending, reading and handing over, against the time that passed. (Lateness alone does
    /// not count: a thread that was not scheduled for a while is not overloaded.) The agent refuses new calls above
    /// `rtp.max_pacer_load_percent`.
    pub load_permille: AtomicU64,
    /// Whether the thread runs at real-time priority (`rtp.realtime_priority`).
    pub realtime: std::sync::atomic::AtomicBool,
}

/// Wake-ups per load figure (one second of ticks).
const LOAD_WINDOW: u32 = 50;

/// The plane's load over a window of wake-ups.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    busy: Duration,
    elapsed: Duration,
    wakes: u32,
}

impl Load {
    /// Adds one wake-up: `busy` working, `elapsed` since the previous wake-up. Returns the
    /// window's load in permille when it is complete.
    fn add(&mut self, busy: Duration, elapsed: Duration) -> Option<u64> {
        self.busy += busy;
        self.elapsed += elapsed;
        self.wakes += 1;
        if self.wakes < LOAD_WINDOW {
            return None;
        }
        let l = std::mem::take(self);
        let e = l.elapsed.as_micros().max(1);
        Some(u64::try_from((l.busy.as_micros() * 1000 / e).min(1000)).unwrap_or(1000))
    }
}

/// The handle the engine holds; dropping it stops the thread.
#[derive(Debug)]
pub struct MediaPlane {
    cmds: std_mpsc::Sender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A call's socket as the plane keeps it.
#[derive(Debug)]
struct Attached {
    socket: Arc<UdpSocket>,
}

/// The plane's state, owned by its thread.
struct Plane {
    engine: MediaEngine,
    sockets: HashMap<u64, Attached>,
    epoll: Epoll,
    cmds: std_mpsc::Receiver<Cmd>,
    out: mpsc::Sender<Wake>,
    /// "finished" keys not handed over yet (the engine's queue was full).
    pending_finished: Vec<u64>,
    stats: Arc<PlaneStats>,
    on_tick: Box<dyn Fn(Duration) + Send>,
    events: Vec<EpollEvent>,
    bufs: Box<[[u8; RTP_MAX]; RECV_BATCH]>,
}

impl MediaPlane {
    /// Starts one plane's thread, named `ccedge-media-{n}`. `on_tick` is told how late each
    /// wake-up came (for the metrics); the plane hands its [`Wake`]s to `out`.
    ///
    /// # Errors
    /// When the epoll instance or the thread cannot be created.
    pub fn start(
        n: usize,
        realtime_priority: u8,
        stats: Arc<PlaneStats>,
        on_tick: Box<dyn Fn(Duration) + Send>,
        out_tx: mpsc::Sender<Wake>,
    ) -> std::io::Result<MediaPlane> {
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(std::io::Error::from)?;
        let plane = Plane {
            engine: MediaEngine::new(),
            sockets: HashMap::new(),
            epoll,
            cmds: cmd_rx,
            out: out_tx,
            pending_finished: Vec::new(),
            stats,
            on_tick,
            events: vec![EpollEvent::empty(); 1024],
            bufs: Box::new([[0u8; RTP_MAX]; RECV_BATCH]),
        };
        let thread = std::thread::Builder::new()
            .name(format!("ccedge-media-{n}"))
            .spawn(move || {
                plane.set_priority(n, realtime_priority);
                plane.run();
            })?;
        Ok(MediaPlane {
            cmds: cmd_tx,
            thread: Some(thread),
        })
    }

    /// Hands `cmd` to the plane (applied at its next tick).
    pub fn send(&self, cmd: Cmd) {
        // The thread only stops when this handle is dropped.
        let _ = self.cmds.send(cmd);
    }
}

/// The media planes of the agent: one thread each (`rtp.media_threads`), a call always on the
/// same one (its key modulo their number), one queue of [`Wake`]s to the agent's task.
#[derive(Debug)]
pub struct MediaPlanes {
    planes: Vec<(MediaPlane, Arc<PlaneStats>)>,
}

impl MediaPlanes {
    /// Starts `threads` planes (at least one).
    ///
    /// # Errors
    /// When a plane cannot be started.
    pub fn start(
        threads: usize,
        realtime_priority: u8,
        on_tick: &Arc<dyn Fn(Duration) + Send + Sync>,
    ) -> std::io::Result<(MediaPlanes, mpsc::Receiver<Wake>)> {
        let threads = threads.max(1);
        let (out_tx, out_rx) = mpsc::channel(WAKE_QUEUE * threads);
        let mut planes = Vec::with_capacity(threads);
        for n in 0..threads {
            let stats = Arc::new(PlaneStats::default());
            let tick = Arc::clone(on_tick);
            let plane = MediaPlane::start(
                n,
                realtime_priority,
                Arc::clone(&stats),
                Box::new(move |late| tick(late)),
                out_tx.clone(),
            )?;
            planes.push((plane, stats));
        }
        Ok((MediaPlanes { planes }, out_rx))
    }

    /// Hands `cmd` to the plane of its call.
    pub fn send(&self, cmd: Cmd) {
        let n = self.planes.len() as u64;
        if let Some((p, _)) = self.planes.get((cmd.key() % n.max(1)) as usize) {
            p.send(cmd);
        }
    }

    /// The busiest plane's load over its last second, in permille.
    #[must_use]
    pub fn load_permille(&self) -> u64 {
        self.planes
            .iter()
            .map(|(_, s)| s.load_permille.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Inbound datagrams dropped because the agent's task fell behind.
    #[must_use]
    pub fn rtp_overflow(&self) -> u64 {
        self.planes
            .iter()
            .map(|(_, s)| s.rtp_overflow.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether every plane runs at real-time priority.
    #[must_use]
    pub fn realtime(&self) -> bool {
        self.planes
            .iter()
            .all(|(_, s)| s.realtime.load(Ordering::Relaxed))
    }

    /// Number of planes.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.planes.len()
    }
}

impl Cmd {
    /// The call the command is about.
    #[must_use]
    pub fn key(&self) -> u64 {
        match self {
            Cmd::Attach { key, .. }
            | Cmd::Start { key, .. }
            | Cmd::Remote { key, .. }
            | Cmd::Sending { key, .. }
            | Cmd::Play { key, .. }
            | Cmd::StopPlayback { key }
            | Cmd::RtcpReport { key, .. }
            | Cmd::Stop { key, .. }
            | Cmd::Detach { key } => *key,
        }
    }
}

impl Drop for MediaPlane {
    fn drop(&mut self) {
        // Closing the command channel stops the thread at its next tick (≤ 20 ms).
        let (tx, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.cmds, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn monotonic() -> TimeSpec {
    // CLOCK_MONOTONIC cannot fail on Linux with a valid buffer.
    clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or_else(|_| TimeSpec::new(0, 0))
}

fn span(d: Duration) -> TimeSpec {
    TimeSpec::from_duration(d)
}

impl Plane {
    /// Puts this thread on `SCHED_FIFO` at `priority` (0: stays a normal thread). Without the
    /// right to (no `CAP_SYS_NICE`, no `RLIMIT_RTPRIO`), it says so once and carries on.
    fn set_priority(&self, n: usize, priority: u8) {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        if priority == 0 {
            return;
        }
        let value = match priority.min(99).try_into() {
            Ok(v) => ThreadPriority::Crossplatform(v),
            Err(_) => return,
        };
        let policy = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
        match set_thread_priority_and_policy(thread_native_id(), value, policy) {
            Ok(()) => {
                self.stats.realtime.store(true, Ordering::Relaxed);
                tracing::debug!(
                    thread = n,
                    priority,
                    "media plane thread at real-time priority"
                );
            }
            Err(e) => tracing::warn!(
                thread = n,
                priority,
                error = ?e,
                "media plane thread runs at normal priority: real-time scheduling was refused (the service needs LimitRTPRIO or CAP_SYS_NICE); pacing may suffer on a busy machine"
            ),
        }
    }

    fn run(mut self) {
        // `recvmmsg`'s headers hold raw pointers (not `Send`): made on this thread.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, None);
        let mut next = monotonic() + span(PTIME);
        let mut finished = Vec::new();
        let mut load = Load::default();
        let mut last_wake = monotonic();
        loop {
            // Sleep to the absolute deadline; a signal only restarts the sleep.
            while let Err(Errno::EINTR) = clock_nanosleep(
                ClockId::CLOCK_MONOTONIC,
                ClockNanosleepFlags::TIMER_ABSTIME,
                &next,
            ) {}
            let now = monotonic();
            let late = if now > next {
                Duration::from(now - next)
            } else {
                Duration::ZERO
            };
            (self.on_tick)(late);
            self.stats.ticks.fetch_add(1, Ordering::Relaxed);
            if !self.apply_commands() {
                return;
            }
            let mut owed = 0;
            while next <= now && owed < MAX_OWED {
                self.engine.tick(&mut finished);
                next = next + span(PTIME);
                owed += 1;
            }
            if next <= now {
                next = now + span(PTIME);
            }
            let mut wake = Wake {
                finished: std::mem::take(&mut self.pending_finished),
                rtp: RtpBatch::default(),
            };
            wake.finished.append(&mut finished);
            self.receive(&mut headers, &mut wake.rtp);
            let handover = if wake.finished.is_empty() && wake.rtp.is_empty() {
                None
            } else {
                Some(self.out.try_send(wake))
            };
            let done = monotonic();
            let busy = if done > now {
                Duration::from(done - now)
            } else {
                Duration::ZERO
            };
            let elapsed = if now > last_wake {
                Duration::from(now - last_wake)
            } else {
                Duration::ZERO
            };
            last_wake = now;
            if let Some(permille) = load.add(busy, elapsed) {
                self.stats.load_permille.store(permille, Ordering::Relaxed);
            }
            let Some(handover) = handover else {
                continue;
            };
            match handover {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(w)) => {
                    self.stats
                        .rtp_overflow
                        .fetch_add(w.rtp.len() as u64, Ordering::Relaxed);
                    self.pending_finished = w.finished;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }

    /// Applies what the engine asked since the last tick; `false` when the engine is gone.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.cmds.try_recv() {
                Ok(c) => self.apply(c),
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, c: Cmd) {
        match c {
            Cmd::Attach { key, socket } => {
                let event = EpollEvent::new(EpollFlags::EPOLLIN, key);
                if let Err(e) = self.epoll.add(&socket, event) {
                    tracing::warn!(error = %e, "a call's RTP socket could not be watched: its inbound RTP is lost");
                }
                self.sockets.insert(
                    key,
                    Attached {
                        socket: Arc::new(socket),
                    },
                );
            }
            Cmd::Start {
                key,
                law,
                payload_type,
                ssrc,
                seq0,
                ts0,
                remote,
                send,
                sent,
            } => {
                let Some(a) = self.sockets.get(&key) else {
                    return;
                };
                let session =
                    Session::new(Arc::clone(&a.socket), law, payload_type, ssrc, seq0, ts0)
                        .with_counter(sent);
                self.engine.start(key, session, remote, send);
            }
            Cmd::Remote { key, remote } => self.engine.set_remote(key, remote),
            Cmd::Sending { key, on } => self.engine.set_sending(key, on),
            Cmd::Play { key, segments } => self.engine.play(key, segments),
            Cmd::StopPlayback { key } => self.engine.stop_playback(key),
            Cmd::RtcpReport {
                key,
                to,
                block,
                ntp,
            } => {
                self.engine.send_rtcp_report(key, to, block.as_ref(), ntp);
            }
            Cmd::Stop { key, bye } => {
                if let Some(to) = bye {
                    self.engine.send_rtcp_bye(key, to);
                }
                if let Some(s) = self.engine.stop(key) {
                    tracing::debug!(sent = s.sent(), errors = s.send_errors(), "media stopped");
                }
            }
            Cmd::Detach { key } => {
                self.engine.stop(key);
                if let Some(a) = self.sockets.remove(&key) {
                    let _ = self.epoll.delete(&*a.socket);
                }
            }
        }
    }

    /// Reads what arrived on every call's socket since the last tick.
    fn receive(&mut self, headers: &mut MultiHeaders<SockaddrStorage>, batch: &mut RtpBatch) {
        // Bounded: sockets that keep receiving faster than this (a flood) wait for the next
        // tick, and the sends of the next tick are never held up by reading.
        for _ in 0..MAX_READ_ROUNDS {
            let n = match self.epoll.wait(&mut self.events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            // Fields borrowed apart: no reference count touched per socket.
            let (events, sockets, bufs) = (&self.events, &self.sockets, &mut self.bufs);
            for event in events.iter().take(n) {
                let key = event.data();
                let Some(a) = sockets.get(&key) else {
                    continue;
                };
                // Drain the socket, RECV_BATCH datagrams per call (a socket holding more than
                // a tick's worth is read again at once).
                for _ in 0..4 {
                    if read_batch(&a.socket, key, headers, bufs, batch) < RECV_BATCH {
                        break;
                    }
                }
            }
            if n < self.events.len() {
                return;
            }
        }
    }
}

/// One `recvmmsg` on `socket` into `batch`; returns how many datagrams it read.
fn read_batch(
    socket: &UdpSocket,
    key: u64,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [[u8; RTP_MAX]; RECV_BATCH],
    batch: &mut RtpBatch,
) -> usize {
    use std::os::fd::AsRawFd;
    let mut got = [(0usize, None::<SocketAddr>); RECV_BATCH];
    let mut count = 0;
    {
        // On the stack: no allocation per socket and tick.
        let mut slices: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
            bufs.each_mut().map(|b| [IoSliceMut::new(&mut b[..])]);
        let Ok(results) = recvmmsg(
            socket.as_raw_fd(),
            headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) else {
            return 0;
        };
        for (slot, r) in got.iter_mut().zip(results) {
            *slot = (r.bytes, r.address.and_then(|a| to_std(&a)));
            count += 1;
        }
    }
    for (i, (len, from)) in got.iter().take(count).enumerate() {
        if let (Some(from), Some(buf)) = (from, bufs.get(i)) {
            batch.push(key, *from, buf.get(..*len).unwrap_or(&buf[..]));
        }
    }
    count
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
        .filter(|_| a.family().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::engine::{Tone, FRAME};

    /// The plane's thread paces a call's playlist, reports its end once, and hands over what
    /// the peer sent on the call's socket, tagged with the call and the source.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_frames_reports_finished_and_reads_inbound() {
        let ticks = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&ticks);
        let on_tick: Arc<dyn Fn(Duration) + Send + Sync> = Arc::new(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        // Two planes: call 7 lives on the second.
        let (plane, mut rx) = MediaPlanes::start(2, 0, &on_tick).unwrap();
        assert_eq!(plane.threads(), 2);
        let call = UdpSocket::bind("127.0.0.1:0").unwrap();
        call.set_nonblocking(true).unwrap();
        let call_addr = call.local_addr().unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        plane.send(Cmd::Attach {
            key: 7,
            socket: call,
        });
        plane.send(Cmd::Start {
            key: 7,
            law: Law::Ulaw,
            payload_type: PayloadType::PCMU,
            ssrc: 9,
            seq0: 500,
            ts0: 0,
            remote: Some(peer.local_addr().unwrap()),
            send: true,
            sent: Arc::clone(&sent),
        });
        plane.send(Cmd::Play {
            key: 7,
            segments: vec![Arc::new(Tone(vec![[1; FRAME], [2; FRAME], [3; FRAME]]))],
        });
        // Three audio frames, then silence, with consecutive sequence numbers.
        let mut buf = [0u8; 400];
        let mut got = Vec::new();
        for _ in 0..5 {
            let n = tokio::time::timeout(Duration::from_secs(2), peer.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let p = shared::rtp::RtpPacket::parse(&buf[..n]).unwrap();
            got.push((p.sequence(), p.payload()[0]));
        }
        assert_eq!(
            got,
            [(500, 1), (501, 2), (502, 3), (503, 0xFF), (504, 0xFF)]
        );
        // The peer sends three datagrams to the call's port.
        for b in [b"one".as_slice(), b"two", b"three"] {
            peer.send_to(b, call_addr).await.unwrap();
        }
        let mut finished = Vec::new();
        let mut inbound = Vec::new();
        while inbound.len() < 3 {
            let w = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap()
                .unwrap();
            finished.extend(w.finished);
            for (d, data) in w.rtp.iter() {
                assert_eq!(d.key, 7);
                assert_eq!(d.from, peer.local_addr().unwrap());
                inbound.push(data.to_vec());
            }
        }
        assert_eq!(
            inbound,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(finished, [7], "the end of the playlist, once");
        assert!(sent.load(Ordering::Relaxed) >= 5);
        assert!(ticks.load(Ordering::Relaxed) >= 5);
        // Detached: the port is free again.
        plane.send(Cmd::Detach { key: 7 });
        let mut rebound = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Ok(s) = UdpSocket::bind(call_addr) {
                rebound = Some(s);
                break;
            }
        }
        assert!(rebound.is_some(), "the plane closed the call's socket");
        drop(plane);
        assert!(
            rx.recv().await.is_none(),
            "the thread stopped with its handle"
        );
    }

    #[test]
    fn load_is_busy_time_over_elapsed_time_per_second_of_wakes() {
        let mut l = Load::default();
        let ms = Duration::from_millis;
        for _ in 0..LOAD_WINDOW - 1 {
            assert_eq!(l.add(ms(5), ms(20)), None);
        }
        assert_eq!(l.add(ms(5), ms(20)), Some(250));
        // The next window starts empty.
        for _ in 0..LOAD_WINDOW - 1 {
            assert_eq!(l.add(ms(19), ms(20)), None);
        }
        assert_eq!(l.add(ms(19), ms(20)), Some(950));
        // A late wake-up (a long `elapsed`) with little work is not load.
        for _ in 0..LOAD_WINDOW - 1 {
            l.add(ms(1), ms(20));
        }
        assert_eq!(l.add(ms(1), ms(1020)), Some(25));
    }

    #[test]
    fn a_batch_keeps_each_datagram_with_its_call_and_source() {
        let mut b = RtpBatch::default();
        let a: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let c: SocketAddr = "[::1]:5000".parse().unwrap();
        b.push(1, a, b"abc");
        b.push(2, c, &[7u8; 600]);
        b.push(1, a, b"");
        let v: Vec<_> = b.iter().map(|(d, x)| (d.key, d.from, x.len())).collect();
        assert_eq!(v, [(1, a, 3), (2, c, RTP_MAX), (1, a, 0)]);
        assert_eq!(b.iter().next().unwrap().1, b"abc");
    }
}
