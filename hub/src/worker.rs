//! [`WorkerRooms`]: the rooms, the sessions and the heartbeat of one worker thread; the one owner
//! of its sessions' memberships.
//!
//! Each actix worker builds one at start-up. A session is opened here when it starts and closed
//! here when it ends, however it ends; it joins and leaves rooms here, synchronously. Every
//! membership change goes through [`WorkerRooms::join`] and [`WorkerRooms::remove`], so this is
//! the one place that knows a member left, and the one that raises
//! [`MembershipEvent::MemberJoined`] and [`MembershipEvent::MemberLeft`]. It starts a [`Room`]
//! actor when a room gets its first member on this worker and forgets it (the actor then stops
//! once its queue is drained) when the last one leaves, registering and unregistering with the
//! node's broadcaster, which raises the node-wide `RoomActive` and `RoomIdle`.

use std::{
    cell::RefCell,
    collections::{hash_map::Entry, HashMap, HashSet},
    rc::Rc,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use actix::Addr;

use crate::{
    broadcaster::MemberCount,
    codec::Frame,
    delivery::{Here, Local},
    events::MembershipEvent,
    history::WorkerLog,
    metrics::metrics,
    node::{Node, SessionInfo},
    outbox::{Outgoing, SharedOutbox},
    room::{fan_out, Members, Mode, Room},
    RoomName, SessionId,
};

/// The rooms and sessions of one worker, and its sessions' heartbeat.
#[derive(Debug)]
pub(crate) struct WorkerRooms {
    index: usize,
    node: Arc<Node>,
    rooms: RefCell<HashMap<RoomName, LocalRoom>>,
    /// Every open session on this worker: its outbox (for the heartbeat, one timer per worker,
    /// not per session) and its rooms.
    sessions: RefCell<HashMap<SessionId, LocalSession>>,
}

#[derive(Debug)]
struct LocalRoom {
    /// The room's actor: the publishes of other workers and of the admin API, and of this
    /// worker's publishers while the room is not in direct mode.
    /// In an `Rc`: every publisher here shares this one sender handle, so the mailbox bound
    /// holds (actix bounds a mailbox per handle).
    addr: Rc<Addr<Room>>,
    /// Shared with the room's actor.
    members: Members,
    /// Whether this worker's publishers deliver directly (see `room::Mode`).
    mode: Arc<Mode>,
    /// `members.len()`, readable from other threads (the admin API).
    count: MemberCount,
    /// A history room's log, as this worker delivers it.
    log: Option<Rc<WorkerLog>>,
}

#[derive(Debug)]
struct LocalSession {
    outbox: SharedOutbox,
    info: Arc<SessionInfo>,
    rooms: HashSet<RoomName>,
}

/// What [`WorkerRooms::join`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// The session is now a member.
    Joined,
    /// The session was a member already.
    Already,
    /// The session is at `limit` rooms; nothing changed.
    Full,
    /// The session is not open on this worker (it is ending).
    Closed,
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
        for session in self.sessions.borrow().values() {
            let mut out = session.outbox.borrow_mut();
            out.shrink_when_idle(0);
            if now.saturating_duration_since(out.last_heard) > interval * 2 {
                // Counted as a disconnect (`heartbeat_timeout`) when the connection ends.
                out.time_out();
            } else if ping {
                // A full outbox refuses the ping and evicts the session: it is not reading.
                let _ = out.ping();
            }
        }
    }

    /// The worker's index, shown to clients in `welcome`.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Opens a session on this worker: it is under the heartbeat and may join rooms.
    pub(crate) fn open(&self, id: SessionId, outbox: SharedOutbox, info: Arc<SessionInfo>) {
        self.sessions.borrow_mut().insert(
            id,
            LocalSession {
                outbox,
                info,
                rooms: HashSet::new(),
            },
        );
    }

    /// Closes a session: it leaves every room it is in and is forgotten. The one end of every
    /// session, whatever ended it; a second call does nothing.
    pub(crate) fn close(&self, id: SessionId) {
        let Some(session) = self.sessions.borrow_mut().remove(&id) else {
            return;
        };
        for room in &session.rooms {
            self.remove(room, id, &session.info);
        }
        session.info.subscriptions.store(0, Ordering::Relaxed);
    }

    /// Adds the session to `room`, unless it is in `limit` rooms already. From the moment this
    /// returns `Joined`, every publish that reaches the room's queue reaches the member.
    pub(crate) fn join(&self, id: SessionId, room: &str, limit: usize) -> Join {
        self.join_held(id, room, limit, false)
    }

    /// [`WorkerRooms::join`]; with `hold`, in a history room, the member's deliveries wait
    /// until [`WorkerRooms::settle`] (its replay comes first).
    pub(crate) fn join_held(&self, id: SessionId, room: &str, limit: usize, hold: bool) -> Join {
        let mut sessions = self.sessions.borrow_mut();
        let Some(session) = sessions.get_mut(&id) else {
            return Join::Closed;
        };
        if session.rooms.contains(room) {
            return Join::Already;
        }
        if session.rooms.len() >= limit {
            return Join::Full;
        }
        let room = RoomName::from(room);
        let mut rooms = self.rooms.borrow_mut();
        let local = match rooms.entry(room.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let members = Members::default();
                let count = MemberCount::default();
                let mode = Arc::new(Mode::default());
                let log = self.node.history_options(&room).map(|options| {
                    let log = self.node.history.attach(&room, options, self.index);
                    Rc::new(WorkerLog::new(
                        log,
                        self.index,
                        members.clone(),
                        self.node.config.outbox_capacity,
                    ))
                });
                let addr = Room::start_with(
                    members.clone(),
                    self.node.config.room_queue_capacity,
                    log.clone().map(|l| l as Rc<dyn crate::room::Drains>),
                );
                if let Some(log) = &log {
                    log.log.set_room(self.index, addr.clone());
                }
                self.node.broadcaster.register(
                    room.clone(),
                    self.index,
                    addr.clone(),
                    count.clone(),
                );
                e.insert(LocalRoom {
                    addr: Rc::new(addr),
                    members,
                    mode,
                    count,
                    log,
                })
            }
        };
        if let Some(log) = &local.log {
            // What this worker has yet to deliver goes to the members it was meant for. A pull
            // that asked for a `Drain` must send it, even though this loop leaves nothing for
            // it: until the room's own pull, no other `Drain` is asked for.
            let mut wake = false;
            loop {
                let drained = log.drain(false);
                wake |= drained.wake;
                if !drained.more {
                    break;
                }
            }
            if wake {
                crate::history::wake(vec![(*local.addr).clone()]);
            }
            if hold {
                log.hold(id);
            }
        }
        local
            .members
            .borrow_mut()
            .insert(id, session.outbox.clone());
        local.count.fetch_add(1, Ordering::Relaxed);
        metrics().subscriptions.inc();
        session.info.subscriptions.fetch_add(1, Ordering::Relaxed);
        if self.node.observers.any() {
            self.node.observers.raise(MembershipEvent::MemberJoined {
                room: &room,
                session: &session.info.label,
                user: session.info.user.as_deref(),
                worker: self.index,
            });
        }
        session.rooms.insert(room);
        Join::Joined
    }

    /// The member of a history room takes entries after `floor` from now on; what was held
    /// for it meanwhile (past the floor) is returned, in order. Empty when it is no member.
    pub(crate) fn settle(
        &self,
        id: SessionId,
        room: &str,
        floor: Option<&crate::history::Placed>,
    ) -> Vec<Rc<Frame>> {
        let rooms = self.rooms.borrow();
        match rooms.get(room) {
            Some(LocalRoom {
                log: Some(log),
                members,
                ..
            }) if members.borrow().contains_key(&id) => log.settle(id, floor),
            _ => Vec::new(),
        }
    }

    /// Delivers what the log of history room `room` holds for this worker (a publisher on
    /// this worker just appended to it), and wakes the room actor when more is left.
    pub(crate) fn drain_log(&self, room: &str) {
        let log = self.rooms.borrow().get(room).and_then(|r| r.log.clone());
        if let Some(log) = log {
            if log.drain(false).wake {
                if let Some(local) = self.rooms.borrow().get(room) {
                    crate::history::wake(vec![(*local.addr).clone()]);
                }
            }
        }
    }

    /// Whether the session is a member of `room`.
    pub(crate) fn is_member(&self, id: SessionId, room: &str) -> bool {
        self.sessions
            .borrow()
            .get(&id)
            .is_some_and(|s| s.rooms.contains(room))
    }

    /// Takes the session out of `room`; false when it was not a member.
    pub(crate) fn leave(&self, id: SessionId, room: &str) -> bool {
        let mut sessions = self.sessions.borrow_mut();
        let Some(session) = sessions.get_mut(&id) else {
            return false;
        };
        let Some(room) = session.rooms.take(room) else {
            return false;
        };
        let info = session.info.clone();
        drop(sessions);
        self.remove(&room, id, &info);
        info.subscriptions.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Removes a member from a room's table: the only code that does. Forgets the room on this
    /// worker when it was the last member.
    fn remove(&self, room: &str, id: SessionId, info: &SessionInfo) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(local) = rooms.get(room) else {
            return;
        };
        let (removed, now_empty) = {
            let mut members = local.members.borrow_mut();
            let removed = members.remove(&id).is_some();
            (removed, members.is_empty())
        };
        if removed {
            if let Some(log) = &local.log {
                log.forget(id);
            }
            local.count.fetch_sub(1, Ordering::Relaxed);
            metrics().subscriptions.dec();
            if self.node.observers.any() {
                self.node.observers.raise(MembershipEvent::MemberLeft {
                    room,
                    session: &info.label,
                    user: info.user.as_deref(),
                    worker: self.index,
                });
            }
        }
        if now_empty {
            if let Some(local) = rooms.remove(room) {
                if let Some(log) = &local.log {
                    log.log.unregister(self.index);
                }
            }
            self.node.broadcaster.unregister(room, self.index);
        }
    }
}

impl Here for WorkerRooms {
    fn index(&self) -> usize {
        self.index
    }

    fn deliver_here(&self, room: &str, frame: Frame, except: Option<SessionId>) -> Local {
        let rooms = self.rooms.borrow();
        let Some(local) = rooms.get(room) else {
            return Local::NoMembers;
        };
        if !local.mode.direct() {
            return Local::Queue(local.addr.clone(), frame, local.mode.queue_one());
        }
        // On this thread every member shares one `Rc` of the frame.
        let tally = fan_out(&local.members.borrow(), &Outgoing::new(frame), except);
        local
            .mode
            .note_fullest(tally.fullest, (self.node.config.outbox_capacity / 4).max(1));
        tally.record();
        Local::Delivered
    }
}
