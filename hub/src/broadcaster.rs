//! The node-wide [`Broadcaster`]: which workers have members of which room.
//!
//! A `node` or `cluster` publish is encoded once by the publishing session and handed here; the
//! broadcaster forwards it to the [`Room`] actor of each worker that has members, so the frame
//! crosses threads once per worker, never once per subscriber. Each worker fans out to its own
//! sessions.
//!
//! The map is written only by a worker for its own entry (when a room gets its first local member
//! and when it loses its last), so no two threads ever race on one worker's slot.

use actix::Addr;
use dashmap::DashMap;

use crate::{room::Room, RoomName};

/// Routes node-wide publishes to the per-worker rooms that have members.
#[derive(Debug, Default)]
pub(crate) struct Broadcaster {
    rooms: DashMap<RoomName, Vec<(usize, Addr<Room>)>>,
}

impl Broadcaster {
    /// Records that `worker` now has members of `room`, served by `addr`.
    pub(crate) fn register(&self, room: RoomName, worker: usize, addr: Addr<Room>) {
        let mut entry = self.rooms.entry(room).or_default();
        entry.retain(|(w, _)| *w != worker);
        entry.push((worker, addr));
    }

    /// Records that `worker` has no members of `room` any more.
    pub(crate) fn unregister(&self, room: &str, worker: usize) {
        self.rooms.remove_if_mut(room, |_, workers| {
            workers.retain(|(w, _)| *w != worker);
            workers.is_empty()
        });
    }

    /// Calls `f` with the room actor of every worker that has members of `room`.
    ///
    /// `f` runs under a shard read lock: it must not block or touch the map.
    pub(crate) fn for_each_worker(&self, room: &str, mut f: impl FnMut(&Addr<Room>)) {
        if let Some(workers) = self.rooms.get(room) {
            for (_, addr) in workers.iter() {
                f(addr);
            }
        }
    }

    /// Number of rooms with members anywhere on this node.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.len()
    }
}
