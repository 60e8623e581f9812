//! [`Node`]: the state shared by every worker of one hub process.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use actix::{prelude::SendError, Recipient};
use dashmap::DashMap;
use switchboard_admin::{Mode, PolicyStore};
use switchboard_protocol::{RawValue, ServerFrame};

use crate::{
    broadcaster::Broadcaster,
    broker::{Broker, LocalBroker},
    cluster::{LocalNode, NodeRecord, RedisBroker, Shared},
    codec::text_frame,
    config::{Config, RoomOptions},
    events::{MembershipObserver, Observers},
    history::History,
    messages::Command,
    presence::{Presence, CHANGES_CAPACITY},
    SessionId,
};

/// Node-wide state: configuration, the broadcaster, the broker, the live sessions and the
/// counters.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Config,
    pub(crate) broadcaster: Arc<Broadcaster>,
    /// Carries cluster-scope publishes; see `broker.rs`.
    pub(crate) broker: Box<dyn Broker>,
    /// In cluster mode, the Redis bridge, for what the admin API asks of every node.
    pub(crate) cluster: Option<Arc<Shared>>,
    /// The WebSocket listener's bound address, once it listens (the registry shows it).
    listening: std::sync::OnceLock<std::net::SocketAddr>,
    /// Who hears of membership transitions (see `events.rs`).
    pub(crate) observers: Observers,
    /// History rooms' logs (see `history.rs`).
    pub(crate) history: Arc<History>,
    /// Who is in the rooms that track members (see `presence.rs`).
    pub(crate) presence: Arc<Presence>,
    /// Per-client-IP limits, when set (see `limits.rs`).
    pub(crate) ip_limits: Option<crate::limits::IpLimits>,
    /// The live handshake policy: read by every handshake, replaced whole by the admin API.
    pub policy: Arc<PolicyStore>,
    /// Every live session, for shutdown and the admin API.
    pub(crate) sessions: DashMap<SessionId, SessionEntry>,
    connections: AtomicUsize,
    draining: AtomicBool,
    next_session: AtomicU64,
    /// Distinguishes this process's session ids from those of earlier runs and other nodes.
    instance: u32,
}

impl Node {
    /// A node with no sessions.
    pub fn new(config: Config) -> Arc<Node> {
        Node::with_observers(config, Vec::new())
    }

    /// A node with no sessions whose membership transitions are reported to `observers`.
    pub fn with_observers(
        config: Config,
        observers: Vec<Arc<dyn MembershipObserver>>,
    ) -> Arc<Node> {
        let mut observers = observers;
        // In cluster mode the Redis bridge follows which rooms are active here; it must be an
        // observer before the broadcaster that raises the events exists.
        let cluster = (!config.redis_urls.is_empty()).then(|| {
            let shared = RedisBroker::shared(
                &config.redis_urls,
                &config.redis_prefix,
                &config.node_id,
                config.max_message_bytes,
            );
            observers.push(shared.clone());
            shared
        });
        let presence = Presence::new(&config.node_id, config.rooms.clone());
        if config.rooms.any_tracking() {
            observers.push(presence.clone());
        }
        let observers = Observers::new(observers);
        let broadcaster = Arc::new(Broadcaster::new(observers.clone()));
        presence.set_broadcaster(broadcaster.clone());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = now.subsec_nanos() ^ (now.as_secs() as u32);
        let instance = nanos ^ std::process::id().rotate_left(16);
        // Epochs name this run: its start time and its instance, then a log's generation.
        let history = Arc::new(History::new(
            cluster.is_none(),
            config.history_memory_bytes,
            config.room_queue_capacity,
            format!("{:x}{instance:08x}", now.as_secs()),
        ));
        if let Some(shared) = &cluster {
            shared.set_history(history.clone());
            if config.rooms.any_tracking() {
                let (changes, receiver) = tokio::sync::mpsc::channel(CHANGES_CAPACITY);
                presence.set_bridge(
                    changes.clone(),
                    Arc::new(crate::cluster::RedisLists(shared.clone())),
                );
                shared.set_presence(
                    config.rooms.clone(),
                    receiver,
                    changes,
                    format!("{instance:08x}-"),
                );
            }
        }
        // Last: the bridge's thread starts here, and must find everything above in place.
        let broker: Box<dyn Broker> = match &cluster {
            Some(shared) => Box::new(RedisBroker::start(shared.clone(), broadcaster.clone())),
            None => Box::new(LocalBroker::new(broadcaster.clone())),
        };
        let policy = Arc::new(PolicyStore::new(config.policy.clone()));
        let ip_limits = crate::limits::IpLimits::new(&config);
        let node = Arc::new(Node {
            config,
            policy,
            broadcaster,
            broker,
            cluster: cluster.clone(),
            listening: std::sync::OnceLock::new(),
            observers,
            history,
            presence,
            ip_limits,
            sessions: DashMap::new(),
            connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            instance,
        });
        if let Some(shared) = &cluster {
            // Weak: the bridge must not keep the node alive.
            let local: std::sync::Weak<dyn LocalNode> = Arc::downgrade(&node) as _;
            shared.set_local(local);
        }
        node
    }

    /// The options of `room` if it is a history room (relay rooms never are).
    pub(crate) fn history_options(&self, room: &str) -> Option<&Arc<RoomOptions>> {
        if room.starts_with('\0') {
            return None;
        }
        self.config.rooms.of(room).filter(|o| o.history())
    }

    /// The options of `room` if the node follows its members (presence, join/leave).
    pub(crate) fn tracking_options(&self, room: &str) -> Option<&Arc<RoomOptions>> {
        if room.starts_with('\0') {
            return None;
        }
        self.config.rooms.of(room).filter(|o| o.tracks_members())
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of open sessions.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Number of rooms with at least one member on this node.
    pub fn rooms(&self) -> usize {
        self.broadcaster.room_count()
    }

    /// Whether the node can do all it is configured for: `Err` names what it cannot (in
    /// cluster mode, Redis being out of reach or too slow).
    pub fn health(&self) -> Result<(), String> {
        self.broker.health()
    }

    /// Records the WebSocket listener's bound address.
    pub(crate) fn set_listening(&self, addr: std::net::SocketAddr) {
        let _ = self.listening.set(addr);
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Reserves a connection slot, or `None` when the node is at `max_connections`.
    pub(crate) fn try_acquire_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.config.max_connections;
        let prev = self.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot {
            node: self.clone(),
            ip: None,
        })
    }

    /// A fresh session id and its wire form.
    pub(crate) fn next_session_id(&self) -> (SessionId, String) {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        (SessionId(n), format!("{:08x}-{n}", self.instance))
    }

    /// The session id for its wire form, if the form is one of this node's.
    pub(crate) fn parse_session_id(&self, label: &str) -> Option<SessionId> {
        let (instance, n) = label.split_once('-')?;
        if instance != format!("{:08x}", self.instance) {
            return None;
        }
        n.parse().ok().map(SessionId)
    }
}

/// Why a direct message did not reach a session of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirectError {
    NotFound,
    TooLarge {
        limit: usize,
        size: usize,
    },
    /// The session's mailbox is full.
    Full,
}

impl Node {
    /// Kicks this node's session `label` (close 4001); false when it is not here.
    pub(crate) fn kick_local(&self, label: &str) -> bool {
        let Some(id) = self.parse_session_id(label) else {
            return false;
        };
        let Some((commands, info)) = self
            .sessions
            .get(&id)
            .map(|e| (e.commands.clone(), e.info.clone()))
        else {
            return false;
        };
        // Bypasses the mailbox bound, so that a session with a busy mailbox is still kicked; the
        // flag makes that at most one message per session, however often it is kicked.
        if !info.kicked.swap(true, Ordering::Relaxed) {
            commands.do_send(Command::Kick);
        }
        true
    }

    /// Sends this node's session `label` `{"op":"direct","data":..,"from":"admin"}`.
    pub(crate) fn direct_local(&self, label: &str, data: &RawValue) -> Result<(), DirectError> {
        let max = self.config.max_message_bytes;
        let text = ServerFrame::Direct {
            data,
            from: "admin",
        }
        .encode();
        if text.len() > max {
            return Err(DirectError::TooLarge {
                limit: max,
                size: text.len(),
            });
        }
        let id = self.parse_session_id(label).ok_or(DirectError::NotFound)?;
        let entry = self.sessions.get(&id).ok_or(DirectError::NotFound)?;
        // Through the session's own handle, not a clone: actix bounds a mailbox per sender
        // handle, and this is the bound of `session::connection::MAILBOX_CAPACITY`.
        match entry
            .commands
            .try_send(Command::Direct(text_frame(text.as_bytes())))
        {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => Err(DirectError::Full),
            Err(SendError::Closed(_)) => Err(DirectError::NotFound),
        }
    }
}

impl Node {
    /// The address the registry shows for this node: `advertise_address` if set, else the
    /// bound address, with a wildcard IP (a container's `0.0.0.0`) replaced by the host name,
    /// which is what other hosts of a container network or a cluster can reach.
    fn advertised_address(&self) -> String {
        if let Some(address) = &self.config.advertise_address {
            return address.clone();
        }
        let bound = self.listening.get().copied().unwrap_or(self.config.listen);
        if bound.ip().is_unspecified() {
            if let Some(host) = crate::config::host_name() {
                return format!("{host}:{}", bound.port());
            }
        }
        bound.to_string()
    }
}

impl LocalNode for Node {
    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.config.node_id.clone(),
            address: self.advertised_address(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            sessions: self.connections(),
            last_seen: 0,
        }
    }

    fn members_of(&self, room: &str) -> usize {
        self.broadcaster.members_of(room)
    }

    fn kick_here(&self, session: &str) -> bool {
        self.kick_local(session)
    }

    fn apply_policy(&self, document: &[u8]) {
        // On top of the configuration's policy, like the state file at start: endpoints and
        // tokens stay this node's own, origins and subprotocols are the cluster's.
        match switchboard_admin::state::apply(
            self.config.policy.clone(),
            document,
            "the cluster's policy",
        ) {
            Ok((policy, warnings)) => {
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                self.policy.replace(policy);
                tracing::info!("the cluster's policy is in force");
            }
            Err(e) => tracing::error!(error = %e, "the cluster's policy is refused"),
        }
    }

    fn direct_here(&self, session: &str, data: &RawValue) -> Result<bool, String> {
        match self.direct_local(session, data) {
            Ok(()) => Ok(true),
            Err(DirectError::NotFound) => Ok(false),
            Err(DirectError::Full) => Err("the session's mailbox is full; retry".to_owned()),
            Err(DirectError::TooLarge { limit, size }) => Err(format!(
                "message of {size} bytes is over the {limit}-byte limit"
            )),
        }
    }
}

/// A live session as the node sees it.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    /// The session's mailbox, for what reaches it from other threads (see [`Command`]).
    pub(crate) commands: Recipient<Command>,
    pub(crate) info: Arc<SessionInfo>,
}

/// What a session tells the rest of the node about itself; shared with the session and its
/// worker, which keeps `subscriptions` current.
#[derive(Debug)]
pub(crate) struct SessionInfo {
    /// The id as clients see it.
    pub(crate) label: String,
    pub(crate) user: Option<String>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) mode: Mode,
    pub(crate) worker: usize,
    /// Unix seconds.
    pub(crate) connected_at: u64,
    pub(crate) subscriptions: AtomicUsize,
    /// Set by the first admin kick, so repeated kicks queue one message, not one each.
    pub(crate) kicked: AtomicBool,
}

/// One of the node's `max_connections` slots (and of its client IP's, when limited), released on
/// drop.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    node: Arc<Node>,
    /// The client IP whose count the slot holds.
    pub(crate) ip: Option<std::net::IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.node.connections.fetch_sub(1, Ordering::AcqRel);
        if let (Some(ip), Some(limits)) = (self.ip, &self.node.ip_limits) {
            limits.release(ip);
        }
    }
}
