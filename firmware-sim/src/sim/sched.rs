//! The virtual clock's agenda: every future happening of the simulated world, ordered by time
//! and then by the order it was scheduled in (so two happenings at the same instant always
//! run in the same order), and the datagrams the simulated network carries.

use alloc::collections::BTreeMap;
use core::net::SocketAddr;

use shared::callback::{CrmState, Entry};
use shared::ivr::Playlist;
use shared::time::{Duration, Instant};

use super::crm::{Down, Up};

/// What a datagram carries.
// Moved once through the agenda; the playlist stays inline like the core's own outputs.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// A SIP datagram.
    Sip(Vec<u8>),
    /// An RTP datagram.
    Rtp(Vec<u8>),
    /// The audio of a playlist as the caller hears it (stands for the RTP audio stream, which
    /// the simulator does not packetize).
    Audio(Playlist),
}

/// One datagram in flight.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) msg: Msg,
}

/// A gateway-side timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GwTimer {
    /// Retransmit (or give up) client transaction `tx`.
    Retransmit { tx: u32 },
    /// The caller's next planned action (valid while `gen` is current).
    Act { gen: u32 },
    /// Send the next sparse audio packet.
    Audio,
    /// The caller's patience ran out: hang up (or cancel while ringing).
    HangUp,
    /// Cancel while ringing.
    Cancel,
    /// Put on hold / take off hold.
    Hold(bool),
    /// The gateway dies for this call: it sends and answers nothing more.
    Die,
    /// Heard nothing for too long: give up.
    Silence { gen: u32 },
}

/// A durable write the node started.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum DiskOp {
    /// Write the callback record (`callback::Output::Store`).
    StoreCallback { id: String, entry: Entry },
    /// Persist a new seq high-water mark.
    SeqMark(u64),
}

/// Everything that can happen.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    /// A datagram arrives.
    Packet(Packet),
    /// A gateway places its next call.
    PlaceCall,
    /// A gateway call's timer.
    Gw { call: u64, timer: GwTimer },
    /// A gateway sends its OPTIONS keepalive.
    OptionsTick { gw: usize },
    /// Someone on the network sends garbage to the node's SIP port.
    JunkTick,
    /// The node's deadline (from `Node::poll_timeout`), armed in process life `epoch`.
    NodeTimer { epoch: u32, at: Instant },
    /// The pacer's 20 ms tick for every call that plays, armed in process life `epoch`.
    PlayTick { epoch: u32 },
    /// A durable write finished (data is on disk).
    DiskDone { epoch: u32, op: DiskOp, ok: bool },
    /// The node process dies.
    NodeCrash,
    /// The node process starts again.
    NodeRestart,
    /// The node tries to connect to the broker.
    NodeConnect { epoch: u32 },
    /// The node notices its broker connection is gone.
    NodeConnLost { epoch: u32, conn: u64 },
    /// The node publishes its status.
    NodeStatusTick { epoch: u32 },
    /// A message from the node reaches the broker.
    ToBroker { conn: u64, msg: Up },
    /// A message from the broker reaches the node.
    ToNode { conn: u64, msg: Down },
    /// A message from the broker reaches the CRM.
    BrokerToCrm { bgen: u64, msg: Up },
    /// A message from the CRM reaches the broker.
    CrmToBroker { bgen: u64, msg: Down },
    /// The broker dies.
    BrokerDown,
    /// The broker is back.
    BrokerUp,
    /// The CRM's periodic work (acks, replay requests, retries).
    CrmTick,
    /// The CRM moves a callback on.
    CrmCallback { id: String, state: CrmState },
    /// The CRM changes its announcements.
    AnnChurn,
}

impl Ev {
    /// A short stable tag for the trace hash.
    pub(crate) fn tag(&self) -> u64 {
        match self {
            Ev::Packet(p) => {
                let k = match &p.msg {
                    Msg::Sip(d) | Msg::Rtp(d) => d.len() as u64,
                    Msg::Audio(pl) => 10_000 + pl.len() as u64,
                };
                1 + (k << 8) + (u64::from(p.to.port()) << 32)
            }
            Ev::PlaceCall => 2,
            Ev::Gw { call, .. } => 3 + (call << 8),
            Ev::OptionsTick { gw } => 4 + ((*gw as u64) << 8),
            Ev::JunkTick => 5,
            Ev::NodeTimer { at, .. } => 6 + (at.as_micros() << 8),
            Ev::PlayTick { .. } => 7,
            Ev::DiskDone { ok, .. } => 8 + (u64::from(*ok) << 8),
            Ev::NodeCrash => 9,
            Ev::NodeRestart => 10,
            Ev::NodeConnect { .. } => 11,
            Ev::NodeConnLost { conn, .. } => 12 + (conn << 8),
            Ev::NodeStatusTick { .. } => 13,
            Ev::ToBroker { conn, .. } => 15 + (conn << 8),
            Ev::ToNode { conn, .. } => 16 + (conn << 8),
            Ev::BrokerToCrm { bgen, .. } => 17 + (bgen << 8),
            Ev::CrmToBroker { bgen, .. } => 18 + (bgen << 8),
            Ev::BrokerDown => 19,
            Ev::BrokerUp => 20,
            Ev::CrmTick => 21,
            Ev::CrmCallback { .. } => 22,
            Ev::AnnChurn => 23,
        }
    }
}

/// The agenda: a map from (time, order of scheduling) to the happening. Happenings are boxed
/// so the map's nodes move pointers, not kilobyte-sized values.
#[derive(Debug, Default)]
pub(crate) struct Sched {
    queue: BTreeMap<(Instant, u64), Box<Ev>>,
    counter: u64,
}

impl Sched {
    /// Schedules `ev` at `at`.
    pub(crate) fn at(&mut self, at: Instant, ev: Ev) {
        self.counter += 1;
        self.queue.insert((at, self.counter), Box::new(ev));
    }

    /// Schedules `ev` `after` from `now`.
    pub(crate) fn after(&mut self, now: Instant, after: Duration, ev: Ev) {
        self.at(now + after, ev);
    }

    /// The earliest happening, removed from the agenda.
    pub(crate) fn pop(&mut self) -> Option<(Instant, Ev)> {
        self.queue.pop_first().map(|((t, _), ev)| (t, *ev))
    }

    /// Happenings waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
