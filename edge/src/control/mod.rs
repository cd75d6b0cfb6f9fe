//! The control socket and the technician commands that use it (`ccedge status`, `calls`,
//! `callbacks`, `announcements`, `events tail`, `doctor`).
//!
//! ```text
//!   ccedge status ──{"v":1,"cmd":"status"}──▶ control.sock ──▶ server task
//!                ◀─{"v":1,"ok":true,"data":…}─               ├─ snapshot / link status (watch)
//!                                                            ├─ Command ──▶ engine (oneshot back)
//!                                                            └─ events (broadcast) for events tail
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`protocol`] | the versioned line protocol and the reply data types (stable field names) |
//! | [`server`] | the agent side: bind (stale socket, 0660), peer uid check, one task per client |
//! | [`client`] | the CLI side: blocking, with timeouts; "no agent running" is its own error |
//! | [`render`] | readable tables for the terminal |
//! | [`doctor`] | `ccedge doctor`: installation checks that work with or without an agent |
//!
//! ## Security
//! The socket is created mode 0660 (group members may connect, which is what lets a
//! technician's shell reach it through the file system), and every client's uid is checked
//! with `SO_PEERCRED`: only the agent's own uid and root are answered; anyone else gets an
//! error reply and is logged. Caller and callback numbers are masked by the agent unless the
//! request says `"reveal":true`.
//!
//! ## Bounds
//! One request line of at most [`protocol::MAX_REQUEST_BYTES`], read within
//! [`server::REQUEST_TIMEOUT`]; at most [`server::MAX_CLIENTS`] clients at once, plus at most
//! [`server::MAX_FOLLOWERS`] `events_tail` followers counted apart (so followers never lock out
//! `status` and the other commands; one follower too many gets an error reply); the engine
//! answers within [`server::ENGINE_TIMEOUT`] or the client is told it did not; a client that
//! stops reading is dropped after [`server::WRITE_TIMEOUT`]. Garbage gets an error reply and
//! the connection is closed; the agent is unaffected.

pub mod client;
pub mod doctor;
pub mod protocol;
pub mod render;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::time::UnixMillis;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

pub use server::ControlListener;

use crate::link::LinkStatus;
use crate::view::{Command, ReloadStatus, Snapshot};

/// What the control server reads and whom it asks.
#[derive(Debug)]
pub struct ControlContext {
    /// `node.id`.
    pub node_id: String,
    /// `node.site`.
    pub site: String,
    /// The agent's version.
    pub version: String,
    /// `mqtt.url` as configured.
    pub mqtt_url: String,
    /// The bound SIP address (used until the snapshot carries one).
    pub sip_addr: SocketAddr,
    /// When the agent started (used until the snapshot carries one).
    pub started_at: UnixMillis,
    /// The engine's snapshots.
    pub snapshot: watch::Receiver<Snapshot>,
    /// Requests the engine answers (calls, callbacks, cancel).
    pub commands: mpsc::Sender<Command>,
    /// The CRM link's state.
    pub link_status: watch::Receiver<LinkStatus>,
    /// Call events as published, for `events tail`.
    pub events: broadcast::Sender<Arc<str>>,
    /// Configuration reloads (`SIGHUP`) so far.
    pub reloads: watch::Receiver<ReloadStatus>,
    /// Turns `true` (or its sender is dropped) to close the socket.
    pub shutdown: watch::Receiver<bool>,
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another agent answers on the socket.
    #[error("another ccedge agent is running on control socket {} (stop it, or give this one another control.socket)", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The path exists and is not a socket; it is left alone.
    #[error("control socket {} exists and is not a socket (remove it or change control.socket)", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file-system or socket failure.
    #[error("control socket {}: {what}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Binds the control socket at `path` and serves it until `ctx.shutdown`; the task removes
/// the socket file when it ends.
///
/// # Errors
/// As [`ControlListener::bind`].
pub async fn serve(path: &Path, ctx: ControlContext) -> Result<JoinHandle<()>, ControlError> {
    Ok(ControlListener::bind(path).await?.serve(ctx))
}
