//! Messages between actors. These are never wire types: what reaches a client is encoded once by
//! `switchboard-protocol` and carried here as shared bytes.

use std::sync::Arc;

use actix::Message;

use crate::{codec::Frame, metrics::FanoutTimer, room::Queued, SessionId};

/// To a [`crate::room::Room`]: deliver this frame to every member on the room's worker, except
/// `except` (a relay member does not get its own messages back).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Fanout {
    pub(crate) frame: Frame,
    pub(crate) except: Option<SessionId>,
    /// Shared by every room the publish was handed to; `None` where nobody times it.
    pub(crate) timer: Option<Arc<FanoutTimer>>,
    /// From a publisher on the room's own worker, queued while the room is not in direct mode:
    /// the guard that counts it (see `room::Mode`).
    pub(crate) local: Option<Queued>,
}

/// To a session, from outside its worker thread: the admin API and the drain.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum Command {
    /// An operator closes the session with 4001 "kicked". Sent at most once per session (the
    /// `kicked` flag of its [`crate::node::SessionInfo`]), so it may bypass the mailbox bound.
    Kick,
    /// The node is shutting down: close with 1001 "going away". Sent at most once per session
    /// by the drain, so it may bypass the mailbox bound.
    GoAway,
    /// A `direct` frame from the admin API, encoded, to queue like a delivery. Sent with
    /// `try_send`: it counts against the session's mailbox bound.
    Direct(Frame),
}
