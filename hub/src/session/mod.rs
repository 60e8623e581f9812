//! [`WsSession`]: one actor per WebSocket connection.
//!
//! A session decodes client frames, keeps its subscriptions (joining and leaving its worker's
//! rooms synchronously), encodes each publish once and hands it to the rooms, and queues its own
//! replies in its outbox, which its rooms deliver into as well.
//!
//! The transport (`transport.rs`) polls the session whether or not the socket takes data, and
//! the outbox (`outbox.rs`) is bounded in frames and bytes: a client that cannot keep up is
//! evicted with 4000, and dropped outright if even the close frame cannot be written.

mod outbox;
mod reassembly;
mod transport;

use std::{collections::HashSet, rc::Rc, sync::Arc, time::Instant};

use actix::prelude::SendError;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Handler, Running, StreamHandler, WrapFuture,
};
use actix_http::ws::ProtocolError;
use switchboard_protocol::{
    close, decode, ClientFrame, ErrorCode, Publish, Scope, ServerFrame, Welcome,
};

use crate::{
    messages::{Fanout, Frame, GoAway},
    node::{ConnectionSlot, Node},
    room::Room,
    stats::Stats,
    worker::WorkerRooms,
    RoomName, SessionId,
};

use self::{
    reassembly::{Assembled, Reassembly},
    transport::{text_frame, Inbound, Item, Message, WsContext},
};

pub(crate) use self::outbox::{Outbox, SharedOutbox};

pub(crate) use self::transport::serve_upgrade;

/// One WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsSession {
    id: SessionId,
    /// The id as clients see it (`welcome.session`, `message.from`).
    label: String,
    node: Arc<Node>,
    worker: Rc<WorkerRooms>,
    subscriptions: HashSet<RoomName>,
    fragments: Option<Reassembly>,
    closing: bool,
    /// Everything this session sends, in order, waiting for the socket.
    out: SharedOutbox,
    _slot: ConnectionSlot,
}

impl WsSession {
    /// A session for a connection whose handshake was accepted on the current worker.
    pub(crate) fn new(
        node: Arc<Node>,
        worker: Rc<WorkerRooms>,
        slot: ConnectionSlot,
        out: SharedOutbox,
    ) -> Self {
        let (id, label) = node.next_session_id();
        WsSession {
            id,
            label,
            node,
            worker,
            subscriptions: HashSet::new(),
            fragments: None,
            closing: false,
            out,
            _slot: slot,
        }
    }
}

impl Actor for WsSession {
    type Context = WsContext;

    fn started(&mut self, ctx: &mut WsContext) {
        Stats::add(&self.node.stats.sessions_opened, 1);
        self.node.sessions.insert(self.id, ctx.address());
        let welcome = ServerFrame::Welcome(Welcome {
            session: &self.label,
            node: &self.node.config.node_id,
            worker: self.worker.index(),
            heartbeat_secs: self.node.config.heartbeat.as_secs_f64(),
        });
        self.send(&welcome);
        // Pings and the silence check come from the worker's one heartbeat timer.
        self.worker.watch(self.id, self.out.clone());
        tracing::debug!(session = %self.label, worker = self.worker.index(), "session opened");
    }

    fn stopping(&mut self, _: &mut WsContext) -> Running {
        self.leave_all();
        Running::Stop
    }

    fn stopped(&mut self, _: &mut WsContext) {
        self.leave_all();
        self.worker.unwatch(self.id);
        self.node.sessions.remove(&self.id);
        Stats::add(&self.node.stats.sessions_closed, 1);
        tracing::debug!(session = %self.label, "session closed");
    }
}

impl WsSession {
    fn close(&mut self, ctx: &mut WsContext, code: u16, reason: &str) {
        if !self.closing {
            self.closing = true;
            self.out.borrow_mut().close(code, reason);
        }
        ctx.stop();
    }

    fn leave_all(&mut self) {
        for room in self.subscriptions.drain() {
            self.worker.leave(&room, self.id);
        }
    }

    /// Queues a frame of this session's own (reply, error, welcome).
    fn send(&self, frame: &ServerFrame<'_>) {
        self.out.borrow_mut().text(&frame.encode());
    }

    fn send_error(&self, id: Option<u64>, code: ErrorCode, message: &str) {
        self.send(&ServerFrame::Error { id, code, message });
    }

    fn on_text(&mut self, text: &str, ctx: &mut WsContext) {
        let frame = match decode(text) {
            Ok(frame) => frame,
            Err(e) => return self.send_error(e.id, e.code, &e.message),
        };
        match frame {
            ClientFrame::Subscribe { room, id } => self.subscribe(&room, id),
            ClientFrame::Unsubscribe { room, id } => {
                if self.subscriptions.remove(&*room) {
                    self.worker.leave(&room, self.id);
                    self.send(&ServerFrame::Ack { id });
                } else {
                    self.send_error(id, ErrorCode::NotSubscribed, "not subscribed to this room");
                }
            }
            ClientFrame::Publish(publish) => self.publish(publish, ctx),
            ClientFrame::Ping { id } => self.send(&ServerFrame::Pong { id }),
        }
    }

    fn subscribe(&mut self, room: &str, id: Option<u64>) {
        if self.subscriptions.contains(room) {
            return self.send(&ServerFrame::Ack { id });
        }
        if self.subscriptions.len() >= self.node.config.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per session",
                self.node.config.max_subscriptions
            );
            return self.send_error(id, ErrorCode::LimitExceeded, &message);
        }
        let room = RoomName::from(room);
        self.worker.join(&room, self.id, self.out.clone());
        self.subscriptions.insert(room);
        self.send(&ServerFrame::Ack { id });
    }

    fn publish(&mut self, publish: Publish<'_>, ctx: &mut WsContext) {
        let Publish {
            room,
            data,
            scope,
            id,
        } = publish;
        let max = self.node.config.max_message_bytes;
        let len = ServerFrame::message_len(&room, data, &self.label);
        if len > max {
            let message = format!("message frame would be {len} bytes, limit is {max}");
            return self.send_error(id, ErrorCode::TooLarge, &message);
        }
        // The one serialization of this publish, WebSocket framing included: every recipient
        // shares these bytes.
        let frame: Frame = text_frame(
            ServerFrame::Message {
                room: &room,
                data,
                from: &self.label,
            }
            .encode()
            .as_bytes(),
        );
        Stats::add(&self.node.stats.published, 1);
        let mut waiting: Vec<(actix::Addr<Room>, Fanout)> = Vec::new();
        let mut send = |addr: &actix::Addr<Room>| match addr.try_send(Fanout(frame.clone())) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => waiting.push((addr.clone(), msg)),
            // The room lost its last member since the lookup: nobody to deliver to.
            Err(SendError::Closed(_)) => {}
        };
        match scope {
            Scope::Worker => {
                if let Some(addr) = self.worker.local_room(&room) {
                    send(&addr);
                }
            }
            Scope::Node | Scope::Cluster => self.node.broadcaster.for_each_worker(&room, send),
        }
        if waiting.is_empty() {
            return self.send(&ServerFrame::Ack { id });
        }
        // A room's queue is full: wait for room there instead of dropping or queueing without
        // bound. `wait` also stops this session reading further frames until then, which pushes
        // back on the publisher through TCP and keeps its messages in order.
        let fut = async move {
            for (addr, msg) in waiting {
                let _ = addr.send(msg).await;
            }
        };
        ctx.wait(fut.into_actor(self).map(move |(), act, _| {
            act.send(&ServerFrame::Ack { id });
        }));
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut WsContext) {
        let result = match item {
            Item::FirstText(b) => Reassembly::start(true, &b).map(|r| self.fragments = Some(r)),
            Item::FirstBinary(b) => Reassembly::start(false, &b).map(|r| self.fragments = Some(r)),
            Item::Continue(b) => match self.fragments.as_mut() {
                Some(r) => r.push(&b),
                None => Ok(()),
            },
            Item::Last(b) => match self.fragments.take() {
                Some(mut r) => r
                    .push(&b)
                    .and_then(|()| r.finish())
                    .map(|whole| match whole {
                        Assembled::Text(text) => self.on_text(&text, ctx),
                        Assembled::Binary => self.refuse_binary(),
                    }),
                None => Ok(()),
            },
        };
        if result.is_err() {
            Stats::add(&self.node.stats.protocol_errors, 1);
            self.close(ctx, close::INVALID_PAYLOAD, "invalid utf-8");
        }
    }

    fn refuse_binary(&self) {
        self.send_error(
            None,
            ErrorCode::Unsupported,
            "binary frames are not part of switchboard.v1",
        );
    }
}

impl StreamHandler<Inbound> for WsSession {
    fn handle(&mut self, item: Inbound, ctx: &mut WsContext) {
        if self.closing {
            return;
        }
        self.out.borrow_mut().last_heard = Instant::now();
        match item {
            Ok(Message::Text(text)) => self.on_text(&text, ctx),
            Ok(Message::Binary(_)) => self.refuse_binary(),
            Ok(Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(Message::Ping(payload)) => self.out.borrow_mut().control(0xA, &payload),
            Ok(Message::Pong(_)) | Ok(Message::Nop) => {}
            Ok(Message::Close(reason)) => {
                // Answer the close handshake and end; the connection is closed right after.
                self.closing = true;
                let code = reason.map_or(close::NORMAL, |r| u16::from(r.code));
                self.out.borrow_mut().close(code, "");
                ctx.stop();
            }
            Err(violation) => {
                Stats::add(&self.node.stats.protocol_errors, 1);
                tracing::debug!(session = %self.label, code = violation.code, "protocol error");
                self.close(ctx, violation.code, violation.reason);
            }
        }
    }

    fn finished(&mut self, ctx: &mut WsContext) {
        // The client closed its side (or the socket failed).
        self.closing = true;
        ctx.stop();
    }
}

/// `WebsocketContext` requires this handler for its built-in payload stream, which the transport
/// leaves empty (it never yields): frames arrive through the `Inbound` stream above.
impl StreamHandler<Result<Message, ProtocolError>> for WsSession {
    fn handle(&mut self, _: Result<Message, ProtocolError>, _: &mut WsContext) {}

    fn finished(&mut self, _: &mut WsContext) {}
}

impl Handler<GoAway> for WsSession {
    type Result = ();

    fn handle(&mut self, _: GoAway, ctx: &mut WsContext) {
        self.close(ctx, close::GOING_AWAY, close::GOING_AWAY_REASON);
    }
}
