//! `edge`: the tokio shell around the `shared` core — the `ccedge` daemon and CLI.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | the TOML + environment configuration, validated with errors that name the key |
//! | [`agent`] | the daemon: SIP socket, call table, timers, wiring of media and storage |
//! | [`media`] | prompts and announcement audio (WAV → 8 kHz G.711 frames) and the RTP pacer |
//! | [`link`] | the CRM link over MQTT: announcements in, events and callbacks out, presence |
//! | [`store`] | durable local storage: the callback queue and node counters (SQLite) |
//! | [`cli`] | the `ccedge` command line (`agent`, `config check`, technician commands) |
//! | [`control`] | the control socket (agent side) and the technician commands' client, tables and `doctor` |
//! | [`clock`] | the one conversion between tokio time and `shared::Instant` |
//! | [`reload`] | `SIGHUP`: re-reads the configuration and applies what can change while calls are up |
//! | [`metrics`] | the Prometheus / OpenMetrics endpoint (`metrics.listen`): what the engine records, the HTTP server |
//! | [`logsink`] | the log's writer to standard error, which never fails the agent |
//!
//! ## Run loop
//!
//! Every core machine is driven the same way: `handle_*`, drain `poll_output`, re-arm one
//! timer from `poll_timeout` (see the `shared` crate docs). The agent owns all calls in one
//! task, so the core needs no locks.
//!
//! ## Time
//!
//! `shared` never reads a clock. [`clock::Clock`] turns `tokio::time::Instant` into
//! `shared::Instant` (microseconds since the agent started) and back, and gives wall-clock
//! `UnixMillis` for event timestamps; nothing else in `edge` converts time.

pub mod agent;
pub mod announcements;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod link;
pub mod logsink;
pub mod media;
pub mod metrics;
pub mod reload;
pub mod store;
pub mod view;
pub mod zone;
