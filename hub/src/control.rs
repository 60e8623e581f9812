//! [`Control`]: the hub's side of the admin API (`switchboard_admin::Hub`).
//!
//! The admin listener runs on its own actix workers; everything here reaches the sessions and
//! rooms through what crosses threads anyway: the node's session registry and broadcaster
//! (`DashMap`s), actor addresses, and atomics. Nothing here touches a per-recipient path.

use std::sync::{atomic::Ordering, Arc};

use actix::prelude::SendError;
use switchboard_admin::{
    hub::{HubError, Readiness, RoomDetail, RoomMember, RoomSummary, SessionInfo},
    Hub, PolicyStore,
};
use switchboard_protocol::{RawValue, Scope, ServerFrame};

use crate::{
    codec::text_frame,
    messages::Command,
    metrics::{metrics, Source},
    node::{Node, SessionEntry},
    publish::{publish, Payload, Publication, PublishError},
    room::ListMembers,
    transport::handshake::is_protocol_room,
};

/// What the admin API's `from` shows for the operator.
const ADMIN: &str = "admin";

/// The admin API's handle on a running node.
#[derive(Debug, Clone)]
pub struct Control {
    node: Arc<Node>,
}

impl Control {
    /// A handle on `node`.
    pub fn new(node: Arc<Node>) -> Control {
        Control { node }
    }

    fn entry_info(entry: &SessionEntry) -> SessionInfo {
        let info = &entry.info;
        SessionInfo {
            id: info.label.clone(),
            user: info.user.clone(),
            endpoint: info.endpoint.to_string(),
            mode: info.mode,
            worker: info.worker,
            subscriptions: info.subscriptions.load(Ordering::Relaxed),
            connected_at: info.connected_at,
        }
    }
}

impl Hub for Control {
    fn rooms(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<RoomSummary> {
        self.node
            .broadcaster
            .list(prefix, after, limit, is_protocol_room)
            .into_iter()
            .map(|(name, members)| RoomSummary { name, members })
            .collect()
    }

    async fn room(&self, name: &str) -> Option<RoomDetail> {
        if !is_protocol_room(name) {
            return None;
        }
        let workers = self.node.broadcaster.workers_of(name);
        let mut members = Vec::new();
        for addr in workers {
            // A room that stopped since the lookup has no members to report.
            let Ok(ids) = addr.send(ListMembers).await else {
                continue;
            };
            for id in ids {
                if let Some(entry) = self.node.sessions.get(&id) {
                    members.push(RoomMember {
                        session: entry.info.label.clone(),
                        user: entry.info.user.clone(),
                        worker: entry.info.worker,
                    });
                }
            }
        }
        if members.is_empty() {
            return None;
        }
        members.sort_by(|a, b| a.session.cmp(&b.session));
        Some(RoomDetail {
            name: name.to_owned(),
            members,
        })
    }

    fn sessions(&self, after: Option<&str>, limit: usize) -> Vec<SessionInfo> {
        // Ordered by the numeric id (the order sessions were accepted); the cursor is an id.
        let after = after.and_then(|a| self.node.parse_session_id(a));
        let mut ids: Vec<_> = self
            .node
            .sessions
            .iter()
            .map(|e| *e.key())
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.node.sessions.get(&id).map(|e| Self::entry_info(&e)))
            .take(limit)
            .collect()
    }

    fn session(&self, id: &str) -> Option<SessionInfo> {
        let id = self.node.parse_session_id(id)?;
        self.node.sessions.get(&id).map(|e| Self::entry_info(&e))
    }

    fn kick(&self, id: &str) -> bool {
        let Some(id) = self.node.parse_session_id(id) else {
            return false;
        };
        let Some((commands, info)) = self
            .node
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

    fn send(&self, id: &str, data: &RawValue) -> Result<(), HubError> {
        let max = self.node.config.max_message_bytes;
        let text = ServerFrame::Direct { data, from: ADMIN }.encode();
        if text.len() > max {
            return Err(HubError::TooLarge {
                limit: max,
                size: text.len(),
            });
        }
        let id = self.node.parse_session_id(id).ok_or(HubError::NotFound)?;
        let entry = self.node.sessions.get(&id).ok_or(HubError::NotFound)?;
        // Through the session's own handle, not a clone: actix bounds a mailbox per sender
        // handle, and this is the bound of `session::connection::MAILBOX_CAPACITY`.
        match entry
            .commands
            .try_send(Command::Direct(text_frame(text.as_bytes())))
        {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => Err(HubError::Unavailable(
                "the session's mailbox is full; retry".into(),
            )),
            Err(SendError::Closed(_)) => Err(HubError::NotFound),
        }
    }

    async fn publish(&self, room: &str, data: &RawValue, scope: Scope) -> Result<(), HubError> {
        let publication = Publication {
            room,
            payload: Payload::Message {
                data,
                from: ADMIN,
                user: None,
            },
            scope,
            source: Source::Admin,
            except: None,
        };
        // The admin API runs on no session worker: its `worker` publishes reach every worker.
        match publish(&self.node, None, publication) {
            // The operator's request is held until every room took the message: nothing is
            // dropped, and the same wait as a session publisher's.
            Ok(delivery) => delivery
                .finish()
                .await
                .map_err(|e| HubError::Unavailable(e.to_string())),
            Err(PublishError::TooLarge { size, limit }) => Err(HubError::TooLarge { limit, size }),
        }
    }

    fn readiness(&self) -> Readiness {
        if self.node.is_draining() {
            return Readiness::Draining;
        }
        match self.node.health() {
            Ok(()) => Readiness::Ready,
            Err(why) => Readiness::Unavailable(why),
        }
    }

    fn metrics(&self) -> String {
        metrics().render(self.node.rooms())
    }

    fn policy(&self) -> &PolicyStore {
        &self.node.policy
    }
}
