//! Presence in cluster mode: the members of tracked rooms in Redis, shared by every node.
//!
//! Keys, on the Redis instance the room's name hashes to:
//! - `<prefix>:presence:<room>`: a hash, session id to `{"user":..,"node":..,"key":..}`;
//! - `<prefix>:presence-users:<room>`: a hash, user key (`u:<user>` or `s:<session>`) to its
//!   number of sessions in the room;
//! - `<prefix>:leaving:<room>:<user key>`: a user whose last session left, waiting for the
//!   room's `leave_debounce` (its value is the waiting node's token);
//! - `<prefix>:presence-rooms:<node>`: the rooms where the node has members;
//! - `<prefix>:presence-nodes`: the nodes that have members anywhere.
//!
//! Each change is one script, atomic, so that two nodes seeing the same user come and go agree
//! on whether anything is announced. Announcements are envelopes of kind `join` or `leave` on
//! the room's channel: every node's members get them from there, this node's too.
//!
//! A node that dies leaves its members behind: every node sweeps, every `SWEEP_INTERVAL`, the
//! members of nodes that have left the registry (whose entry outlives its last refresh by
//! `REGISTRY_TTL`), and announces their leaves; so a crashed node's members are gone within
//! about 40 seconds. A node whose link to Redis was lost sweeps its own entries and puts its
//! current members back, announcing the leaves that happened meanwhile.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::{json, Value};
use switchboard_protocol::{Envelope, Kind, RawValue, Scope};
use tokio::sync::mpsc;

use super::{lock, Shard, Shared, PUBLISH_TIMEOUT};
use crate::{
    delivery::Unavailable,
    presence::{user_key, Change, Lists, Row, ToBridge},
};

/// A cluster's presence lists, from Redis.
#[derive(Debug)]
pub(crate) struct RedisLists(pub(crate) Arc<Shared>);

impl Lists for RedisLists {
    fn list(
        &self,
        room: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Row>, Unavailable>>>> {
        let shared = self.0.clone();
        Box::pin(async move { shared.presence_list(&room).await })
    }
}

/// Between two sweeps for the members of nodes that are gone.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How long a leave marker outlives its debounce (the waiting node reads it at the debounce).
const LEAVING_SLACK_MS: u64 = 60_000;

/// `KEYS`: presence, users, leaving, the node's rooms, the nodes. `ARGV`: session, value, user
/// key, room, node. Returns 1 when the user is new in the room (announce a join). A session
/// already present (put back after a lost link) changes nothing.
const JOIN_SCRIPT: &str = r#"
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
local was_leaving = redis.call('DEL', KEYS[3])
if n == 1 and was_leaving == 0 then return 1 end
return 0
"#;

/// `KEYS`: presence, users, leaving. `ARGV`: session, user key, token, debounce in ms.
/// Returns 0 (nothing to announce), 1 (announce the leave now) or 2 (after the debounce).
const LEAVE_SCRIPT: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', tonumber(ARGV[4]) + tonumber(ARGV[5]))
  return 2
end
return 1
"#;

/// `KEYS`: leaving, users. `ARGV`: token, user key. Returns 1 when the leave is to be
/// announced (the user did not come back).
const DUE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// `KEYS`: the node's rooms, the nodes. `ARGV`: prefix, node, a session-id prefix to keep
/// (this node's current sessions; empty: none). Removes the node's other members and returns
/// `{room, session, user, ...}` for each user that left its room entirely.
const SWEEP_SCRIPT: &str = r#"
local out = {}
local rooms = redis.call('SMEMBERS', KEYS[1])
for _, room in ipairs(rooms) do
  local pkey = ARGV[1] .. ':presence:' .. room
  local ukey = ARGV[1] .. ':presence-users:' .. room
  local all = redis.call('HGETALL', pkey)
  for i = 1, #all, 2 do
    local ok, v = pcall(cjson.decode, all[i + 1])
    local session = all[i]
    local keep = ARGV[3] ~= '' and string.sub(session, 1, #ARGV[3]) == ARGV[3]
    if ok and v.node == ARGV[2] and not keep then
      redis.call('HDEL', pkey, session)
      local n = redis.call('HINCRBY', ukey, v.key, -1)
      if n <= 0 then
        redis.call('HDEL', ukey, v.key)
        table.insert(out, room)
        table.insert(out, session)
        if type(v.user) == 'string' then table.insert(out, v.user) else table.insert(out, '') end
      end
    end
  end
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return out
"#;

/// The presence scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    join: redis::Script,
    leave: redis::Script,
    due: redis::Script,
    sweep: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            join: redis::Script::new(JOIN_SCRIPT),
            leave: redis::Script::new(LEAVE_SCRIPT),
            due: redis::Script::new(DUE_SCRIPT),
            sweep: redis::Script::new(SWEEP_SCRIPT),
        }
    }
}

impl Shared {
    fn presence_key(&self, room: &str) -> String {
        format!("{}:presence:{room}", self.prefix)
    }

    fn users_key(&self, room: &str) -> String {
        format!("{}:presence-users:{room}", self.prefix)
    }

    fn leaving_key(&self, room: &str, key: &str) -> String {
        format!("{}:leaving:{room}:{key}", self.prefix)
    }

    fn node_rooms_key(&self, node: &str) -> String {
        format!("{}:presence-rooms:{node}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:presence-nodes", self.prefix)
    }

    /// The members of `room` on every node.
    pub(crate) async fn presence_list(&self, room: &str) -> Result<Vec<Row>, Unavailable> {
        let shard = self.shard_of(room);
        let mut connection = linked(shard)?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.presence_key(room));
        let all = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            cmd.query_async::<Vec<(String, String)>>(&mut connection),
        )
        .await
        .map_err(|_| Unavailable(format!("redis {} did not answer in time", shard.index)))?
        .map_err(|e| Unavailable(format!("redis {}: {e}", shard.index)))?;
        let mut rows: Vec<Row> = all
            .into_iter()
            .filter_map(|(session, value)| {
                let value: Value = serde_json::from_str(&value).ok()?;
                Some(Row {
                    session,
                    user: value["user"].as_str().map(str::to_owned),
                    node: value["node"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        rows.sort_by(|a, b| a.session.cmp(&b.session));
        Ok(rows)
    }

    /// Waits (at most `SUBSCRIBE_TIMEOUT`) until this node's subscription to `room` is in place.
    async fn subscribed(&self, room: &str) {
        let shard = self.shard_of(room);
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut rooms = lock(&shard.rooms);
            match rooms.get_mut(room) {
                Some(sub) if !sub.confirmed && sub.wanted => sub.waiters.push(tx),
                _ => return,
            }
        }
        let _ = tokio::time::timeout(super::SUBSCRIBE_TIMEOUT, rx).await;
    }

    /// Publishes a join or leave of `room` on its channel.
    async fn announce(&self, room: &str, kind: Kind, session: &str, user: Option<&str>) {
        let null = RawValue::NULL;
        let envelope = Envelope {
            room: room.into(),
            data: null,
            from: session.into(),
            user: user.map(Into::into),
            scope: Scope::Cluster,
            node: self.node_id.as_str().into(),
            offset: None,
            epoch: None,
            kind,
        };
        let delivery = self.send(
            self.shard_of(room),
            self.room_channel(room),
            envelope.encode().into_bytes(),
        );
        if let Err(e) = delivery.finish().await {
            tracing::warn!(room, error = %e, "a presence announcement was not carried");
        }
    }

    /// One change of this node's tracked members, in Redis; `quiet`: put back after a lost
    /// link, announced to nobody.
    async fn change(self: &Arc<Self>, change: Change, quiet: bool) -> Result<(), String> {
        let shard = self.shard_of(&change.room);
        let mut connection = linked(shard).map_err(|e| e.0)?;
        let key = user_key(&change.session, change.user.as_deref());
        let room = &change.room;
        let scripts = &self.presence_scripts;
        if change.joined {
            let value = json!({"user": change.user, "node": self.node_id, "key": key});
            let mut invocation = scripts.join.key(self.presence_key(room));
            invocation
                .key(self.users_key(room))
                .key(self.leaving_key(room, &key))
                .key(self.node_rooms_key(&self.node_id))
                .key(self.nodes_key())
                .arg(&change.session)
                .arg(value.to_string())
                .arg(&key)
                .arg(room)
                .arg(&self.node_id);
            let new = timed(invocation.invoke_async::<i64>(&mut connection)).await?;
            if new == 1 && change.options.join_leave && !quiet {
                // This node's own members (the joining session among them) hear of the join
                // through the room's channel too: not before the node listens to it.
                self.subscribed(room).await;
                self.announce(room, Kind::Join, &change.session, change.user.as_deref())
                    .await;
            }
            return Ok(());
        }
        let token = format!("{}:{}", self.node_id, super::unix_nanos());
        let debounce = change.options.leave_debounce.as_millis() as u64;
        let mut invocation = scripts.leave.key(self.presence_key(room));
        invocation
            .key(self.users_key(room))
            .key(self.leaving_key(room, &key))
            .arg(&change.session)
            .arg(&key)
            .arg(&token)
            .arg(if change.options.join_leave {
                debounce
            } else {
                0
            })
            .arg(LEAVING_SLACK_MS);
        let outcome = timed(invocation.invoke_async::<i64>(&mut connection)).await?;
        if !change.options.join_leave {
            return Ok(());
        }
        match outcome {
            1 => {
                self.announce(room, Kind::Leave, &change.session, change.user.as_deref())
                    .await;
            }
            2 => {
                let shared = self.clone();
                let wait = change.options.leave_debounce;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Err(e) = shared.leave_due(&change, &key, &token).await {
                        tracing::warn!(room = change.room, error = %e, "a debounced leave failed");
                    }
                });
            }
            _ => {}
        }
        Ok(())
    }

    async fn leave_due(&self, change: &Change, key: &str, token: &str) -> Result<(), String> {
        let room = &change.room;
        let shard = self.shard_of(room);
        let mut connection = linked(shard).map_err(|e| e.0)?;
        let mut invocation = self.presence_scripts.due.key(self.leaving_key(room, key));
        invocation.key(self.users_key(room)).arg(token).arg(key);
        if timed(invocation.invoke_async::<i64>(&mut connection)).await? == 1 {
            self.announce(room, Kind::Leave, &change.session, change.user.as_deref())
                .await;
        }
        Ok(())
    }

    /// Removes `node`'s members from the rooms of `shard` (but those whose session id starts
    /// with `keep`) and announces the leaves.
    async fn sweep(&self, shard: &Shard, node: &str, keep: &str) -> Result<(), String> {
        let mut connection = linked(shard).map_err(|e| e.0)?;
        let mut invocation = self.presence_scripts.sweep.key(self.node_rooms_key(node));
        invocation
            .key(self.nodes_key())
            .arg(&self.prefix)
            .arg(node)
            .arg(keep);
        let gone = timed(invocation.invoke_async::<Vec<String>>(&mut connection)).await?;
        for left in gone.chunks(3) {
            let [room, session, user] = left else {
                continue;
            };
            let tracked = lock(&self.presence_rules)
                .as_ref()
                .and_then(|rules| rules.of(room).cloned());
            if tracked.is_some_and(|o| o.join_leave) {
                let user = (!user.is_empty()).then_some(user.as_str());
                self.announce(room, Kind::Leave, session, user).await;
            }
        }
        Ok(())
    }

    /// After a link to `shard` was made (again): this node's entries from before go, and
    /// `members` (its members as the changes so far left them) are put back, announced to
    /// nobody.
    async fn restore_presence(
        self: &Arc<Self>,
        shard: &Shard,
        members: &HashMap<(String, String), Change>,
    ) {
        let keep = lock(&self.instance).clone();
        if let Err(e) = self.sweep(shard, &self.node_id, &keep).await {
            tracing::warn!(redis = shard.index, error = %e, "presence could not be restored");
            return;
        }
        for change in members.values() {
            if std::ptr::eq(self.shard_of(&change.room), shard) {
                let _ = self.change(change.clone(), true).await;
            }
        }
    }
}

/// Applies this node's presence changes, in order, for as long as the node runs.
pub(super) async fn run_changes(shared: Arc<Shared>, mut work: mpsc::Receiver<ToBridge>) {
    // This node's tracked members, as the changes applied so far leave them.
    let mut members: HashMap<(String, String), Change> = HashMap::new();
    while let Some(item) = work.recv().await {
        match item {
            ToBridge::Change(change) => {
                let key = (change.room.clone(), change.session.clone());
                if change.joined {
                    members.insert(key, change.clone());
                } else {
                    members.remove(&key);
                }
                let room = change.room.clone();
                if let Err(e) = shared.change(change, false).await {
                    tracing::warn!(room, error = %e, "a presence change could not be made in Redis");
                }
            }
            ToBridge::Restore(index) => {
                if let Some(shard) = shared.shards.get(index) {
                    shared.restore_presence(shard, &members).await;
                }
            }
        }
    }
}

/// Sweeps, every `SWEEP_INTERVAL`, the members of nodes that left the registry.
pub(super) async fn run_sweeps(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Ok(mut control) = shared.control() else {
            continue;
        };
        for shard in &shared.shards {
            let Ok(mut connection) = linked(shard) else {
                continue;
            };
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(shared.nodes_key());
            let Ok(nodes) = timed(cmd.query_async::<Vec<String>>(&mut connection)).await else {
                continue;
            };
            for node in nodes.iter().filter(|n| **n != shared.node_id) {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(shared.registry_key(node));
                if let Ok(0) = timed(exists.query_async::<i64>(&mut control)).await {
                    tracing::info!(node, "sweeping the members of a node that is gone");
                    if let Err(e) = shared.sweep(shard, node, "").await {
                        tracing::warn!(node, error = %e, "sweep failed");
                    }
                }
            }
        }
    }
}

fn linked(shard: &Shard) -> Result<redis::aio::MultiplexedConnection, Unavailable> {
    shard
        .connection()
        .filter(|_| shard.linked.load(std::sync::atomic::Ordering::Acquire))
        .ok_or_else(|| Unavailable(format!("redis {} is unreachable", shard.index)))
}

async fn timed<T>(
    query: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    tokio::time::timeout(PUBLISH_TIMEOUT, query)
        .await
        .map_err(|_| "Redis did not answer in time".to_owned())?
        .map_err(|e| e.to_string())
}
