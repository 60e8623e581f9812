//! [`WorkerRooms`]: the rooms and the heartbeat of one worker thread.
//!
//! Each actix worker builds one at start-up. Sessions on the worker join and leave rooms through
//! it synchronously; it starts a [`Room`] actor when a room gets its first member on this worker
//! and forgets it (the actor then stops once its queue is drained) when the last one leaves,
//! telling the node's broadcaster both times.

use std::{
    cell::RefCell,
    collections::{hash_map::Entry, HashMap},
    rc::Rc,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use actix::Addr;

use crate::{
    broadcaster::MemberCount,
    metrics::metrics,
    node::Node,
    room::{Members, Room},
    session::SharedOutbox,
    RoomName, SessionId,
};

/// The rooms with members on one worker, and its sessions' heartbeat.
#[derive(Debug)]
pub(crate) struct WorkerRooms {
    index: usize,
    node: Arc<Node>,
    rooms: RefCell<HashMap<RoomName, LocalRoom>>,
    /// Every session on this worker, for the heartbeat: one timer per worker, not per session.
    sessions: RefCell<HashMap<SessionId, SharedOutbox>>,
}

#[derive(Debug)]
struct LocalRoom {
    addr: Addr<Room>,
    members: Members,
    /// `members.len()`, readable from other threads (the admin API).
    count: MemberCount,
}

impl WorkerRooms {
    pub(crate) fn new(index: usize, node: Arc<Node>) -> Self {
        WorkerRooms {
            index,
            node,
            rooms: RefCell::default(),
            sessions: RefCell::default(),
        }
    }

    /// Starts this worker's heartbeat: every half `heartbeat`, sessions silent for more than two
    /// heartbeats are timed out, and every other tick each session is pinged. Stops when the
    /// worker's state is dropped.
    pub(crate) fn start_heartbeat(this: &Rc<WorkerRooms>) {
        let interval = this.node.config.heartbeat;
        let worker = Rc::downgrade(this);
        actix_rt::spawn(async move {
            let mut ticks = tokio::time::interval(interval / 2);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut ping = false;
            loop {
                ticks.tick().await;
                let Some(worker) = worker.upgrade() else {
                    return;
                };
                ping = !ping;
                worker.heartbeat(interval, ping);
            }
        });
    }

    fn heartbeat(&self, interval: Duration, ping: bool) {
        let now = Instant::now();
        for out in self.sessions.borrow().values() {
            let mut out = out.borrow_mut();
            if now.saturating_duration_since(out.last_heard) > interval * 2 {
                // Counted as a disconnect (`heartbeat_timeout`) when the connection ends.
                out.time_out();
            } else if ping {
                out.ping();
            }
        }
    }

    /// Puts a session under this worker's heartbeat.
    pub(crate) fn watch(&self, id: SessionId, out: SharedOutbox) {
        self.sessions.borrow_mut().insert(id, out);
    }

    /// Takes a session off the heartbeat.
    pub(crate) fn unwatch(&self, id: SessionId) {
        self.sessions.borrow_mut().remove(&id);
    }

    /// The worker's index, shown to clients in `welcome`.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Adds a member to `room`. From the moment this returns, every publish that reaches the
    /// room's queue reaches the member.
    pub(crate) fn join(&self, room: &RoomName, id: SessionId, member: SharedOutbox) {
        let mut rooms = self.rooms.borrow_mut();
        let local = match rooms.entry(room.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let members = Members::default();
                let count = MemberCount::default();
                let addr = Room::start_here(members.clone(), count.clone(), &self.node);
                self.node.broadcaster.register(
                    room.clone(),
                    self.index,
                    addr.clone(),
                    count.clone(),
                );
                e.insert(LocalRoom {
                    addr,
                    members,
                    count,
                })
            }
        };
        if local.members.borrow_mut().insert(id, member).is_none() {
            local.count.fetch_add(1, Ordering::Relaxed);
            metrics().subscriptions.inc();
        }
    }

    /// Removes a member from `room`; forgets the room on this worker when it was the last.
    pub(crate) fn leave(&self, room: &str, id: SessionId) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(local) = rooms.get(room) else {
            return;
        };
        let now_empty = {
            let mut members = local.members.borrow_mut();
            if members.remove(&id).is_some() {
                local.count.fetch_sub(1, Ordering::Relaxed);
                metrics().subscriptions.dec();
            }
            members.is_empty()
        };
        if now_empty {
            rooms.remove(room);
            self.node.broadcaster.unregister(room, self.index);
        }
    }

    /// The room actor serving `room` on this worker, if it has members here.
    pub(crate) fn local_room(&self, room: &str) -> Option<Addr<Room>> {
        self.rooms
            .borrow()
            .get(room)
            .map(|local| local.addr.clone())
    }
}
