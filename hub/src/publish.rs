//! The one publish path: the only code that reads a publish's [`Scope`].
//!
//! A session's publish, a relay member's message and the admin API's publish all come here as a
//! [`Publication`]. It is checked against the message limit, encoded once as the frame every
//! recipient shares, counted by what it actually reaches, and handed on:
//! - `worker`: to the publisher's own worker's room (a caller outside the session workers, such
//!   as the admin API, has no worker of its own: its `worker` publishes reach every worker);
//! - `node`: to the room of every worker with members, through the broadcaster;
//! - `cluster`: to the node's [`crate::broker::Broker`], which reaches every node.
//!
//! The [`Delivery`] that comes back is what the caller waits on when a room queue was full
//! (see `delivery.rs` for the wait policy).

use std::sync::Arc;

use switchboard_protocol::{Envelope, Position, RawValue, Scope, ServerFrame};

use crate::{
    broker::{ClusterPublish, RelayPublish},
    codec::{frame, text_frame_of, Frame},
    config::RoomOptions,
    delivery::{Delivery, Here, Unavailable},
    history::{self, RoomLog},
    metrics::{metrics, Source},
    node::Node,
    worker::WorkerRooms,
    SessionId,
};

/// One publish, as its source hands it in.
#[derive(Debug)]
pub(crate) struct Publication<'a> {
    pub(crate) room: &'a str,
    pub(crate) payload: Payload<'a>,
    pub(crate) scope: Scope,
    pub(crate) source: Source,
    /// A member not to deliver to (a relay member does not get its own messages back).
    pub(crate) except: Option<SessionId>,
}

/// What a publish carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// A `switchboard.v1` message: delivered as a `message` frame.
    Message {
        data: &'a RawValue,
        /// The publisher as recipients see it: a session id, or `admin`.
        from: &'a str,
        /// The publisher's user (its token's `sub`).
        user: Option<&'a str>,
    },
    /// A relay member's message, passed on as it is in a frame of the client's `opcode`.
    Relay { opcode: u8, payload: &'a [u8] },
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishError {
    /// The `message` frame would be `size` bytes, over the `limit` (`max_message_bytes`).
    TooLarge { size: usize, limit: usize },
}

/// Publishes `publication` from `worker` (the publisher's own worker; `None` off the session
/// workers). The returned delivery is done, or must be finished before the publish counts as
/// accepted.
pub(crate) fn publish(
    node: &Node,
    worker: Option<&WorkerRooms>,
    publication: Publication<'_>,
) -> Result<Delivery, PublishError> {
    let Publication {
        room,
        payload,
        scope,
        source,
        except,
    } = publication;
    let message = match payload {
        Payload::Message { data, from, user } => {
            let limit = node.config.max_message_bytes;
            let size = ServerFrame::message_len(room, data, from, user);
            if size > limit {
                return Err(PublishError::TooLarge { size, limit });
            }
            Some(Message {
                room,
                data,
                from,
                user,
            })
        }
        Payload::Relay { .. } => None,
    };
    // A history room has one order of messages: every publish reaches the whole room. Its frame
    // is encoded where its position is known.
    if let (Some(options), Some(message)) = (node.history_options(room), message) {
        metrics().published(node.broker.reach(), source);
        return Ok(to_history(node, worker, options, message, scope));
    }
    let (frame, relay) = match payload {
        Payload::Message { data, from, user } => (message_frame(room, data, from, user), None),
        Payload::Relay { opcode, payload } => (frame(opcode, payload), Some((opcode, payload))),
    };
    // Where the publish goes. A caller without a worker has no worker scope of its own.
    let route = match (scope, worker, message, relay) {
        (Scope::Worker, Some(worker), _, _) => Route::Worker(worker),
        (Scope::Cluster, _, Some(message), _) => Route::Cluster(message),
        (Scope::Cluster, _, None, Some(relay)) => Route::ClusterRelay(relay),
        _ => Route::Node,
    };
    match route {
        Route::Worker(worker) => {
            metrics().published(Scope::Worker, source);
            Ok(Delivery::to_worker(worker, room, frame, except))
        }
        Route::Node => {
            metrics().published(Scope::Node, source);
            Ok(Delivery::to_node(
                &node.broadcaster,
                worker.map(|w| w as &dyn Here),
                room,
                frame,
                except,
            ))
        }
        Route::ClusterRelay((opcode, payload)) => {
            metrics().published(node.broker.reach(), source);
            Ok(node.broker.publish_relay(RelayPublish {
                key: room,
                opcode,
                payload,
                frame,
                except,
                here: worker.map(|w| w as &dyn Here),
            }))
        }
        Route::Cluster(message) => {
            // Counted as what the broker reaches: a standalone node's cluster is the node.
            metrics().published(node.broker.reach(), source);
            Ok(node.broker.publish(ClusterPublish {
                envelope: message.envelope(node, scope),
                frame,
                except,
                here: worker.map(|w| w as &dyn Here),
            }))
        }
    }
}

/// A `message` publish's fields.
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
    room: &'a str,
    data: &'a RawValue,
    from: &'a str,
    user: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// The message as it crosses to other nodes, from this node.
    fn envelope(&self, node: &'a Node, scope: Scope) -> Envelope<'a> {
        Envelope {
            room: self.room.into(),
            data: self.data,
            from: self.from.into(),
            user: self.user.map(Into::into),
            scope,
            node: node.config.node_id.as_str().into(),
            offset: None,
            epoch: None,
            kind: Default::default(),
        }
    }
}

/// A publish to a history room. Standalone: appended to the room's log, which gives it its
/// offset, and delivered from there (at once on the publisher's own worker). Cluster mode: to
/// the broker, whose Redis script gives the offset and publishes it.
fn to_history<'a>(
    node: &'a Node,
    worker: Option<&WorkerRooms>,
    options: &Arc<RoomOptions>,
    message: Message<'a>,
    scope: Scope,
) -> Delivery {
    if node.cluster.is_some() {
        return node.broker.publish_history(
            ClusterPublish {
                envelope: message.envelope(node, scope),
                // Delivered from the node's subscription only, with the offset Redis gives it.
                frame: bytes::Bytes::new(),
                except: None,
                here: None,
            },
            options,
        );
    }
    let Message {
        room,
        data,
        from,
        user,
    } = message;
    let log = node.history.log(room, options);
    let here = worker.map(|w| w.index());
    match log.append_next(here, |at| logged_frame(room, data, from, user, at)) {
        Ok((placed, wake)) => {
            history::wake(wake);
            if let Some(worker) = worker {
                worker.drain_log(room);
            }
            if node.history.over_budget() {
                node.history.sweep();
            }
            Delivery::placed(placed)
        }
        // Workers have this room's queue of undelivered messages full: the publisher waits
        // for room, as at a full room queue, then appends (every worker is woken then).
        Err(history::Full) => {
            let owned = Owned {
                room: room.to_owned(),
                data: data.get().to_owned(),
                from: from.to_owned(),
                user: user.map(str::to_owned),
            };
            Delivery::by_broker(Box::pin(append_later(log, owned)), false)
        }
    }
}

struct Owned {
    room: String,
    data: String,
    from: String,
    user: Option<String>,
}

async fn append_later(log: Arc<RoomLog>, message: Owned) -> crate::delivery::Answered {
    let data = RawValue::from_string(message.data)
        .map_err(|e| Unavailable(format!("the message could not be kept: {e}")))?;
    loop {
        log.room().await;
        let appended = log.append_next(None, |at| {
            logged_frame(
                &message.room,
                &data,
                &message.from,
                message.user.as_deref(),
                at,
            )
        });
        if let Ok((placed, wake)) = appended {
            history::wake(wake);
            return Ok(Some(placed));
        }
    }
}

/// A history room's `message` frame at `at`, and where its JSON text starts.
pub(crate) fn logged_frame(
    room: &str,
    data: &RawValue,
    from: &str,
    user: Option<&str>,
    at: Position<'_>,
) -> (Frame, usize) {
    let message = ServerFrame::Message {
        room,
        data,
        from,
        user,
        at: Some(at),
    };
    let len = message.exact_len().unwrap_or(0);
    let frame = text_frame_of(&message);
    let json_at = frame.len() - len;
    (frame, json_at)
}

enum Route<'w, 'a> {
    Worker(&'w WorkerRooms),
    Node,
    Cluster(Message<'a>),
    ClusterRelay((u8, &'a [u8])),
}

/// The `message` frame of a publish, WebSocket header included: its one serialization, in one
/// allocation, which every recipient on this node shares.
pub(crate) fn message_frame(room: &str, data: &RawValue, from: &str, user: Option<&str>) -> Frame {
    text_frame_of(&ServerFrame::Message {
        at: None,
        room,
        data,
        from,
        user,
    })
}
