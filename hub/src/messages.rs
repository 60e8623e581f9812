//! Messages between actors. These are never wire types: what reaches a client is encoded once by
//! `switchboard-protocol` and carried here as shared bytes.

use actix::Message;
use bytes::Bytes;

use std::sync::Arc;

use crate::{metrics::FanoutTimer, SessionId};

/// A complete WebSocket frame (header and payload) as it goes on the wire, encoded once per
/// publish and shared by reference count between every recipient: server frames are not masked,
/// so the same bytes serve every connection.
pub(crate) type Frame = Bytes;

/// To a [`crate::room::Room`]: deliver this frame to every member on the room's worker, except
/// `except` (a relay member does not get its own messages back).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Fanout {
    pub(crate) frame: Frame,
    pub(crate) except: Option<SessionId>,
    /// Shared by every room the publish was handed to; `None` where nobody times it.
    pub(crate) timer: Option<Arc<FanoutTimer>>,
}

/// To a session: the node is shutting down; close with 1001 "going away".
///
/// Sent at most once per session by the drain, so it may bypass the mailbox capacity.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct GoAway;

/// To a session: an operator closes it with 4001 "kicked".
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Kick;

/// To a session: a `direct` frame from the admin API, encoded, to queue like a delivery.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Direct(pub(crate) Frame);
