//! The Switchboard hub: WebSocket sessions, rooms and the node-wide broadcaster, as actix actors.
//!
//! # Layout
//! - `cli.rs`: the `switchboard` command line (`main.rs` only calls it).
//! - `config.rs`: [`config::Config`], merged from a TOML file, `SWITCHBOARD_*` variables and flags.
//! - `server.rs`: [`serve`], which runs the hub on an already-bound listener until a shutdown
//!   future resolves; the HTTP wiring and the handshake route.
//! - `node.rs`: [`Node`], the state every worker shares (config, broadcaster, sessions, counters).
//! - `session/`: the `WsSession` actor, one per connection; `session/outbox.rs`, the frames
//!   waiting for its socket; `session/transport.rs`, the handshake, the frame reader and the
//!   writer, and the only user of actix-web-actors.
//! - `worker.rs`: `WorkerRooms`, the rooms of one worker thread.
//! - `room.rs`: the `Room` actor, one per room per worker, fanning out to that worker's members.
//! - `broadcaster.rs`: `Broadcaster`, which workers have members of which room.
//! - `messages.rs`: the messages actors exchange.
//! - `control.rs`: [`Control`], the hub's side of the admin API (`switchboard_admin::Hub`).
//! - `shutdown.rs`: the drain, closing sessions spread over a window.
//! - `metrics.rs`: the Prometheus metrics, resolved once so that hot paths only add to atomics.
//!
//! # The path of a publish
//! The publishing session validates the frame and encodes the outgoing `message` frame once,
//! WebSocket header included. For scope `worker` it hands the frame to its own worker's `Room`;
//! for `node` (and `cluster`, until a cluster broker exists) the broadcaster hands it to the
//! `Room` of every worker with members, so it crosses threads once per worker. Each room pushes
//! the shared frame into its members' outboxes on its own thread, and each member's writer sends
//! what is queued with one vectored write. No queue on this path is unbounded: room mailboxes make
//! publishers wait; a full outbox evicts its session (close 4000).
//!
//! `docs/ACTORS.md` records which actor sends to which, and how.

pub mod cli;
pub mod config;

#[cfg(feature = "bench-support")]
#[doc(hidden)]
pub mod bench_support;

mod broadcaster;
mod broker;
mod codec;
mod control;
mod delivery;
mod events;
mod messages;
pub mod metrics;
mod node;
mod outbox;
mod publish;
mod room;
mod server;
mod session;
mod shutdown;
mod transport;
mod worker;

use std::{
    borrow::Borrow,
    fmt,
    ops::Deref,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

pub use control::Control;
pub use events::{MembershipEvent, MembershipObserver};
pub use node::Node;
pub use server::{bind_listener, serve, serve_node, serve_with_admin};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A session's id, unique within the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) u64);

/// A validated room name, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RoomName(Arc<str>);

impl From<&str> for RoomName {
    fn from(s: &str) -> Self {
        RoomName(Arc::from(s))
    }
}

impl Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Deref for RoomName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
