//! The node-wide [`Broadcaster`]: which workers have members of which room.
//!
//! It is the node's view of membership: each worker's [`crate::worker::WorkerRooms`] registers
//! here when a room gets its first member on that worker and unregisters when it loses its last.
//! The first registration of a room on the node raises [`MembershipEvent::RoomActive`] and the
//! last unregistration [`MembershipEvent::RoomIdle`], both under the map's lock for that room,
//! so that two workers joining and leaving at the same moment still produce one transition each,
//! in order.
//!
//! A worker writes only its own slot of a room's entry, so no two threads race on one slot.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use actix::Addr;
use dashmap::DashMap;

use crate::{
    events::{MembershipEvent, Observers},
    room::Room,
    RoomName,
};

/// Routes node-wide deliveries to the per-worker rooms that have members.
#[derive(Debug, Default)]
pub(crate) struct Broadcaster {
    rooms: DashMap<RoomName, Vec<WorkerRoom>>,
    observers: Observers,
}

/// One worker's room actor for a room, with its member count there.
#[derive(Debug)]
struct WorkerRoom {
    worker: usize,
    addr: Addr<Room>,
    members: MemberCount,
}

/// A worker's member count of one room, kept by that worker on join and leave (never per
/// message), read by the admin API.
pub(crate) type MemberCount = Arc<AtomicUsize>;

impl Broadcaster {
    pub(crate) fn new(observers: Observers) -> Self {
        Broadcaster {
            rooms: DashMap::new(),
            observers,
        }
    }

    /// Records that `worker` now has members of `room`, served by `addr`.
    pub(crate) fn register(
        &self,
        room: RoomName,
        worker: usize,
        addr: Addr<Room>,
        members: MemberCount,
    ) {
        let mut entry = self.rooms.entry(room).or_default();
        let was_idle = entry.is_empty();
        entry.retain(|w| w.worker != worker);
        entry.push(WorkerRoom {
            worker,
            addr,
            members,
        });
        if was_idle {
            // Still under the entry's lock: no `RoomIdle` of this room can overtake this event.
            self.observers
                .raise(MembershipEvent::RoomActive { room: entry.key() });
        }
    }

    /// Records that `worker` has no members of `room` any more.
    pub(crate) fn unregister(&self, room: &str, worker: usize) {
        self.rooms.remove_if_mut(room, |key, workers| {
            let before = workers.len();
            workers.retain(|w| w.worker != worker);
            let idle = workers.is_empty() && before > 0;
            if idle {
                // Under the entry's lock, and the entry goes with it.
                self.observers
                    .raise(MembershipEvent::RoomIdle { room: key });
            }
            workers.is_empty()
        });
    }

    /// Calls `f` with the index and room actor of every worker that has members of `room`: the address
    /// kept here, shared by every publisher, so that the room queue's bound holds (actix bounds
    /// a mailbox per sender handle).
    ///
    /// `f` runs under a shard read lock: it must not block or touch the map.
    pub(crate) fn for_each_worker(&self, room: &str, mut f: impl FnMut(usize, &Addr<Room>)) {
        if let Some(workers) = self.rooms.get(room) {
            for w in workers.iter() {
                f(w.worker, &w.addr);
            }
        }
    }

    /// Members of `room` on this node.
    pub(crate) fn members_of(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |workers| {
            workers
                .iter()
                .map(|w| w.members.load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Whether `room` has members on this node.
    pub(crate) fn has(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Number of rooms with members anywhere on this node.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Rooms whose name starts with `prefix` and sorts after `after`, in name order, at most
    /// `limit`, each with its member count on this node. `keep` filters names (relay rooms).
    pub(crate) fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(String, usize)> {
        let mut names: Vec<(String, usize)> = self
            .rooms
            .iter()
            .filter(|e| e.key().starts_with(prefix) && keep(e.key()))
            .filter(|e| after.is_none_or(|a| &**e.key() > a))
            .map(|e| {
                let members = e
                    .value()
                    .iter()
                    .map(|w| w.members.load(Ordering::Relaxed))
                    .sum();
                (e.key().to_string(), members)
            })
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        names.truncate(limit);
        names
    }

    /// The room actors serving `room`.
    pub(crate) fn workers_of(&self, room: &str) -> Vec<Addr<Room>> {
        self.rooms.get(room).map_or_else(Vec::new, |workers| {
            workers.iter().map(|w| w.addr.clone()).collect()
        })
    }
}
