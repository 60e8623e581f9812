//! The Switchboard hub: WebSocket sessions, rooms and the node-wide broadcaster, as actix actors.
//!
//! # Layout
//! Modules in dependency order: each uses only modules above it (`tests` and the binary aside),
//! so there is no import cycle.
//! - `config.rs`: [`config::Config`], merged from a TOML file, `SWITCHBOARD_*` variables and flags.
//! - `metrics.rs`: the Prometheus metrics, resolved once so that hot paths only add to atomics.
//! - `codec.rs`: WebSocket frames: server frames encoded once into shared bytes, client frames
//!   decoded with the size limit checked on the header. Knows no socket and no session.
//! - `outbox.rs`: `Outbox`, the frames waiting for one session's socket, bounded in frames and bytes.
//! - `events.rs`: [`MembershipEvent`]s and their [`MembershipObserver`]s.
//! - `messages.rs`: the messages actors exchange (`Fanout` to rooms, `Command` to sessions).
//! - `room.rs`: the `Room` actor, one per room per worker, fanning out to that worker's members.
//! - `broadcaster.rs`: `Broadcaster`, which workers have members of which room; raises
//!   "room active" and "room idle" for the node.
//! - `history.rs`: room logs, the one order of a history room's messages on the node (and
//!   standalone, its history), which workers pull from.
//! - `delivery.rs`: `Delivery`, a frame handed to room actors, with the one wait policy.
//! - `presence.rs`: who is in the rooms that track members; `join` and `leave` frames.
//! - `broker.rs`: the `Broker` seam behind `cluster` scope, and `LocalBroker`, its standalone form.
//! - `node.rs`: [`Node`], the state every worker shares (config, broadcaster, broker, sessions).
//! - `worker.rs`: `WorkerRooms`, the rooms, sessions and heartbeat of one worker thread: the one
//!   owner of membership (every join and every leave, however a session ends).
//! - `publish.rs`: the one publish path, the only code that reads a publish's scope.
//! - `transport/`: the handshake (a typed refusal or an accepted session), the refusal's raw
//!   HTTP response, the reader and the writer. Knows no session.
//! - `session/`: the `WsSession` actor, one per connection; `session/connection.rs` runs it in
//!   its actix-web-actors context, the only use of that crate.
//! - `control.rs`: [`Control`], the hub's side of the admin API (`switchboard_admin::Hub`).
//! - `shutdown.rs`: the drain, closing sessions spread over a window.
//! - `pages.rs`: the embedded JavaScript client (`/client/switchboard.js`) and demo pages.
//! - `server.rs`: [`serve`], which runs the hub on an already-bound listener until a shutdown
//!   future resolves; the HTTP wiring and the upgrade hook.
//! - `cli/`: `switchboard serve`, `health`, and the client commands `sub` and `pub` (`main.rs`
//!   adds `switchboard bench`, feature `bench`).
//!
//! # The path of a publish
//! A session validates the frame and hands the publish to `publish.rs`, as the relay and the
//! admin API do. There it is checked against the message limit and encoded once, WebSocket
//! header included. Scope `worker` goes to the publisher's own worker's members; `node` goes to
//! them and, through the broadcaster, to the `Room` actor of every other worker with members, so
//! the frame crosses threads once per worker; `cluster` goes to the node's broker, which for a
//! standalone node is the same as `node`. On its own worker the publisher pushes the shared frame
//! into the members' outboxes itself (while the room is in direct mode, see `room::Mode`); on
//! other workers each room does, on its own thread. Each member's writer sends what is queued
//! with one write. No queue on this path is unbounded: room mailboxes make publishers
//! wait; a full outbox evicts its session (close 4000).
//!
//! # Membership
//! A session joins and leaves rooms through its worker's `WorkerRooms`, synchronously (exact when
//! the ack goes out), and every way a session ends (close, disconnect, eviction, kick, heartbeat
//! time-out, token expiry, shutdown) ends in `WorkerRooms::close`. Rooms never change membership
//! themselves: an evicted member is refused further frames until its session's end removes it.
//!
//! `docs/ACTORS.md` records which actor sends to which, and how.

pub mod cli;
pub mod config;

#[cfg(feature = "bench-support")]
#[doc(hidden)]
pub mod bench_support;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod broadcaster;
mod broker;
mod cluster;
mod codec;
mod control;
mod deflate;
mod delivery;
mod events;
mod history;
mod limits;
mod messages;
pub mod metrics;
mod node;
mod outbox;
mod pages;
mod presence;
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

/// FNV-1a, 64 bits: fixed across builds and machines, so every node computes the same value
/// (a room's Redis instance, see `cluster`), and a file's validator changes only with the file.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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

#[cfg(test)]
mod tests {
    /// Every node must shard rooms alike: the published FNV-1a 64 test vectors.
    #[test]
    fn fnv1a_is_the_standard_64_bit_hash() {
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
