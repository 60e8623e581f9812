//! Messages between actors. These are never wire types: what reaches a client is encoded once by
//! `switchboard-protocol` and carried here as shared bytes.

use actix::Message;
use bytes::Bytes;

use crate::SessionId;

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
}

/// To a session: the node is shutting down; close with 1001 "going away".
///
/// Sent at most once per session by the drain, so it may bypass the mailbox capacity.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct GoAway;
