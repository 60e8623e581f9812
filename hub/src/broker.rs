//! The broker seam: what carries a `cluster`-scope publish beyond this node.
//!
//! [`crate::publish`] hands every cluster publish to the node's [`Broker`], as an
//! [`Envelope`] (what another node needs to deliver it) and the encoded `message` frame (what this
//! node's members get). The broker decides how the publish reaches every node, this one included,
//! and returns the [`Delivery`] the publisher waits on.
//!
//! The one broker today is [`LocalBroker`]: a standalone node is the whole cluster, so a cluster
//! publish is a node publish. A broker that spans nodes (Redis pub/sub) is one more module that
//! implements [`Broker`], listens to [`crate::events`] to follow which rooms are active here,
//! and delivers what arrives from other nodes through [`Delivery::to_node`].

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use switchboard_protocol::{Envelope, Scope};

use crate::{
    broadcaster::Broadcaster,
    codec::Frame,
    delivery::{Delivery, Here},
    SessionId,
};

/// A cluster-scope publish, as the broker receives it.
#[derive(Debug)]
pub(crate) struct ClusterPublish<'a> {
    /// What crosses to other nodes: encoded by the broker, once per publish, if it needs to.
    pub(crate) envelope: Envelope<'a>,
    /// The `message` frame for this node's members, encoded once.
    pub(crate) frame: Frame,
    /// A member of this node not to deliver to.
    pub(crate) except: Option<SessionId>,
    /// The publisher's own worker, when it has one: a broker that delivers on this node at once
    /// delivers there directly (see [`Delivery::to_node`]).
    pub(crate) here: Option<&'a dyn Here>,
}

/// A relay member's message for a cluster: the relay room's key, the frame type and payload
/// (what crosses to other nodes), and the frame for this node's members.
#[derive(Debug)]
pub(crate) struct RelayPublish<'a> {
    pub(crate) key: &'a str,
    pub(crate) opcode: u8,
    pub(crate) payload: &'a [u8],
    pub(crate) frame: Frame,
    /// The relay member itself, which does not get its own message back.
    pub(crate) except: Option<SessionId>,
    pub(crate) here: Option<&'a dyn Here>,
}

impl std::fmt::Debug for dyn Here + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {}", self.index())
    }
}

/// Carries cluster publishes between the nodes of a cluster.
pub(crate) trait Broker: Send + Sync + fmt::Debug {
    /// How far a cluster publish travels with this broker: the scope it is counted as.
    fn reach(&self) -> Scope;

    /// Carries `publish` to every node of the cluster, this one included.
    fn publish(&self, publish: ClusterPublish<'_>) -> Delivery;

    /// Carries a relay member's message to every node (a standalone node: to its members).
    fn publish_relay(&self, publish: RelayPublish<'_>) -> Delivery;

    /// Carries a publish to a history room: the broker assigns its offset (cluster mode); the
    /// delivery's answer carries it.
    fn publish_history(
        &self,
        publish: ClusterPublish<'_>,
        options: &crate::config::RoomOptions,
    ) -> Delivery {
        let _ = options;
        self.publish(publish)
    }

    /// A member just joined `room` here: what to wait for before the join counts as done (the
    /// node's subscription to the room being in place), or `None` when there is nothing to
    /// wait for.
    fn in_place(&self, room: &str) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        let _ = room;
        None
    }

    /// Whether cluster publishes can be carried now: `Err` names what is wrong.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The broker of a standalone node: the cluster is this node.
#[derive(Debug)]
pub(crate) struct LocalBroker {
    broadcaster: Arc<Broadcaster>,
}

impl LocalBroker {
    pub(crate) fn new(broadcaster: Arc<Broadcaster>) -> Self {
        LocalBroker { broadcaster }
    }
}

impl Broker for LocalBroker {
    fn reach(&self) -> Scope {
        Scope::Node
    }

    fn publish_relay(&self, publish: RelayPublish<'_>) -> Delivery {
        Delivery::to_node(
            &self.broadcaster,
            publish.here,
            publish.key,
            publish.frame,
            publish.except,
        )
    }

    fn publish(&self, publish: ClusterPublish<'_>) -> Delivery {
        Delivery::to_node(
            &self.broadcaster,
            publish.here,
            &publish.envelope.room,
            publish.frame,
            publish.except,
        )
    }
}
