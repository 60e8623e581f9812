//! [`Presence`]: who is in the rooms whose `[[rooms]]` table asks for `presence` or
//! `join_leave`, and the `join` and `leave` frames.
//!
//! It is a membership observer (see `events.rs`): every `MemberJoined` and `MemberLeft` of a
//! tracked room reaches it, however the session joined or left. Presence is by user: a user
//! with two sessions in a room joins once and leaves once, and a session without a user counts
//! as a user of its own. A user whose last session left is announced as gone only after the
//! room's `leave_debounce`, and only if none of its sessions came back meanwhile; a user who
//! came back within it is announced neither as gone nor as come.
//!
//! Standalone, all of it is here, in memory. In cluster mode every change goes, in order, to the
//! cluster bridge (`cluster/presence.rs`), which keeps the room's presence in Redis, shared by
//! every node (and the node's own members as its changes leave them, to put back after Redis was
//! lost), and announces joins and leaves through the room's channel.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
};

use switchboard_protocol::ServerFrame;
use tokio::sync::mpsc;

use crate::{
    broadcaster::Broadcaster,
    codec::text_frame_of,
    config::{RoomOptions, RoomRules},
    delivery::{Delivery, Unavailable},
    events::{MembershipEvent, MembershipObserver},
};

/// One member in a presence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) session: String,
    pub(crate) user: Option<String>,
    pub(crate) node: String,
}

/// A presence list: known now (standalone), or asked of Redis.
pub(crate) enum Listed {
    Now(Vec<Row>),
    Later(Pin<Box<dyn Future<Output = Result<Vec<Row>, Unavailable>>>>),
}

/// Where a cluster's presence lists come from (the cluster bridge, from Redis).
pub(crate) trait Lists: Send + Sync + std::fmt::Debug {
    /// The members of `room` on every node.
    fn list(&self, room: String) -> Pin<Box<dyn Future<Output = Result<Vec<Row>, Unavailable>>>>;
}

/// A change of a tracked room's membership on this node, for the cluster bridge.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) joined: bool,
    pub(crate) room: String,
    pub(crate) session: String,
    pub(crate) user: Option<String>,
    pub(crate) options: Arc<RoomOptions>,
}

/// What the node hands the cluster bridge, in order: its members' changes, and (from the bridge
/// itself, when a link to a Redis instance is made again) the moment to put its members back in
/// that instance, as far as the changes before it went.
#[derive(Debug)]
pub(crate) enum ToBridge {
    Change(Change),
    Restore(usize),
}

/// Changes the bridge may have waiting; more are dropped and counted (a node that joins this
/// many sessions faster than Redis answers has bigger problems, which readiness shows).
pub(crate) const CHANGES_CAPACITY: usize = 65_536;

/// The key a user is counted by in a room: its user id, or its session's for a session without.
pub(crate) fn user_key(session: &str, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("u:{user}"),
        None => format!("s:{session}"),
    }
}

/// Presence of a node's tracked rooms.
#[derive(Debug)]
pub(crate) struct Presence {
    node_id: String,
    rules: RoomRules,
    me: Weak<Presence>,
    broadcaster: OnceLock<Arc<Broadcaster>>,
    rooms: Mutex<HashMap<String, RoomMembers>>,
    /// Standalone: users whose leave waits for the debounce, with the timer's token.
    leaving: Mutex<HashMap<(String, String), Leaving>>,
    next_token: AtomicU64,
    /// Cluster mode: where changes go, and the bridge that answers presence lists.
    bridge: OnceLock<(mpsc::Sender<ToBridge>, Arc<dyn Lists>)>,
}

#[derive(Debug, Default)]
struct RoomMembers {
    /// Session to user.
    sessions: HashMap<String, Option<String>>,
    /// Sessions per user key.
    users: HashMap<String, usize>,
}

#[derive(Debug)]
struct Leaving {
    token: u64,
    session: String,
    user: Option<String>,
}

impl Presence {
    pub(crate) fn new(node_id: &str, rules: RoomRules) -> Arc<Presence> {
        Arc::new_cyclic(|me| Presence {
            node_id: node_id.to_owned(),
            rules,
            me: me.clone(),
            broadcaster: OnceLock::new(),
            rooms: Mutex::new(HashMap::new()),
            leaving: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            bridge: OnceLock::new(),
        })
    }

    pub(crate) fn set_broadcaster(&self, broadcaster: Arc<Broadcaster>) {
        let _ = self.broadcaster.set(broadcaster);
    }

    /// Cluster mode: changes go to the bridge, which keeps presence in Redis.
    pub(crate) fn set_bridge(&self, changes: mpsc::Sender<ToBridge>, lists: Arc<dyn Lists>) {
        let _ = self.bridge.set((changes, lists));
    }

    fn options(&self, room: &str) -> Option<&Arc<RoomOptions>> {
        if room.starts_with('\0') {
            return None;
        }
        self.rules.of(room).filter(|o| o.tracks_members())
    }

    /// The members of `room`.
    pub(crate) fn list(&self, room: &str) -> Listed {
        if let Some((_, lists)) = self.bridge.get() {
            return Listed::Later(lists.list(room.to_owned()));
        }
        let rooms = lock(&self.rooms);
        let rows = rooms.get(room).map_or_else(Vec::new, |members| {
            let mut rows: Vec<Row> = members
                .sessions
                .iter()
                .map(|(session, user)| Row {
                    session: session.clone(),
                    user: user.clone(),
                    node: self.node_id.clone(),
                })
                .collect();
            rows.sort_by(|a, b| a.session.cmp(&b.session));
            rows
        });
        Listed::Now(rows)
    }

    fn joined(&self, room: &str, session: &str, user: Option<&str>, options: &Arc<RoomOptions>) {
        // In cluster mode Redis holds presence; the bridge keeps what it needs itself.
        if let Some((bridge, _)) = self.bridge.get() {
            return self.to_bridge(bridge, true, room, session, user, options);
        }
        let key = user_key(session, user);
        let first = {
            let mut rooms = lock(&self.rooms);
            let members = rooms.entry(room.to_owned()).or_default();
            members
                .sessions
                .insert(session.to_owned(), user.map(str::to_owned));
            let n = members.users.entry(key.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        // Back within the debounce: neither the leave nor a join is announced.
        let came_back = lock(&self.leaving)
            .remove(&(room.to_owned(), key))
            .is_some();
        if first && !came_back && options.join_leave {
            self.announce(
                room,
                &ServerFrame::Join {
                    room,
                    session,
                    user,
                },
            );
        }
    }

    fn left(&self, room: &str, session: &str, user: Option<&str>, options: &Arc<RoomOptions>) {
        if let Some((bridge, _)) = self.bridge.get() {
            return self.to_bridge(bridge, false, room, session, user, options);
        }
        let key = user_key(session, user);
        let gone = {
            let mut rooms = lock(&self.rooms);
            let Some(members) = rooms.get_mut(room) else {
                return;
            };
            if members.sessions.remove(session).is_none() {
                return;
            }
            let gone = match members.users.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    members.users.remove(&key);
                    true
                }
            };
            if members.sessions.is_empty() {
                rooms.remove(room);
            }
            gone
        };
        if !gone || !options.join_leave {
            return;
        }
        if options.leave_debounce.is_zero() {
            return self.announce_leave(room, session, user);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.leaving).insert(
            (room.to_owned(), key.clone()),
            Leaving {
                token,
                session: session.to_owned(),
                user: user.map(str::to_owned),
            },
        );
        let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let room = room.to_owned();
        let debounce = options.leave_debounce;
        runtime.spawn(async move {
            tokio::time::sleep(debounce).await;
            me.leave_due(&room, &key, token);
        });
    }

    /// A debounced leave's time has come: announced unless the user came back.
    fn leave_due(&self, room: &str, key: &str, token: u64) {
        let due = {
            let mut leaving = lock(&self.leaving);
            let id = (room.to_owned(), key.to_owned());
            match leaving.get(&id) {
                Some(l) if l.token == token => leaving.remove(&id),
                _ => None,
            }
        };
        let back = lock(&self.rooms)
            .get(room)
            .is_some_and(|m| m.users.contains_key(key));
        if let (Some(l), false) = (due, back) {
            self.announce_leave(room, &l.session, l.user.as_deref());
        }
    }

    fn announce_leave(&self, room: &str, session: &str, user: Option<&str>) {
        self.announce(
            room,
            &ServerFrame::Leave {
                room,
                session,
                user,
            },
        );
    }

    /// Delivers a join or leave frame to this node's members of `room`.
    fn announce(&self, room: &str, frame: &ServerFrame<'_>) {
        let Some(broadcaster) = self.broadcaster.get() else {
            return;
        };
        let delivery = Delivery::to_node(broadcaster, None, room, text_frame_of(frame), None);
        if !delivery.is_done() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = delivery.finish().await;
                });
            }
        }
    }

    fn to_bridge(
        &self,
        bridge: &mpsc::Sender<ToBridge>,
        joined: bool,
        room: &str,
        session: &str,
        user: Option<&str>,
        options: &Arc<RoomOptions>,
    ) {
        let change = Change {
            joined,
            room: room.to_owned(),
            session: session.to_owned(),
            user: user.map(str::to_owned),
            options: options.clone(),
        };
        if bridge.try_send(ToBridge::Change(change)).is_err() {
            tracing::warn!(
                room,
                session,
                "presence change dropped: the bridge is backed up"
            );
        }
    }
}

impl MembershipObserver for Presence {
    fn event(&self, event: &MembershipEvent<'_>) {
        match *event {
            MembershipEvent::MemberJoined {
                room,
                session,
                user,
                ..
            } => {
                if let Some(options) = self.options(room) {
                    self.joined(room, session, user, &options.clone());
                }
            }
            MembershipEvent::MemberLeft {
                room,
                session,
                user,
                ..
            } => {
                if let Some(options) = self.options(room) {
                    self.left(room, session, user, &options.clone());
                }
            }
            MembershipEvent::RoomActive { .. } | MembershipEvent::RoomIdle { .. } => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
