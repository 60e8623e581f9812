//! [`RedisBroker`]: cluster scope over Redis pub/sub.
//!
//! Every node subscribes to the channel `<prefix>:room:<room>` of each room that has members on
//! it, and a `cluster` publish is one `PUBLISH` of the room's [`Envelope`] to that channel. The
//! publishing node delivers its own cluster publishes from its subscription too, never
//! directly, so Redis's one order per channel is every member's order, on every node.
//!
//! With several Redis instances, a room lives on the instance its name hashes to (FNV-1a, the
//! same on every node); node-wide traffic (the canary) uses the first.
//!
//! The bridge runs on a thread of its own ("cluster"), one task per Redis instance, each with
//! two connections: one multiplexed connection (the `redis` crate) for publishes, sent from an
//! ordered, bounded queue as pipelines, and node-wide commands; and one subscription link
//! (`link.rs`, read by the bridge itself) which is read only as fast as the node delivers, so a
//! node that falls behind is cut off by Redis's output-buffer limit for subscribers and tells
//! its rooms' members `gap`, rather than buffering without bound. Membership reaches it through the node's membership events
//! (`RoomActive`/`RoomIdle`): each marks the room's wanted state and wakes the instance's task,
//! which subscribes or unsubscribes; a burst of changes to one room collapses into its last
//! state. When a link is lost the task reconnects with capped exponential backoff and jitter,
//! subscribes every wanted room again, and sends each of them a `gap` frame: messages published
//! meanwhile may have been missed.
//!
//! Readiness proves the path: every second the node publishes a canary to its own channel
//! `<prefix>:node:<node_id>` on the first instance and expects it back from its subscription;
//! a link that is down, or a canary overdue by more than `CANARY_DEADLINE`, makes the node
//! unready (with the reason), whether the socket closed or Redis froze.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, RwLock, Weak,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard_protocol::{Envelope, RawValue, Scope, ServerFrame};
use tokio::sync::{mpsc, oneshot, Notify};

mod link;
mod presence;

pub(crate) use self::presence::RedisLists;

use self::link::{Push, SubscriptionLink};
use crate::{
    broadcaster::Broadcaster,
    broker::{Broker, ClusterPublish, RelayPublish},
    codec::{frame, opcode, text_frame_of},
    config::RoomOptions,
    delivery::{Answered, Delivery, Unavailable},
    events::{MembershipEvent, MembershipObserver},
    history::{self, History, Placed},
    metrics::metrics,
    publish::{logged_frame, message_frame},
    SessionId,
};

/// Publishes to a history room, atomically: makes the room's epoch if it has none (a new or a
/// lost history: the stream goes with it), takes the next offset, appends the envelope to the
/// room's stream (trimmed to `history_size`, entry id `<offset>-1`, field `t` the time in
/// microseconds, `m` the envelope) and publishes it. `KEYS`: the room's meta hash and stream.
/// `ARGV`: channel, epoch for a new history, the envelope before and after its position,
/// `history_size`, `history_ttl` in ms (0: none). Returns `{offset, epoch}`.
const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local message = ARGV[3] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[4]
local now = redis.call('TIME')
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-1',
  't', now[1] .. string.format('%06d', now[2]), 'm', message)
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[1], message)
return {offset, epoch}
"#;

/// Reads a history room's position and messages: those from offset `ARGV[3]` on (`ARGV[2]` =
/// `from`), or the last ones (`last`), at most `ARGV[4]`, younger than `ARGV[5]` ms (0: any
/// age); makes the epoch (`ARGV[1]`) if the room has none, so that a position can always be
/// given. Returns `{epoch, offset, {envelope...}}`, oldest first for `from`, newest first for
/// `last`.
const READ_SCRIPT: &str = r#"
local ttl = tonumber(ARGV[5])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
local offset = redis.call('HGET', KEYS[1], 'offset')
local entries
if ARGV[2] == 'from' then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-1', '+', 'COUNT', ARGV[4])
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
end
local cutoff = 0
if ttl > 0 then
  local now = redis.call('TIME')
  cutoff = tonumber(now[1] .. string.format('%06d', now[2])) - ttl * 1000
end
local out = {}
for _, e in ipairs(entries) do
  local f = e[2]
  if tonumber(f[2]) >= cutoff then table.insert(out, f[4]) end
end
return {epoch, offset, out}
"#;

/// What a read asks for: the room, the offset to read from (none: the last ones), how many.
type ReadKey = (String, Option<u64>, usize);

/// A read in flight, awaited by every session that asked for it.
type SharedRead = futures_util::future::Shared<
    Pin<Box<dyn Future<Output = Result<Arc<Read>, Unavailable>> + Send>>,
>;

/// A history room's position and some of its messages, read from Redis.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) at: Placed,
    /// The messages of the read's epoch, oldest first, each encoded once as its `message`
    /// frame: every session replaying them shares the frames.
    pub(crate) messages: Vec<Stored>,
}

/// A history room's message read from its stream.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) offset: u64,
    /// The `message` frame, WebSocket header included, and where its JSON text starts.
    pub(crate) frame: crate::codec::Frame,
    pub(crate) json_at: usize,
}

impl Stored {
    pub(crate) fn json(&self) -> &str {
        std::str::from_utf8(&self.frame[self.json_at..]).unwrap_or("null")
    }
}

/// The stored envelopes (oldest first) of `room` in `epoch` as messages; others are skipped.
fn stored(room: &str, epoch: &str, envelopes: &[String]) -> Vec<Stored> {
    envelopes
        .iter()
        .filter_map(|text| {
            let envelope = Envelope::decode(text).ok()?;
            let offset = envelope.offset?;
            if envelope.epoch.as_deref() != Some(epoch) || envelope.room != room {
                return None;
            }
            let (frame, json_at) = logged_frame(
                room,
                envelope.data,
                &envelope.from,
                envelope.user.as_deref(),
                switchboard_protocol::Position { epoch, offset },
            );
            Some(Stored {
                offset,
                frame,
                json_at,
            })
        })
        .collect()
}

/// How long a cluster publish waits for Redis's reply before it is answered `unavailable`.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a subscribe waits for its room's subscription to be confirmed before it is acked
/// anyway (a frozen Redis must not hold a session forever; readiness reports it meanwhile).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a history read (one script, up to `history_size` messages) may take in Redis.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// History reads in flight per node at most (see `Shared::read`).
const READS_IN_FLIGHT: usize = 32;
/// Between two canaries.
const CANARY_INTERVAL: Duration = Duration::from_secs(1);
/// A canary not back after this long makes the node unready.
const CANARY_DEADLINE: Duration = Duration::from_secs(3);
/// Between two refreshes of the node's registry entry, and how long an entry outlives its last
/// refresh: a node that died leaves the registry within `REGISTRY_TTL`.
const REGISTRY_REFRESH: Duration = Duration::from_secs(5);
const REGISTRY_TTL: Duration = Duration::from_secs(30);
/// How long a question to every node waits for the answers.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Answers a question may queue before the asker reads them; more are dropped (each node
/// answers once, so only a cluster of more nodes than this could lose some, shown as missing).
const ASK_ANSWERS: usize = 256;
/// How relay rooms' keys start (see `transport::handshake`).
const RELAY_KEY: &str = "\0relay\0";
/// Publishes queued per Redis instance for its connection, at most. The queue keeps every
/// publisher's messages in order and lets many be in flight; when it is full (Redis slower
/// than the node's publishers), a publish waits for room, and its session with it, which
/// pushes back on the client through TCP: nothing is dropped, and the wait is bounded by
/// `PUBLISH_TIMEOUT` after which the publish is answered `unavailable`.
const OUTBOUND_CAPACITY: usize = 8192;
/// Publishes sent in one pipeline at most (one write, one round trip).
const PIPELINE_MAX: usize = 512;
/// Reconnect backoff: the first wait, and the cap.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The cluster broker of a node in cluster mode.
#[derive(Debug)]
pub(crate) struct RedisBroker {
    shared: Arc<Shared>,
}

/// What the bridge's tasks, the node's workers and the broker share.
#[derive(Debug)]
pub(crate) struct Shared {
    prefix: String,
    node_id: String,
    max_message_bytes: usize,
    shards: Vec<Shard>,
    broadcaster: OnceLock<Arc<Broadcaster>>,
    canary: Mutex<Canary>,
    /// The node the bridge answers for (other nodes' questions about its rooms and sessions).
    local: OnceLock<Weak<dyn LocalNode>>,
    /// Relay rooms' channels, to the rooms' keys (`\0relay\0<endpoint>\0<room>`).
    relay_keys: Mutex<HashMap<String, String>>,
    /// Questions this node asked of every node, by number, and where their answers go.
    asks: Mutex<HashMap<u64, mpsc::Sender<Value>>>,
    next_ask: AtomicU64,
    /// Set by the drain: the registry entry is no longer refreshed.
    leaving: AtomicBool,
    /// The node's room logs, where history rooms' messages are delivered from.
    history: OnceLock<Arc<History>>,
    publish_script: redis::Script,
    read_script: redis::Script,
    presence_scripts: presence::Scripts,
    /// History reads in flight, shared by every session that asks the same (see `read`).
    reads: Mutex<HashMap<ReadKey, SharedRead>>,
    read_permits: tokio::sync::Semaphore,
    /// Presence: the node's room rules, the changes it hands the bridge (and where restores
    /// queue behind them), and the prefix of this process's session ids.
    presence_rules: Mutex<Option<crate::config::RoomRules>>,
    changes: Mutex<Option<mpsc::Receiver<crate::presence::ToBridge>>>,
    /// Where restores are asked for, behind the changes already queued.
    to_bridge: Mutex<Option<mpsc::Sender<crate::presence::ToBridge>>>,
    instance: Mutex<String>,
}

/// What other nodes may ask of this one, through the bridge (implemented by `Node`).
pub(crate) trait LocalNode: Send + Sync {
    /// This node's registry entry.
    fn record(&self) -> NodeRecord;
    /// Members of `room` on this node.
    fn members_of(&self, room: &str) -> usize;
    /// Kicks the session with this id if it is here; whether it was.
    fn kick_here(&self, session: &str) -> bool;
    /// Sends the session with this id, if it is here, a direct message: `Ok(false)` when it is
    /// not here, `Err` when it is but its mailbox is full.
    fn direct_here(&self, session: &str, data: &RawValue) -> Result<bool, String>;
    /// Puts the cluster's shared policy document (origins and subprotocols) in force here.
    fn apply_policy(&self, document: &[u8]);
}

/// A node as the registry lists it (`<prefix>:nodeinfo:<id>`, JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct NodeRecord {
    pub(crate) id: String,
    /// The WebSocket listen address.
    pub(crate) address: String,
    pub(crate) version: String,
    pub(crate) sessions: usize,
    /// Unix seconds of the entry's last refresh.
    pub(crate) last_seen: u64,
}

/// The answers to a question asked of every node.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    /// One per node that answered in time (its JSON answer, with `node`).
    pub(crate) answers: Vec<Value>,
    /// Nodes in the registry that did not answer in time.
    pub(crate) missing: Vec<String>,
}

#[derive(Debug)]
struct Canary {
    /// When the oldest canary not yet back was sent.
    pending_since: Option<Instant>,
    /// When a canary last came back.
    last_back: Option<Instant>,
    /// When the node's registry entry was last written.
    registered: Option<Instant>,
}

/// One Redis instance and the rooms that live on it.
#[derive(Debug)]
struct Shard {
    index: usize,
    url: String,
    publisher: RwLock<Option<MultiplexedConnection>>,
    /// The subscription link is up and every wanted room was subscribed again on it.
    linked: AtomicBool,
    rooms: Mutex<HashMap<String, RoomSub>>,
    /// Rooms whose wanted state changed since the task last looked.
    dirty: Mutex<HashSet<String>>,
    wake: Notify,
    /// Why the link is down, for readiness.
    error: Mutex<Option<String>>,
    /// Publishes for this instance, in the order they were made (see `OUTBOUND_CAPACITY`).
    outbound: mpsc::Sender<Outbound>,
    /// The queue's other end, taken by the instance's sending task when the bridge starts.
    outbound_rx: Mutex<Option<mpsc::Receiver<Outbound>>>,
}

/// One `PUBLISH` (or a history room's publish script) waiting to be sent, and who waits for
/// Redis's answer.
#[derive(Debug)]
struct Outbound {
    channel: String,
    message: Vec<u8>,
    /// A history room's publish: the script's keys and its other arguments.
    script: Option<([String; 2], Vec<Vec<u8>>)>,
    done: oneshot::Sender<Answered>,
}

impl Shard {
    /// The publish connection, while there is one.
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.publisher.read().ok().and_then(|c| c.clone())
    }
}

#[derive(Debug, Default)]
struct RoomSub {
    /// The room has members on this node.
    wanted: bool,
    /// Redis confirmed the subscription on the current link.
    confirmed: bool,
    /// Subscribes waiting for the confirmation.
    waiters: Vec<oneshot::Sender<()>>,
}

impl RedisBroker {
    /// The broker's shared state, to be registered as a membership observer before the
    /// broadcaster is built; [`RedisBroker::start`] then starts the bridge.
    pub(crate) fn shared(urls: &[String], prefix: &str, node_id: &str, max: usize) -> Arc<Shared> {
        let shards = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
                Shard {
                    index,
                    url: url.clone(),
                    outbound,
                    outbound_rx: Mutex::new(Some(outbound_rx)),
                    publisher: RwLock::new(None),
                    linked: AtomicBool::new(false),
                    rooms: Mutex::new(HashMap::new()),
                    dirty: Mutex::new(HashSet::new()),
                    wake: Notify::new(),
                    error: Mutex::new(Some("not connected to Redis yet".to_owned())),
                }
            })
            .collect();
        Arc::new(Shared {
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            max_message_bytes: max,
            shards,
            broadcaster: OnceLock::new(),
            local: OnceLock::new(),
            relay_keys: Mutex::new(HashMap::new()),
            asks: Mutex::new(HashMap::new()),
            next_ask: AtomicU64::new(1),
            leaving: AtomicBool::new(false),
            history: OnceLock::new(),
            publish_script: redis::Script::new(PUBLISH_SCRIPT),
            read_script: redis::Script::new(READ_SCRIPT),
            presence_scripts: presence::Scripts::default(),
            reads: Mutex::new(HashMap::new()),
            read_permits: tokio::sync::Semaphore::new(READS_IN_FLIGHT),
            presence_rules: Mutex::new(None),
            changes: Mutex::new(None),
            to_bridge: Mutex::new(None),
            instance: Mutex::new(String::new()),
            canary: Mutex::new(Canary {
                pending_since: None,
                last_back: None,
                registered: None,
            }),
        })
    }

    /// Starts the bridge's thread; the broker delivers what arrives through `broadcaster`.
    pub(crate) fn start(shared: Arc<Shared>, broadcaster: Arc<Broadcaster>) -> RedisBroker {
        let _ = shared.broadcaster.set(broadcaster);
        let bridge = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cluster".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "cluster bridge runtime failed");
                        return;
                    }
                };
                runtime.block_on(run(bridge));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cluster bridge thread failed to start");
        }
        RedisBroker { shared }
    }
}

impl Shared {
    fn shard_of(&self, room: &str) -> &Shard {
        // Fixed, so that every node puts a room on the same instance.
        let hash = crate::fnv1a(room.as_bytes());
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    fn room_channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    /// A history room's keys: its meta hash (`epoch`, `offset`) and its stream.
    fn history_keys(&self, room: &str) -> [String; 2] {
        [
            format!("{}:meta:{room}", self.prefix),
            format!("{}:stream:{room}", self.prefix),
        ]
    }

    /// Hands the bridge the node's presence: its room rules, its changes (arriving on
    /// `changes`; restores are queued behind them on `to_bridge`); `instance` starts every
    /// session id of this process.
    pub(crate) fn set_presence(
        &self,
        rules: crate::config::RoomRules,
        changes: mpsc::Receiver<crate::presence::ToBridge>,
        to_bridge: mpsc::Sender<crate::presence::ToBridge>,
        instance: String,
    ) {
        *lock(&self.to_bridge) = Some(to_bridge);
        *lock(&self.presence_rules) = Some(rules);
        *lock(&self.changes) = Some(changes);
        *lock(&self.instance) = instance;
    }

    /// Tells the bridge where the node's room logs are.
    pub(crate) fn set_history(&self, history: Arc<History>) {
        let _ = self.history.set(history);
    }

    fn new_epoch(&self) -> String {
        self.history.get().map_or_else(
            || format!("{:x}", unix_nanos()),
            |h| h.new_epoch().to_string(),
        )
    }

    /// Reads a history room's position and messages from Redis: from offset `from` on, or
    /// (`from` `None`) the last `count`.
    ///
    /// The same read asked by many sessions at once (thousands recovering after a node
    /// restart, from the room's latest offsets) is made once and shared, and at most
    /// `READS_IN_FLIGHT` reads are in flight per node, so that a burst of recoveries queues
    /// here rather than each waiting behind all the others' answers in Redis.
    pub(crate) async fn read(
        self: &Arc<Self>,
        room: &str,
        options: &Arc<RoomOptions>,
        from: Option<u64>,
        count: usize,
    ) -> Result<Arc<Read>, Unavailable> {
        let key = (room.to_owned(), from, count);
        let shared = lock(&self.reads)
            .entry(key.clone())
            .or_insert_with(|| self.start_read(key, options.clone()))
            .clone();
        shared.await
    }

    /// A read shared by every asker of the same key, running as a task of its own. A shared
    /// future only advances while someone awaits it, and the sessions that asked may all be gone
    /// before it ends (closed while they waited): unpolled, it would keep its place among the
    /// reads in flight, and its entry in `reads`, for good, and `READS_IN_FLIGHT` such reads
    /// would stop every history read of the node.
    fn start_read(self: &Arc<Self>, key: ReadKey, options: Arc<RoomOptions>) -> SharedRead {
        use futures_util::FutureExt;
        let me = self.clone();
        let read = async move {
            let (room, from, count) = &key;
            let read = match me.read_permits.acquire().await {
                Ok(_permit) => me
                    .read_once(room, &options, *from, *count)
                    .await
                    .map(Arc::new),
                Err(_) => Err(Unavailable("the node is stopping".to_owned())),
            };
            lock(&me.reads).remove(&key);
            read
        }
        .boxed()
        .shared();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(read.clone());
        }
        read
    }

    async fn read_once(
        &self,
        room: &str,
        options: &RoomOptions,
        from: Option<u64>,
        count: usize,
    ) -> Result<Read, Unavailable> {
        let shard = self.shard_of(room);
        let mut connection = shard
            .connection()
            .filter(|_| shard.linked.load(Ordering::Acquire))
            .ok_or_else(|| Unavailable(format!("redis {} is unreachable", shard.index)))?;
        let [meta, stream] = self.history_keys(room);
        let ttl = options.history_ttl.map_or(0, |t| t.as_millis() as u64);
        let mut invocation = self.read_script.key(meta);
        invocation.key(stream).arg(self.new_epoch());
        match from {
            Some(from) => invocation.arg("from").arg(from),
            None => invocation.arg("last").arg(0),
        };
        invocation.arg(count.max(1)).arg(ttl);
        let read = invocation.invoke_async::<(String, u64, Vec<String>)>(&mut connection);
        let (epoch, offset, mut envelopes) = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| Unavailable(format!("redis {} did not answer in time", shard.index)))?
            .map_err(|e| Unavailable(format!("redis {}: {e}", shard.index)))?;
        if from.is_none() {
            envelopes.reverse();
        }
        Ok(Read {
            messages: stored(room, &epoch, &envelopes),
            at: Placed {
                epoch: Arc::from(epoch),
                offset,
            },
        })
    }

    /// The channel of a room of this node's broadcaster: a protocol room's, or a relay room's
    /// (`<prefix>:relay:<endpoint>:<room>`).
    fn channel_of(&self, key: &str) -> String {
        match key.strip_prefix(RELAY_KEY) {
            Some(relay) => format!("{}:relay:{}", self.prefix, relay.replacen('\0', ":", 1)),
            None => self.room_channel(key),
        }
    }

    /// [`Shared::channel_of`] for a room about to be subscribed: a relay room's key is
    /// remembered for what arrives on its channel.
    fn subscribed_channel(&self, key: &str) -> String {
        let channel = self.channel_of(key);
        if key.starts_with(RELAY_KEY) {
            lock(&self.relay_keys).insert(channel.clone(), key.to_owned());
        }
        channel
    }

    fn node_channel(&self) -> String {
        self.node_channel_of(&self.node_id)
    }

    fn node_channel_of(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// The channel every node listens to: questions to all nodes.
    fn nodes_channel(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn policy_key(&self) -> String {
        format!("{}:policy", self.prefix)
    }

    /// Stores `document` (this node's policy after an admin edit) as the cluster's and tells
    /// every node, which puts it in force within about a round trip.
    pub(crate) async fn share_policy(&self, document: String) -> Result<(), String> {
        let mut connection = self.control()?;
        let mut set = redis::cmd("SET");
        set.arg(self.policy_key()).arg(document);
        tokio::time::timeout(PUBLISH_TIMEOUT, set.query_async::<()>(&mut connection))
            .await
            .map_err(|_| "redis 0 did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut publish = redis::cmd("PUBLISH");
        let announce = json!({"t":"policy","from":self.node_id}).to_string();
        publish.arg(self.nodes_channel()).arg(announce);
        tokio::time::timeout(PUBLISH_TIMEOUT, publish.query_async::<i64>(&mut connection))
            .await
            .map_err(|_| "redis 0 did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn registry_key(&self, node: &str) -> String {
        format!("{}:nodeinfo:{node}", self.prefix)
    }

    /// Tells the bridge which node it answers for.
    pub(crate) fn set_local(&self, local: Weak<dyn LocalNode>) {
        let _ = self.local.set(local);
    }

    fn local(&self) -> Option<Arc<dyn LocalNode>> {
        self.local.get().and_then(Weak::upgrade)
    }

    /// The first instance's publish connection, for node-wide traffic.
    fn control(&self) -> Result<MultiplexedConnection, String> {
        self.shards[0]
            .connection()
            .ok_or_else(|| "redis 0 is unreachable".to_owned())
    }

    /// Removes this node's registry entry and stops refreshing it (the node is draining).
    pub(crate) async fn deregister(&self) -> Result<(), String> {
        self.leaving.store(true, Ordering::Relaxed);
        let mut connection = self.control()?;
        let mut del = redis::cmd("DEL");
        del.arg(self.registry_key(&self.node_id));
        tokio::time::timeout(PUBLISH_TIMEOUT, del.query_async::<i64>(&mut connection))
            .await
            .map_err(|_| "redis 0 did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The nodes of the cluster, from the registry, in id order.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeRecord>, String> {
        let mut connection = self.control()?;
        let pattern = format!("{}:nodeinfo:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let scan = cmd.query_async::<(u64, Vec<String>)>(&mut connection);
            let (next, found) = tokio::time::timeout(PUBLISH_TIMEOUT, scan)
                .await
                .map_err(|_| "redis 0 did not answer in time".to_owned())?
                .map_err(|e| e.to_string())?;
            keys.extend(found);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        let get = cmd.query_async::<Vec<Option<String>>>(&mut connection);
        let values = tokio::time::timeout(PUBLISH_TIMEOUT, get)
            .await
            .map_err(|_| "redis 0 did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut nodes: Vec<NodeRecord> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Asks every node of the registry `question` (a JSON object with `what`) and collects
    /// their answers for up to `ASK_TIMEOUT`; this node answers too.
    pub(crate) async fn ask(&self, mut question: Value) -> Result<Answers, String> {
        let expected: HashSet<String> = self.nodes().await?.into_iter().map(|n| n.id).collect();
        let q = self.next_ask.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(ASK_ANSWERS);
        lock(&self.asks).insert(q, tx);
        let _forget = Forget(self, q);
        question["t"] = json!("ask");
        question["q"] = json!(q);
        question["from"] = json!(self.node_id);
        let mut connection = self.control()?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.nodes_channel()).arg(question.to_string());
        tokio::time::timeout(PUBLISH_TIMEOUT, cmd.query_async::<i64>(&mut connection))
            .await
            .map_err(|_| "redis 0 did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut answered: HashSet<String> = HashSet::new();
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + ASK_TIMEOUT;
        while !expected.iter().all(|n| answered.contains(n)) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => {
                    let node = answer["node"].as_str().unwrap_or_default().to_owned();
                    if answered.insert(node) {
                        answers.push(answer);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut missing: Vec<String> = expected.difference(&answered).cloned().collect();
        missing.sort();
        Ok(Answers { answers, missing })
    }

    /// Queues one `PUBLISH` on `shard`'s connection. Queued at once when there is room, so
    /// that a publisher's messages keep their order and many can be in flight
    /// (`Delivery::is_pipelined`); otherwise the delivery waits for room.
    fn send(&self, shard: &Shard, channel: String, message: Vec<u8>) -> Delivery {
        self.send_outbound(shard, channel, message, None)
    }

    fn send_outbound(
        &self,
        shard: &Shard,
        channel: String,
        message: Vec<u8>,
        script: Option<([String; 2], Vec<Vec<u8>>)>,
    ) -> Delivery {
        if !shard.linked.load(Ordering::Acquire) {
            let why = format!("redis {} is unreachable", shard.index);
            return Delivery::by_broker(Box::pin(async move { Err(Unavailable(why)) }), false);
        }
        let index = shard.index;
        let (done, answer) = oneshot::channel();
        let outbound = Outbound {
            channel,
            message,
            script,
            done,
        };
        let answered = async move {
            match answer.await {
                Ok(result) => result,
                Err(_) => Err(Unavailable(format!("redis {index}: the link was lost"))),
            }
        };
        match shard.outbound.try_send(outbound) {
            Ok(()) => Delivery::by_broker(Box::pin(answered), true),
            Err(mpsc::error::TrySendError::Full(outbound)) => {
                let queue = shard.outbound.clone();
                Delivery::by_broker(
                    Box::pin(async move {
                        match tokio::time::timeout(PUBLISH_TIMEOUT, queue.send(outbound)).await {
                            Ok(Ok(())) => answered.await,
                            Ok(Err(_)) => Err(Unavailable(format!("redis {index}: closed"))),
                            Err(_) => Err(Unavailable(format!(
                                "redis {index}: the node's publishes to it are backed up"
                            ))),
                        }
                    }),
                    false,
                )
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::by_broker(
                Box::pin(async move { Err(Unavailable(format!("redis {index}: closed"))) }),
                false,
            ),
        }
    }

    fn want(&self, room: &str, wanted: bool) {
        let shard = self.shard_of(room);
        lock(&shard.rooms)
            .entry(room.to_owned())
            .or_default()
            .wanted = wanted;
        lock(&shard.dirty).insert(room.to_owned());
        shard.wake.notify_one();
    }

    fn health(&self) -> Result<(), String> {
        for shard in &self.shards {
            if !shard.linked.load(Ordering::Acquire) {
                let why = lock(&shard.error).clone().unwrap_or_default();
                return Err(format!("redis {} ({}): {why}", shard.index, shard.url));
            }
        }
        let canary = lock(&self.canary);
        let now = Instant::now();
        match (canary.pending_since, canary.last_back) {
            (Some(since), _) if now.duration_since(since) > CANARY_DEADLINE => Err(format!(
                "the canary through Redis is {:.1} s overdue",
                now.duration_since(since).as_secs_f64()
            )),
            (_, None) => Err("no canary has come back through Redis yet".to_owned()),
            _ => Ok(()),
        }
    }
}

impl MembershipObserver for Shared {
    fn event(&self, event: &MembershipEvent<'_>) {
        match event {
            MembershipEvent::RoomActive { room } => self.want(room, true),
            MembershipEvent::RoomIdle { room } => self.want(room, false),
            MembershipEvent::MemberJoined { .. } | MembershipEvent::MemberLeft { .. } => {}
        }
    }
}

impl Broker for RedisBroker {
    fn reach(&self) -> Scope {
        Scope::Cluster
    }

    fn publish(&self, publish: ClusterPublish<'_>) -> Delivery {
        let shared = &self.shared;
        let room = &publish.envelope.room;
        let channel = shared.room_channel(room);
        shared.send(
            shared.shard_of(room),
            channel,
            publish.envelope.encode().into_bytes(),
        )
    }

    fn publish_relay(&self, publish: RelayPublish<'_>) -> Delivery {
        let shared = &self.shared;
        // The message: the opcode, the publishing node (which delivers it to all but its
        // sender), the sender, then the payload as it came.
        let node = shared.node_id.as_bytes();
        let mut message = Vec::with_capacity(2 + node.len() + 8 + publish.payload.len());
        message.push(publish.opcode);
        message.push(node.len() as u8);
        message.extend_from_slice(node);
        message.extend_from_slice(&publish.except.map_or(0, |s| s.0).to_be_bytes());
        message.extend_from_slice(publish.payload);
        let channel = shared.channel_of(publish.key);
        shared.send(shared.shard_of(publish.key), channel, message)
    }

    fn publish_history(&self, publish: ClusterPublish<'_>, options: &RoomOptions) -> Delivery {
        let shared = &self.shared;
        let room = &publish.envelope.room;
        let (head, tail) = publish.envelope.encode_around_position();
        let ttl = options.history_ttl.map_or(0, |t| t.as_millis() as u64);
        let args = vec![
            shared.new_epoch().into_bytes(),
            head.into_bytes(),
            tail.into_bytes(),
            options.history_size.to_string().into_bytes(),
            ttl.to_string().into_bytes(),
        ];
        let channel = shared.room_channel(room);
        let keys = shared.history_keys(room);
        shared.send_outbound(
            shared.shard_of(room),
            channel,
            Vec::new(),
            Some((keys, args)),
        )
    }

    fn in_place(&self, room: &str) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        let shard = self.shared.shard_of(room);
        // Redis is out of reach: the member is in the room here, and the room is subscribed
        // again (with a gap frame) when the link is back.
        if !shard.linked.load(Ordering::Acquire) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut rooms = lock(&shard.rooms);
            let sub = rooms.entry(room.to_owned()).or_default();
            if sub.confirmed {
                return None;
            }
            sub.waiters.push(tx);
        }
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await;
        }))
    }

    fn health(&self) -> Result<(), String> {
        self.shared.health()
    }
}

/// The bridge: one task per Redis instance, and the canary.
async fn run(shared: Arc<Shared>) {
    for index in 0..shared.shards.len() {
        tokio::spawn(run_shard(shared.clone(), index));
        if let Some(queue) = lock(&shared.shards[index].outbound_rx).take() {
            tokio::spawn(run_outbound(shared.clone(), index, queue));
        }
    }
    if let Some(changes) = lock(&shared.changes).take() {
        tokio::spawn(presence::run_changes(shared.clone(), changes));
        tokio::spawn(presence::run_sweeps(shared.clone()));
    }
    canary(shared).await;
}

/// Sends a canary every `CANARY_INTERVAL` on the first instance's node channel.
async fn canary(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(CANARY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        {
            let mut canary = lock(&shared.canary);
            canary.pending_since.get_or_insert_with(Instant::now);
            if let Some(since) = canary.pending_since {
                let overdue = since.elapsed();
                if overdue > CANARY_DEADLINE {
                    metrics().cluster.lag_seconds.set(overdue.as_secs_f64());
                }
            }
        }
        let Ok(mut connection) = shared.control() else {
            continue;
        };
        let sent = json!({"t":"canary","sent":unix_nanos().to_string()}).to_string();
        let channel = shared.node_channel();
        if let Some(local) = shared
            .local()
            .filter(|_| !shared.leaving.load(Ordering::Relaxed))
        {
            let now = Instant::now();
            let due = {
                let mut canary = lock(&shared.canary);
                let due = canary
                    .registered
                    .is_none_or(|at| now.duration_since(at) >= REGISTRY_REFRESH);
                if due {
                    canary.registered = Some(now);
                }
                due
            };
            if due {
                let mut record = local.record();
                record.last_seen = (unix_nanos() / 1_000_000_000) as u64;
                let key = shared.registry_key(&record.id);
                let value = serde_json::to_string(&record).unwrap_or_default();
                let mut registry = connection.clone();
                tokio::spawn(async move {
                    let mut cmd = redis::cmd("SET");
                    cmd.arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(REGISTRY_TTL.as_secs());
                    let set = cmd.query_async::<()>(&mut registry);
                    let _ = tokio::time::timeout(CANARY_DEADLINE, set).await;
                });
            }
        }
        // Not awaited inline: a frozen Redis must not stop the ticks that report it.
        tokio::spawn(async move {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel).arg(sent);
            let publish = cmd.query_async::<i64>(&mut connection);
            let _ = tokio::time::timeout(CANARY_DEADLINE, publish).await;
        });
    }
}

/// Sends one Redis instance's queued publishes, in order, as pipelines: whatever is queued when
/// the previous pipeline's answer came back goes in the next (up to `PIPELINE_MAX`), so one
/// round trip carries many publishes when there are many, and one when there is one.
async fn run_outbound(shared: Arc<Shared>, index: usize, mut queue: mpsc::Receiver<Outbound>) {
    let shard = &shared.shards[index];
    let mut batch: Vec<Outbound> = Vec::with_capacity(PIPELINE_MAX);
    let queued = metrics()
        .cluster
        .queued
        .with_label_values(&[&index.to_string()]);
    loop {
        if queue.recv_many(&mut batch, PIPELINE_MAX).await == 0 {
            return;
        }
        queued.set((batch.len() + queue.len()) as i64);
        let connection = shard
            .connection()
            .filter(|_| shard.linked.load(Ordering::Acquire));
        let result = match connection {
            None => Err(Unavailable(format!("redis {index} is unreachable"))),
            Some(mut connection) => {
                let mut pipe = redis::pipe();
                let sha = shared.publish_script.get_hash();
                for o in &batch {
                    match &o.script {
                        None => pipe.cmd("PUBLISH").arg(&o.channel).arg(&o.message),
                        Some(([meta, stream], args)) => pipe
                            .cmd("EVALSHA")
                            .arg(sha)
                            .arg(2)
                            .arg(meta)
                            .arg(stream)
                            .arg(&o.channel)
                            .arg(args),
                    };
                }
                let started = Instant::now();
                let query = pipe.query_async::<Vec<redis::Value>>(&mut connection);
                match tokio::time::timeout(PUBLISH_TIMEOUT, query).await {
                    Ok(Ok(values)) => {
                        let m = &metrics().cluster;
                        m.publish_seconds.observe(started.elapsed().as_secs_f64());
                        m.messages_out.inc_by(batch.len() as u64);
                        Ok(values)
                    }
                    Ok(Err(e)) => Err(Unavailable(format!("redis {index}: {e}"))),
                    Err(_) => Err(Unavailable(format!("redis {index} did not answer in time"))),
                }
            }
        };
        match result {
            Ok(values) => {
                let mut values = values.into_iter();
                for o in batch.drain(..) {
                    let value = values.next();
                    let answer = match (&o.script, value) {
                        (None, _) => Ok(None),
                        (Some(_), Some(value)) => {
                            match redis::from_owned_redis_value::<(u64, String)>(value) {
                                Ok((offset, epoch)) => Ok(Some(Placed {
                                    epoch: Arc::from(epoch),
                                    offset,
                                })),
                                Err(e) => Err(Unavailable(format!("redis {index}: {e}"))),
                            }
                        }
                        (Some(_), None) => Err(Unavailable(format!(
                            "redis {index}: no answer to the script"
                        ))),
                    };
                    let _ = o.done.send(answer);
                }
            }
            Err(e) => {
                for o in batch.drain(..) {
                    let _ = o.done.send(Err(e.clone()));
                }
            }
        }
        queued.set(queue.len() as i64);
    }
}

/// Keeps one Redis instance's links up, for as long as the node runs.
async fn run_shard(shared: Arc<Shared>, index: usize) {
    let shard = &shared.shards[index];
    let label = index.to_string();
    let connected = metrics().cluster.connected.with_label_values(&[&label]);
    connected.set(0);
    let mut backoff = BACKOFF_MIN;
    let mut was_linked = false;
    loop {
        match link(&shared, shard, was_linked).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                metrics().cluster.reconnects.inc();
            }
            Err(e) => {
                tracing::warn!(redis = index, url = %shard.url, error = %e, "redis link failed");
                *lock(&shard.error) = Some(e);
            }
        }
        if shard.linked.swap(false, Ordering::AcqRel) {
            was_linked = true;
            tracing::warn!(redis = index, "redis link lost");
        }
        connected.set(0);
        if let Ok(mut publisher) = shard.publisher.write() {
            *publisher = None;
        }
        for sub in lock(&shard.rooms).values_mut() {
            sub.confirmed = false;
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One life of an instance's links: connects, subscribes every wanted room, then follows the
/// membership and delivers what arrives until the link fails. `Ok` when an established link was
/// lost, `Err` when it could not be established.
async fn link(shared: &Arc<Shared>, shard: &Shard, was_linked: bool) -> Result<(), String> {
    let client = redis::Client::open(shard.url.as_str()).map_err(|e| e.to_string())?;
    let publisher = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_tokio_connection_with_response_timeouts(
            PUBLISH_TIMEOUT,
            Duration::from_secs(2),
        ),
    )
    .await
    .map_err(|_| "connecting timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    // Envelopes are at most the message limit plus their fields; relay messages the limit
    // plus a header. Anything longer breaks the link rather than growing a buffer.
    let max_bulk = shared.max_message_bytes * 2 + 4096;
    let mut link = SubscriptionLink::connect(
        client.get_connection_info(),
        &format!("switchboard:{}:subscriptions", shared.node_id),
        max_bulk,
        Duration::from_secs(5),
    )
    .await?;
    let mut channels: Vec<String> = Vec::new();
    if shard.index == 0 {
        channels.push(shared.node_channel());
        channels.push(shared.nodes_channel());
        // A link made again: the registry entry is written at the next tick.
        lock(&shared.canary).registered = None;
    }
    // Every room wanted now is (re)subscribed; those changed meanwhile are in `dirty` too.
    let wanted: Vec<String> = lock(&shard.rooms)
        .iter()
        .filter(|(_, sub)| sub.wanted)
        .map(|(room, _)| room.clone())
        .collect();
    channels.extend(wanted.iter().map(|room| shared.subscribed_channel(room)));
    // The link was lost and is back: whatever was published meanwhile may be missing, which
    // each room's members are told once the room is subscribed again.
    let mut gaps: HashSet<String> = if was_linked {
        wanted.iter().cloned().collect()
    } else {
        HashSet::new()
    };
    for chunk in channels.chunks(1000) {
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(chunk.iter().map(|c| c.as_bytes()));
        link.send(&args).await.map_err(|e| e.to_string())?;
    }
    // History rooms' publishes run the script by its hash, in pipelines: it must be known to
    // this Redis (a restarted one has forgotten it) before anything is sent.
    let mut publisher = publisher;
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(PUBLISH_SCRIPT);
    tokio::time::timeout(PUBLISH_TIMEOUT, load.query_async::<String>(&mut publisher))
        .await
        .map_err(|_| "SCRIPT LOAD timed out".to_owned())?
        .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
    if let Ok(mut slot) = shard.publisher.write() {
        *slot = Some(publisher);
    }
    *lock(&shard.error) = None;
    shard.linked.store(true, Ordering::Release);
    metrics()
        .cluster
        .connected
        .with_label_values(&[&shard.index.to_string()])
        .set(1);
    tracing::info!(redis = shard.index, rooms = wanted.len(), "redis link up");
    if shard.index == 0 {
        // Changes made while this node was away (or before it started) are in force from now.
        load_policy(shared);
    }
    if let Some(to_bridge) = lock(&shared.to_bridge).clone() {
        // In order behind the changes already queued: what they did is what is put back.
        let index = shard.index;
        tokio::spawn(async move {
            let _ = to_bridge
                .send(crate::presence::ToBridge::Restore(index))
                .await;
        });
    }
    let prefix = format!("{}:room:", shared.prefix);
    let relay_prefix = format!("{}:relay:", shared.prefix);
    let node_channel = shared.node_channel();
    let nodes_channel = shared.nodes_channel();
    // The key (room name, or relay room key) a channel of this node's belongs to.
    let key_of = |channel: &str| -> Option<String> {
        if let Some(room) = channel.strip_prefix(prefix.as_str()) {
            Some(room.to_owned())
        } else if channel.starts_with(relay_prefix.as_str()) {
            lock(&shared.relay_keys).get(channel).cloned()
        } else {
            None
        }
    };
    loop {
        tokio::select! {
            push = link.next() => {
                let push = match push {
                    Ok(push) => push,
                    Err(e) => {
                        tracing::warn!(redis = shard.index, error = %e, "redis subscription link failed");
                        return Ok(());
                    }
                };
                match push {
                    Push::Message { channel, payload } => {
                        let Ok(channel) = std::str::from_utf8(&channel) else {
                            continue;
                        };
                        if channel == node_channel {
                            on_node_channel(shared, &payload);
                        } else if channel == nodes_channel {
                            on_question(shared, &payload);
                        } else if let Some(room) = channel.strip_prefix(prefix.as_str()) {
                            deliver(shared, room, &payload).await;
                        } else if let Some(key) = key_of(channel) {
                            deliver_relay(shared, &key, &payload).await;
                        }
                    }
                    Push::Subscribed { channel } => {
                        let Some(key) = std::str::from_utf8(&channel).ok().and_then(&key_of) else {
                            continue;
                        };
                        confirm(shard, &key);
                        if gaps.remove(&key) {
                            // A history room fetches what it missed from its stream; others
                            // can only say that they may have missed something.
                            let log = shared.history.get().and_then(|h| h.get(&key));
                            match log.as_ref().and_then(|log| log.head().map(|h| (log, h))) {
                                Some((log, head)) => {
                                    refill(shared, &key, log, head.offset + 1, u64::MAX).await;
                                }
                                None => gap(shared, &key),
                            }
                        }
                    }
                    Push::Other => {}
                }
            }
            () = shard.wake.notified() => {
                let changed: Vec<String> = lock(&shard.dirty).drain().collect();
                for room in changed {
                    let wanted = lock(&shard.rooms).get(&room).map(|s| (s.wanted, s.confirmed));
                    match wanted {
                        Some((true, false)) => {
                            let channel = shared.subscribed_channel(&room);
                            link.send(&[b"SUBSCRIBE", channel.as_bytes()])
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        Some((false, _)) => {
                            let channel = shared.channel_of(&room);
                            link.send(&[b"UNSUBSCRIBE", channel.as_bytes()])
                                .await
                                .map_err(|e| e.to_string())?;
                            let mut rooms = lock(&shard.rooms);
                            // Wanted again meanwhile: it is dirty again and handled next.
                            if rooms.get(&room).is_some_and(|s| !s.wanted) {
                                rooms.remove(&room);
                                if room.starts_with(RELAY_KEY) {
                                    lock(&shared.relay_keys).remove(&channel);
                                }
                            }
                        }
                        Some((true, true)) | None => {}
                    }
                }
            }
        }
    }
}

/// Drops a question's answer channel when the asker is done with it.
struct Forget<'a>(&'a Shared, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.0.asks).remove(&self.1);
    }
}

/// A message on this node's own channel: its canary, or an answer to one of its questions.
fn on_node_channel(shared: &Shared, payload: &[u8]) {
    let Ok(message) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    match message["t"].as_str() {
        Some("canary") => canary_back(shared, message["sent"].as_str()),
        Some("answer") => {
            let Some(q) = message["q"].as_u64() else {
                return;
            };
            if let Some(tx) = lock(&shared.asks).get(&q) {
                // Full: more answers than nodes; the asker lists the rest as missing.
                let _ = tx.try_send(message);
            }
        }
        _ => {}
    }
}

/// A question from a node (this one included) to every node: answered on the asker's channel.
fn on_question(shared: &Shared, payload: &[u8]) {
    let Ok(question) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    if question["t"] == "policy" {
        if question["from"] != shared.node_id.as_str() {
            load_policy(shared);
        }
        return;
    }
    let (Some("ask"), Some(q), Some(from)) = (
        question["t"].as_str(),
        question["q"].as_u64(),
        question["from"].as_str(),
    ) else {
        return;
    };
    let Some(local) = shared.local() else {
        return;
    };
    let mut answer = json!({"t":"answer","q":q,"node":shared.node_id});
    match question["what"].as_str() {
        Some("room") => {
            let room = question["room"].as_str().unwrap_or_default();
            answer["members"] = json!(local.members_of(room));
        }
        Some("kick") => {
            let session = question["session"].as_str().unwrap_or_default();
            answer["found"] = json!(local.kick_here(session));
        }
        Some("direct") => {
            let session = question["session"].as_str().unwrap_or_default();
            let data = question["data"].to_string();
            match RawValue::from_string(data).map(|d| local.direct_here(session, &d)) {
                Ok(Ok(found)) => answer["found"] = json!(found),
                Ok(Err(e)) => {
                    answer["found"] = json!(true);
                    answer["error"] = json!(e);
                }
                Err(_) => return,
            }
        }
        _ => return,
    }
    let Ok(mut connection) = shared.control() else {
        return;
    };
    let channel = shared.node_channel_of(from);
    tokio::spawn(async move {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(answer.to_string());
        let _ =
            tokio::time::timeout(PUBLISH_TIMEOUT, cmd.query_async::<i64>(&mut connection)).await;
    });
}

/// Reads the cluster's policy document and puts it in force here (none stored: nothing to do).
fn load_policy(shared: &Shared) {
    let (Ok(mut connection), Some(local)) = (shared.control(), shared.local()) else {
        return;
    };
    let key = shared.policy_key();
    tokio::spawn(async move {
        let mut get = redis::cmd("GET");
        get.arg(key);
        match tokio::time::timeout(
            PUBLISH_TIMEOUT,
            get.query_async::<Option<Vec<u8>>>(&mut connection),
        )
        .await
        {
            Ok(Ok(Some(document))) => local.apply_policy(&document),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the cluster's policy could not be read"),
            Err(_) => tracing::warn!("the cluster's policy could not be read in time"),
        }
    });
}

/// Marks `room` subscribed on the current link and releases the subscribes waiting for it.
fn confirm(shard: &Shard, room: &str) {
    let mut rooms = lock(&shard.rooms);
    if let Some(sub) = rooms.get_mut(room) {
        sub.confirmed = true;
        for waiter in sub.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// A cluster message from Redis, to this node's members of `room`.
async fn deliver(shared: &Arc<Shared>, room: &str, payload: &[u8]) {
    let Some(broadcaster) = shared.broadcaster.get() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(payload) else {
        tracing::warn!(room, "cluster message is not UTF-8; dropped");
        return;
    };
    let envelope = match Envelope::decode(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            tracing::warn!(room, error = %e, "cluster message refused");
            return;
        }
    };
    if envelope.room != room {
        tracing::warn!(room, "cluster message names another room; dropped");
        return;
    }
    let size = ServerFrame::message_len(
        room,
        envelope.data,
        &envelope.from,
        envelope.user.as_deref(),
    );
    if size > shared.max_message_bytes {
        tracing::warn!(
            room,
            size,
            "cluster message over the message limit; dropped"
        );
        return;
    }
    metrics().cluster.messages_in.inc();
    match envelope.kind {
        switchboard_protocol::Kind::Message => {}
        kind => return deliver_membership(broadcaster, room, &envelope, kind).await,
    }
    if let (Some(offset), Some(epoch)) = (envelope.offset, envelope.epoch.as_deref()) {
        let placed = Placed {
            epoch: Arc::from(epoch),
            offset,
        };
        return deliver_logged(shared, room, &envelope, placed).await;
    }
    let frame = message_frame(
        room,
        envelope.data,
        &envelope.from,
        envelope.user.as_deref(),
    );
    let delivery = Delivery::to_node(broadcaster, None, room, frame, None);
    // A full room queue holds the bridge (and so this instance's later messages, in order)
    // until there is room.
    if !delivery.is_done() {
        let _ = delivery.finish().await;
    }
}

/// A history room's message from Redis, in offset order: one this node had is dropped, a hole
/// before it is filled from the room's stream first (or, when the stream no longer has those
/// messages, announced with `gap`), and a new epoch (the history was lost) is announced with
/// `gap` too.
async fn deliver_logged(shared: &Arc<Shared>, room: &str, envelope: &Envelope<'_>, placed: Placed) {
    let Some(log) = shared.history.get().and_then(|h| h.get(room)) else {
        // No member of the room here any more.
        return;
    };
    match log.head() {
        Some(head) if head.epoch == placed.epoch && placed.offset <= head.offset => return,
        Some(head) if head.epoch == placed.epoch && placed.offset > head.offset + 1 => {
            refill(shared, room, &log, head.offset + 1, placed.offset - 1).await;
            if log
                .head()
                .is_some_and(|h| h.epoch == placed.epoch && placed.offset <= h.offset)
            {
                return;
            }
        }
        Some(head) if head.epoch != placed.epoch => gap(shared, room),
        _ => {}
    }
    append(&log, room, envelope, placed).await;
}

/// Appends a history room's message to its log, waiting while the workers are that far behind.
async fn append(log: &history::RoomLog, room: &str, envelope: &Envelope<'_>, placed: Placed) {
    let (frame, json_at) = logged_frame(
        room,
        envelope.data,
        &envelope.from,
        envelope.user.as_deref(),
        placed.position(),
    );
    append_frame(log, placed, frame, json_at).await;
}

async fn append_frame(
    log: &history::RoomLog,
    placed: Placed,
    mut frame: crate::codec::Frame,
    json_at: usize,
) {
    loop {
        match log.append_at(&placed, frame, json_at) {
            Ok(wake) => return history::wake(wake),
            Err((history::Full, back)) => {
                frame = back;
                log.room().await;
            }
        }
    }
}

/// Fetches a history room's messages `from` to `to` (as far as the stream goes) from Redis and
/// delivers them; those the stream no longer has are announced with `gap`.
async fn refill(shared: &Arc<Shared>, room: &str, log: &history::RoomLog, from: u64, to: u64) {
    let options = log.options().clone();
    let count = (to.saturating_sub(from) + 1).min(options.history_size as u64) as usize;
    let read = match shared.read(room, &options, Some(from), count).await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(room, error = %e, "missed history messages could not be fetched");
            return gap(shared, room);
        }
    };
    let mut expected = from;
    let epoch = &read.at.epoch;
    for message in &read.messages {
        let offset = message.offset;
        if offset > to {
            break;
        }
        if offset > expected {
            // Trimmed or expired meanwhile: these are gone.
            gap(shared, room);
        }
        expected = offset + 1;
        if log
            .head()
            .is_some_and(|h| h.epoch == *epoch && offset <= h.offset)
        {
            continue;
        }
        metrics().history.refetched.inc();
        let placed = Placed {
            epoch: epoch.clone(),
            offset,
        };
        append_frame(log, placed, message.frame.clone(), message.json_at).await;
    }
    if expected <= to.min(read.at.offset) {
        gap(shared, room);
    }
}

/// A member's join or leave from Redis, to this node's members of `room`.
async fn deliver_membership(
    broadcaster: &Broadcaster,
    room: &str,
    envelope: &Envelope<'_>,
    kind: switchboard_protocol::Kind,
) {
    let (session, user) = (&*envelope.from, envelope.user.as_deref());
    let frame = match kind {
        switchboard_protocol::Kind::Join => ServerFrame::Join {
            room,
            session,
            user,
        },
        _ => ServerFrame::Leave {
            room,
            session,
            user,
        },
    };
    let delivery = Delivery::to_node(broadcaster, None, room, text_frame_of(&frame), None);
    if !delivery.is_done() {
        let _ = delivery.finish().await;
    }
}

/// A relay message from Redis, to this node's members of the relay room `key` (but its sender,
/// when it was published here).
async fn deliver_relay(shared: &Shared, key: &str, message: &[u8]) {
    let Some(broadcaster) = shared.broadcaster.get() else {
        return;
    };
    let Some((&opcode, rest)) = message.split_first() else {
        return;
    };
    let Some((&len, rest)) = rest.split_first() else {
        return;
    };
    let len = usize::from(len);
    if rest.len() < len + 8 || !matches!(opcode, opcode::TEXT | opcode::BINARY) {
        tracing::warn!("relay message refused: malformed");
        return;
    }
    let (node, rest) = rest.split_at(len);
    let (sender, payload) = rest.split_at(8);
    if payload.len() > shared.max_message_bytes {
        tracing::warn!("relay message over the message limit; dropped");
        return;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(sender);
    let except = (node == shared.node_id.as_bytes()).then(|| SessionId(u64::from_be_bytes(id)));
    metrics().cluster.messages_in.inc();
    let delivery = Delivery::to_node(broadcaster, None, key, frame(opcode, payload), except);
    if !delivery.is_done() {
        let _ = delivery.finish().await;
    }
}

/// Tells this node's members of `room` that messages may have been missed.
fn gap(shared: &Shared, room: &str) {
    let Some(broadcaster) = shared.broadcaster.get() else {
        return;
    };
    metrics().cluster.gaps.inc();
    let frame = text_frame_of(&ServerFrame::Gap { room });
    // A gap frame that finds a room queue full is not waited for: it would only repeat what
    // the lost link already means for that room's members, who are being held up anyway.
    let _ = Delivery::to_node(broadcaster, None, room, frame, None);
}

fn canary_back(shared: &Shared, sent: Option<&str>) {
    let sent = sent.and_then(|s| s.parse::<u128>().ok());
    let mut canary = lock(&shared.canary);
    canary.pending_since = None;
    canary.last_back = Some(Instant::now());
    if let Some(sent) = sent {
        let lag = unix_nanos().saturating_sub(sent) as f64 / 1e9;
        metrics().cluster.lag_seconds.set(lag);
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `base` spread by ±25%, so that nodes that lost Redis together do not return in step.
fn jitter(base: Duration) -> Duration {
    let spread = (unix_nanos() % 500) as f64 / 1000.0; // 0 to 0.5
    base.mul_f64(0.75 + spread)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
