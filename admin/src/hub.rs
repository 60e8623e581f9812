//! The boundary between the admin API and a running hub.
//!
//! The API is plain request handling; rooms, sessions and metrics live in the hub's actors. The
//! [`Hub`] trait is the whole of what the API may ask of them, so this crate builds and is
//! tested without the hub, and the hub is free to change how it answers.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_protocol::Scope;
use utoipa::ToSchema;

use crate::policy::{Mode, PolicyStore};

/// What the admin API needs from a running hub. Implemented by the hub; this crate knows
/// nothing of actors.
///
/// Handlers run on the HTTP worker threads and may call any method concurrently; the two async
/// methods are awaited on the worker that received the request, so their futures need not be
/// `Send`.
#[allow(async_fn_in_trait)]
pub trait Hub: 'static {
    /// Rooms with members on this node whose name starts with `prefix`, in name order, after
    /// `after` (exclusive), at most `limit`.
    fn rooms(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<RoomSummary>;

    /// One room's members on this node, and in cluster mode its member counts on every node;
    /// `None` if it has no members anywhere.
    async fn room(&self, name: &str) -> Option<RoomDetail>;

    /// The nodes of the cluster (a standalone node: itself), or why they cannot be listed.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError>;

    /// Sessions in id order after `after` (exclusive), at most `limit`.
    fn sessions(&self, after: Option<&str>, limit: usize) -> Vec<SessionInfo>;

    /// One session; `None` if there is no session with this id.
    fn session(&self, id: &str) -> Option<SessionInfo>;

    /// Closes the session (on any node of the cluster) with 4001 "kicked"; false if no such
    /// session.
    async fn kick(&self, id: &str) -> bool;

    /// Delivers `{"op":"direct","data":..,"from":"admin"}` to one session, on any node.
    async fn send(&self, id: &str, data: &RawValue) -> Result<(), HubError>;

    /// Publishes to a room as a client publish would, with `from` = `"admin"` or `"http"`
    /// (`by`). Returns once every room of this node took the message and, in cluster mode, the
    /// broker accepted it: a caller that awaits each publish before reading more of its input
    /// is slowed down by full room queues instead of losing messages.
    async fn publish(
        &self,
        room: &str,
        data: &RawValue,
        scope: Scope,
        by: Publisher,
    ) -> Result<(), HubError>;

    /// An HTTP publishing request ended after `seconds` (for the request-duration histogram).
    fn http_request_done(&self, _route: HttpRoute, _seconds: f64) {}

    /// An HTTP publishing route refused a message, a line, a part or a request, for `reason`.
    fn http_rejected(&self, _route: HttpRoute, _reason: &'static str) {}

    /// Whether the node accepts new sessions and can do all it is configured for.
    fn readiness(&self) -> Readiness;

    /// The Prometheus text exposition of the node's metrics.
    fn metrics(&self) -> String;

    /// The live handshake policy.
    fn policy(&self) -> &PolicyStore;

    /// The policy was edited through the API (and saved to the state file, if there is one):
    /// in cluster mode the hub shares the change with every node. `Err` when it could not.
    async fn policy_changed(&self) -> Result<(), HubError> {
        Ok(())
    }
}

/// Who publishes through [`Hub::publish`]: what recipients see as `from`, and how the hub
/// counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publisher {
    /// The admin API (`from` = `"admin"`).
    Admin,
    /// The HTTP publishing API of the public listener (`from` = `"http"`).
    Http,
}

/// The routes of the HTTP publishing API, as metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpRoute {
    /// `POST /api/rooms/{room}/publish`
    Publish,
    /// `POST /api/broadcast`
    Broadcast,
    /// `POST /api/rooms/{room}/stream`
    Stream,
    /// `POST /api/publish` (multipart)
    Multipart,
}

impl HttpRoute {
    /// Every route, in a fixed order (for metrics resolved up front).
    pub const ALL: [HttpRoute; 4] = [
        HttpRoute::Publish,
        HttpRoute::Broadcast,
        HttpRoute::Stream,
        HttpRoute::Multipart,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HttpRoute::Publish => "publish",
            HttpRoute::Broadcast => "broadcast",
            HttpRoute::Stream => "stream",
            HttpRoute::Multipart => "multipart",
        }
    }
}

/// What `/readyz` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The node accepts new sessions.
    Ready,
    /// The node is shutting down.
    Draining,
    /// The node runs but cannot do all it is configured for (in cluster mode: Redis is out of
    /// reach or too slow); the reason is shown.
    Unavailable(String),
}

/// Why the hub refused a [`Hub::send`] or [`Hub::publish`]. The API answers 404, 413 and 503
/// respectively.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("not found")]
    NotFound,
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge { limit: usize, size: usize },
    #[error("{0}")]
    Unavailable(String),
}

/// A room with members on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomSummary {
    pub name: String,
    /// Members on this node only: other nodes of a cluster are not counted.
    pub members: usize,
}

/// One member of a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomMember {
    /// The member's session id.
    pub session: String,
    /// The `sub` of the session's access token, if it had one.
    #[schema(required = true)]
    pub user: Option<String>,
    /// The index of the worker thread serving the session.
    pub worker: usize,
}

/// A room and its members on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomDetail {
    pub name: String,
    /// Its members on this node.
    pub members: Vec<RoomMember>,
    /// Its member count on each node that answered (this one included), in node order.
    pub nodes: Vec<NodeMembers>,
    /// Nodes of the cluster that did not answer in time: their members are not counted.
    pub missing: Vec<String>,
}

/// A room's member count on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeMembers {
    pub node: String,
    pub members: usize,
}

/// A node of the cluster, as its registry entry shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// The node's id (`node_id`).
    pub id: String,
    /// Where its WebSocket listener is reached: its `advertise_address`, or the bound address
    /// with a wildcard IP replaced by its host name.
    pub address: String,
    /// Its Switchboard version.
    pub version: String,
    /// Its open sessions when it last refreshed its entry.
    pub sessions: usize,
    /// Unix seconds of that refresh; entries not refreshed for 30 s disappear.
    pub last_seen: u64,
}

/// One WebSocket session on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub id: String,
    /// The `sub` of the session's access token, if it had one.
    #[schema(required = true)]
    pub user: Option<String>,
    /// The name of the endpoint the session connected through.
    pub endpoint: String,
    /// The mode the session runs in.
    pub mode: Mode,
    /// The index of the worker thread serving the session.
    pub worker: usize,
    /// How many rooms the session is subscribed to.
    pub subscriptions: usize,
    /// When the handshake completed, in seconds since the Unix epoch.
    pub connected_at: u64,
}
