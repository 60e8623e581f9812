//! The node-wide [`Broadcaster`]: which workers have members of which room.
//!
//! A `node` or `cluster` publish is encoded once by the publishing session and handed here; the
//! broadcaster forwards it to the [`Room`] actor of each worker that has members, so the frame
//! crosses threads once per worker, never once per subscriber. Each worker fans out to its own
//! sessions.
//!
//! The map is written only by a worker for its own entry (when a room gets its first local member
//! and when it loses its last), so no two threads ever race on one worker's slot.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use actix::Addr;
use dashmap::DashMap;

use crate::{room::Room, RoomName};

/// Routes node-wide publishes to the per-worker rooms that have members.
#[derive(Debug, Default)]
pub(crate) struct Broadcaster {
    rooms: DashMap<RoomName, Vec<(usize, Addr<Room>, MemberCount)>>,
}

/// A worker's member count of one room, kept by that worker on join and leave (never per
/// message), read by the admin API.
pub(crate) type MemberCount = Arc<AtomicUsize>;

impl Broadcaster {
    /// Records that `worker` now has members of `room`, served by `addr`.
    pub(crate) fn register(
        &self,
        room: RoomName,
        worker: usize,
        addr: Addr<Room>,
        members: MemberCount,
    ) {
        let mut entry = self.rooms.entry(room).or_default();
        entry.retain(|(w, _, _)| *w != worker);
        entry.push((worker, addr, members));
    }

    /// Records that `worker` has no members of `room` any more.
    pub(crate) fn unregister(&self, room: &str, worker: usize) {
        self.rooms.remove_if_mut(room, |_, workers| {
            workers.retain(|(w, _, _)| *w != worker);
            workers.is_empty()
        });
    }

    /// Calls `f` with the room actor of every worker that has members of `room`.
    ///
    /// `f` runs under a shard read lock: it must not block or touch the map.
    pub(crate) fn for_each_worker(&self, room: &str, mut f: impl FnMut(&Addr<Room>)) {
        if let Some(workers) = self.rooms.get(room) {
            for (_, addr, _) in workers.iter() {
                f(addr);
            }
        }
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
                    .map(|(_, _, n)| n.load(Ordering::Relaxed))
                    .sum();
                (e.key().to_string(), members)
            })
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        names.truncate(limit);
        names
    }

    /// The room actors serving `room`, with their workers.
    pub(crate) fn workers_of(&self, room: &str) -> Vec<(usize, Addr<Room>)> {
        self.rooms.get(room).map_or_else(Vec::new, |workers| {
            workers.iter().map(|(w, a, _)| (*w, a.clone())).collect()
        })
    }
}
