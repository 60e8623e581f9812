//! [`Control`]: the hub's side of the admin API (`switchboard_admin::Hub`).
//!
//! The admin listener runs on its own actix workers; everything here reaches the sessions and
//! rooms through what crosses threads anyway: the node's session registry and broadcaster
//! (`DashMap`s), actor addresses, and atomics. Nothing here touches a per-recipient path.

use std::sync::{atomic::Ordering, Arc};

use serde_json::json;
use switchboard_admin::{
    hub::{
        HttpRoute, HubError, NodeInfo, NodeMembers, Publisher, Readiness, RoomDetail, RoomMember,
        RoomSummary, SessionInfo,
    },
    Hub, PolicyStore,
};
use switchboard_protocol::{RawValue, Scope};

use crate::{
    cluster::LocalNode,
    metrics::{metrics, Source},
    node::{DirectError, Node, SessionEntry},
    publish::{publish, Payload, Publication, PublishError},
    room::ListMembers,
    transport::handshake::is_protocol_room,
};

/// What the admin API's `from` shows for the operator.
const ADMIN: &str = "admin";
/// What `from` shows for a message published through the HTTP publishing API.
const HTTP: &str = "http";

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
        members.sort_by(|a, b| a.session.cmp(&b.session));
        let here = NodeMembers {
            node: self.node.config.node_id.clone(),
            members: members.len(),
        };
        let (mut nodes, missing) = match &self.node.cluster {
            None => (vec![here], Vec::new()),
            Some(cluster) => match cluster.ask(json!({"what":"room","room":name})).await {
                Ok(answers) => {
                    let nodes = answers
                        .answers
                        .iter()
                        .map(|a| NodeMembers {
                            node: a["node"].as_str().unwrap_or_default().to_owned(),
                            members: a["members"].as_u64().unwrap_or(0) as usize,
                        })
                        .collect();
                    (nodes, answers.missing)
                }
                // Redis is out of reach: this node's own count is all there is.
                Err(e) => {
                    tracing::warn!(error = %e, "room: the other nodes could not be asked");
                    (vec![here], Vec::new())
                }
            },
        };
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        if members.is_empty() && nodes.iter().all(|n| n.members == 0) {
            return None;
        }
        Some(RoomDetail {
            name: name.to_owned(),
            members,
            nodes,
            missing,
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

    async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError> {
        let records = match &self.node.cluster {
            Some(cluster) => cluster.nodes().await.map_err(HubError::Unavailable)?,
            None => {
                let mut record = LocalNode::record(&*self.node);
                record.last_seen = crate::unix_now();
                vec![record]
            }
        };
        Ok(records
            .into_iter()
            .map(|r| NodeInfo {
                id: r.id,
                address: r.address,
                version: r.version,
                sessions: r.sessions,
                last_seen: r.last_seen,
            })
            .collect())
    }

    async fn kick(&self, id: &str) -> bool {
        if self.node.kick_local(id) {
            return true;
        }
        // Another node's session, perhaps: the node that has it acts.
        let Some(cluster) = &self.node.cluster else {
            return false;
        };
        match cluster.ask(json!({"what":"kick","session":id})).await {
            Ok(answers) => answers.answers.iter().any(|a| a["found"] == true),
            Err(e) => {
                tracing::warn!(error = %e, "kick: the other nodes could not be asked");
                false
            }
        }
    }

    async fn send(&self, id: &str, data: &RawValue) -> Result<(), HubError> {
        match self.node.direct_local(id, data) {
            Ok(()) => return Ok(()),
            Err(DirectError::TooLarge { limit, size }) => {
                return Err(HubError::TooLarge { limit, size })
            }
            Err(DirectError::Full) => {
                return Err(HubError::Unavailable(
                    "the session's mailbox is full; retry".into(),
                ))
            }
            Err(DirectError::NotFound) => {}
        }
        let Some(cluster) = &self.node.cluster else {
            return Err(HubError::NotFound);
        };
        let answers = cluster
            .ask(json!({"what":"direct","session":id,"data":data}))
            .await
            .map_err(HubError::Unavailable)?;
        match answers.answers.iter().find(|a| a["found"] == true) {
            Some(answer) => match answer["error"].as_str() {
                Some(e) => Err(HubError::Unavailable(e.to_owned())),
                None => Ok(()),
            },
            None if answers.missing.is_empty() => Err(HubError::NotFound),
            None => Err(HubError::Unavailable(format!(
                "no node answered that it has the session; not answering: {}",
                answers.missing.join(", ")
            ))),
        }
    }

    async fn publish(
        &self,
        room: &str,
        data: &RawValue,
        scope: Scope,
        by: Publisher,
    ) -> Result<(), HubError> {
        let (from, source) = match by {
            Publisher::Admin => (ADMIN, Source::Admin),
            Publisher::Http => (HTTP, Source::Http),
        };
        let publication = Publication {
            room,
            payload: Payload::Message {
                data,
                from,
                user: None,
            },
            scope,
            source,
            except: None,
        };
        // The admin and HTTP APIs run on no session worker: their `worker` publishes reach
        // every worker.
        match publish(&self.node, None, publication) {
            // The operator's request is held until every room took the message: nothing is
            // dropped, and the same wait as a session publisher's.
            Ok(delivery) => delivery
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| HubError::Unavailable(e.to_string())),
            Err(PublishError::TooLarge { size, limit }) => Err(HubError::TooLarge { limit, size }),
        }
    }

    fn http_request_done(&self, route: HttpRoute, seconds: f64) {
        metrics().http_request_done(route, seconds);
    }

    fn http_rejected(&self, route: HttpRoute, reason: &'static str) {
        metrics().http_rejected(route, reason);
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
        let ready = matches!(self.readiness(), Readiness::Ready);
        let (bytes, messages) = self.node.history.held();
        metrics()
            .history
            .bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics()
            .history
            .messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        metrics().render(self.node.rooms(), ready)
    }

    async fn policy_changed(&self) -> Result<(), HubError> {
        let Some(cluster) = &self.node.cluster else {
            return Ok(());
        };
        let document = switchboard_admin::state::encode(&self.node.policy.snapshot());
        cluster
            .share_policy(document)
            .await
            .map_err(HubError::Unavailable)
    }

    fn policy(&self) -> &PolicyStore {
        &self.node.policy
    }
}
