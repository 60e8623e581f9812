//! Membership events: the moments that clustering, presence and history build on.
//!
//! Each worker's [`crate::worker::WorkerRooms`] is the one owner of its sessions' memberships, and
//! the node's [`crate::broadcaster::Broadcaster`] sees every worker's rooms; between them they
//! raise each event exactly once per transition:
//! - [`MembershipEvent::RoomActive`]: a room got its first member on this node (on any worker);
//! - [`MembershipEvent::MemberJoined`] / [`MembershipEvent::MemberLeft`]: a session joined or
//!   left a room, however it left (unsubscribe, close, disconnect, eviction, kick, time-out,
//!   token expiry, shutdown);
//! - [`MembershipEvent::RoomIdle`]: the room's last member on this node is gone.
//!
//! For one room, events arrive in the order of the transitions: `RoomActive`, then joins and
//! leaves, then `RoomIdle`, and so on. Relay rooms appear under their internal key, which starts
//! with a NUL byte.

use std::{fmt, sync::Arc};

/// One membership transition on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipEvent<'a> {
    /// The room has a member on this node again (it had none).
    RoomActive { room: &'a str },
    /// The room has no member left on this node.
    RoomIdle { room: &'a str },
    /// A session joined the room.
    MemberJoined {
        room: &'a str,
        /// The session's id as clients see it.
        session: &'a str,
        /// The session's user (its token's `sub`), when it has one.
        user: Option<&'a str>,
        worker: usize,
    },
    /// A session left the room.
    MemberLeft {
        room: &'a str,
        session: &'a str,
        user: Option<&'a str>,
        worker: usize,
    },
}

/// Something that wants to hear of membership transitions (a cluster broker, presence).
///
/// Called on the thread where the transition happened, synchronously; `RoomActive` and
/// `RoomIdle` are raised while the node's room table is locked for that room, which is what
/// keeps them in order across workers. So an observer must be quick and must not block: it
/// records or hands the event on (a bounded channel, a coalescing set), nothing more.
pub trait MembershipObserver: Send + Sync + fmt::Debug {
    fn event(&self, event: &MembershipEvent<'_>);
}

/// The observers of one node, fixed when the node is built.
#[derive(Debug, Clone)]
pub(crate) struct Observers(Arc<[Arc<dyn MembershipObserver>]>);

impl Default for Observers {
    fn default() -> Self {
        Observers::new(Vec::new())
    }
}

impl Observers {
    pub(crate) fn new(observers: Vec<Arc<dyn MembershipObserver>>) -> Self {
        Observers(observers.into())
    }

    pub(crate) fn raise(&self, event: MembershipEvent<'_>) {
        for observer in self.0.iter() {
            observer.event(&event);
        }
    }

    /// False when nobody listens, so that callers can skip building events.
    pub(crate) fn any(&self) -> bool {
        !self.0.is_empty()
    }
}
