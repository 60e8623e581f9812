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

use std::{
    collections::HashSet,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix::prelude::SendError;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Handler, Running, SpawnHandle,
    StreamHandler, WrapFuture,
};
use actix_http::ws::ProtocolError;
use switchboard_admin::{Claims, Mode};
use switchboard_protocol::{
    close, decode, ClientFrame, ErrorCode, Publish, Scope, ServerFrame, Welcome,
};

use crate::{
    messages::{Direct, Fanout, Frame, GoAway, Kick},
    metrics::{metrics, Disconnect, FanoutTimer, FrameKind, Source},
    node::{ConnectionSlot, Node, SessionEntry, SessionInfo},
    room::Room,
    worker::WorkerRooms,
    RoomName, SessionId,
};

use self::{
    reassembly::{Assembled, Reassembly},
    transport::{frame, Inbound, Item, Message, WsContext},
};

pub(crate) use self::outbox::{Outbox, SharedOutbox};

pub(crate) use self::transport::{serve_upgrade, text_frame};

/// What the handshake decided for a session: its wire mode and, when tokens are in use, the
/// verified claims of its token.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The name of the endpoint that accepted the session.
    pub(crate) endpoint: Arc<str>,
    pub(crate) mode: Mode,
    /// Relay mode: the room the path named, as a room key of its own (see [`relay_room_key`]).
    pub(crate) relay: Option<RelayRoom>,
    pub(crate) claims: Option<Box<Claims>>,
}

/// The room of a relay session.
#[derive(Debug)]
pub(crate) struct RelayRoom {
    pub(crate) key: RoomName,
    /// Whether the token lets this member send (checked once, at the handshake).
    pub(crate) may_send: bool,
}

/// The key under which a relay endpoint's room lives in the worker's and broadcaster's tables.
///
/// Relay rooms carry raw client bytes, so they must never meet a `switchboard.v1` room of the
/// same name, nor the same-named room of another relay endpoint. A NUL byte cannot appear in a
/// protocol room name (control characters are refused), so this key cannot collide with one.
pub(crate) fn relay_room_key(endpoint: &str, room: &str) -> RoomName {
    RoomName::from(format!("\0relay\0{endpoint}\0{room}").as_str())
}

/// One WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsSession {
    id: SessionId,
    /// The id as clients see it (`welcome.session`, `message.from`) and what the node's registry
    /// shows of the session.
    info: Arc<SessionInfo>,
    node: Arc<Node>,
    worker: Rc<WorkerRooms>,
    subscriptions: HashSet<RoomName>,
    fragments: Option<Reassembly>,
    closing: bool,
    /// Everything this session sends, in order, waiting for the socket.
    out: SharedOutbox,
    mode: Mode,
    relay: Option<RelayRoom>,
    /// The claims of the session's token, when tokens are in use; `None` means no restriction.
    claims: Option<Box<Claims>>,
    /// The timer that closes the session when its token expires.
    expiry: Option<SpawnHandle>,
    _slot: ConnectionSlot,
}

impl WsSession {
    /// A session for a connection whose handshake was accepted on the current worker.
    pub(crate) fn new(
        node: Arc<Node>,
        worker: Rc<WorkerRooms>,
        slot: ConnectionSlot,
        out: SharedOutbox,
        admission: Admission,
    ) -> Self {
        let (id, label) = node.next_session_id();
        let info = Arc::new(SessionInfo {
            label,
            user: admission.claims.as_ref().and_then(|c| c.sub.clone()),
            endpoint: admission.endpoint,
            mode: admission.mode,
            worker: worker.index(),
            connected_at: unix_now(),
            subscriptions: AtomicUsize::new(0),
            kicked: AtomicBool::new(false),
        });
        WsSession {
            id,
            info,
            node,
            worker,
            subscriptions: HashSet::new(),
            fragments: None,
            closing: false,
            out,
            mode: admission.mode,
            relay: admission.relay,
            claims: admission.claims,
            expiry: None,
            _slot: slot,
        }
    }

    /// The session's user id: its token's `sub`.
    fn user(&self) -> Option<&str> {
        self.claims.as_ref().and_then(|c| c.sub.as_deref())
    }

    /// (Re)arms the timer that closes the session with 4002 when its token expires.
    fn arm_expiry(&mut self, ctx: &mut WsContext) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        let Some(claims) = &self.claims else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // `exp` is the first second at which the token is no longer valid.
        let left = Duration::from_secs(claims.exp).saturating_sub(now);
        self.expiry = Some(ctx.run_later(left, |act, ctx| {
            tracing::debug!(session = %act.info.label, "token expired");
            act.close(ctx, close::TOKEN_EXPIRED, close::TOKEN_EXPIRED_REASON);
        }));
    }
}

impl Actor for WsSession {
    type Context = WsContext;

    fn started(&mut self, ctx: &mut WsContext) {
        self.node.sessions.insert(
            self.id,
            SessionEntry {
                addr: ctx.address(),
                info: self.info.clone(),
            },
        );
        self.arm_expiry(ctx);
        match self.mode {
            Mode::Json => {
                let welcome = ServerFrame::Welcome(Welcome {
                    session: &self.info.label,
                    node: &self.node.config.node_id,
                    worker: self.worker.index(),
                    heartbeat_secs: self.node.config.heartbeat.as_secs_f64(),
                    user: self.user(),
                });
                self.send(&welcome);
            }
            // A relay or echo client speaks its own protocol: nothing is sent that it did not
            // ask for, and the relay room is joined before the first message can arrive.
            Mode::Relay => {
                if let Some(relay) = &self.relay {
                    self.worker.join(&relay.key, self.id, self.out.clone());
                }
            }
            Mode::Echo => {}
        }
        // Pings and the silence check come from the worker's one heartbeat timer.
        self.worker.watch(self.id, self.out.clone());
        tracing::debug!(session = %self.info.label, worker = self.worker.index(), "session opened");
    }

    fn stopping(&mut self, _: &mut WsContext) -> Running {
        self.leave_all();
        Running::Stop
    }

    fn stopped(&mut self, _: &mut WsContext) {
        self.leave_all();
        self.worker.unwatch(self.id);
        self.node.sessions.remove(&self.id);
        tracing::debug!(session = %self.info.label, "session closed");
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
        self.info.subscriptions.store(0, Ordering::Relaxed);
        if let Some(relay) = &self.relay {
            self.worker.leave(&relay.key, self.id);
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
            ClientFrame::Refresh { token, id } => self.refresh(&token, id, ctx),
            ClientFrame::Unsubscribe { room, id } => {
                if self.subscriptions.remove(&*room) {
                    self.worker.leave(&room, self.id);
                    self.info.subscriptions.fetch_sub(1, Ordering::Relaxed);
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
        if self.claims.as_ref().is_some_and(|c| !c.may_subscribe(room)) {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "the token does not grant this room",
            );
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
        self.info.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.send(&ServerFrame::Ack { id });
    }

    fn publish(&mut self, publish: Publish<'_>, ctx: &mut WsContext) {
        let Publish {
            room,
            data,
            scope,
            id,
        } = publish;
        if self.claims.as_ref().is_some_and(|c| !c.may_publish(&room)) {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "the token does not grant publishing to this room",
            );
        }
        let max = self.node.config.max_message_bytes;
        let user = self.user();
        let len = ServerFrame::message_len(&room, data, &self.info.label, user);
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
                from: &self.info.label,
                user,
            }
            .encode()
            .as_bytes(),
        );
        metrics().published(scope, Source::Client);
        self.fan_out(&room, frame, scope, None, ctx, move |act| {
            act.send(&ServerFrame::Ack { id });
        });
    }

    /// Hands `frame` to the rooms that serve `room` within `scope`, then calls `done`: at once
    /// when every room took it, or after waiting for room in the queues that were full.
    fn fan_out(
        &mut self,
        room: &str,
        frame: Frame,
        scope: Scope,
        except: Option<SessionId>,
        ctx: &mut WsContext,
        done: impl FnOnce(&mut Self) + 'static,
    ) {
        let mut waiting: Vec<(actix::Addr<Room>, Fanout)> = Vec::new();
        let mut timer: Option<Arc<FanoutTimer>> = None;
        let mut send = |addr: &actix::Addr<Room>| {
            let msg = Fanout {
                frame: frame.clone(),
                except,
                timer: Some(timer.get_or_insert_with(FanoutTimer::start).clone()),
            };
            match addr.try_send(msg) {
                Ok(()) => {}
                Err(SendError::Full(msg)) => waiting.push((addr.clone(), msg)),
                // The room lost its last member since the lookup: nobody to deliver to.
                Err(SendError::Closed(_)) => {}
            }
        };
        match scope {
            Scope::Worker => {
                if let Some(addr) = self.worker.local_room(room) {
                    send(&addr);
                }
            }
            Scope::Node | Scope::Cluster => self.node.broadcaster.for_each_worker(room, send),
        }
        if waiting.is_empty() {
            return done(self);
        }
        // A room's queue is full: wait for room there instead of dropping or queueing without
        // bound. `wait` also stops this session reading further frames until then, which pushes
        // back on the publisher through TCP and keeps its messages in order.
        let fut = async move {
            for (addr, msg) in waiting {
                let _ = addr.send(msg).await;
            }
        };
        ctx.wait(fut.into_actor(self).map(move |(), act, _| done(act)));
    }

    /// `refresh`: replaces the session's token with a newer one for the same user.
    fn refresh(&mut self, token: &str, id: Option<u64>, ctx: &mut WsContext) {
        let policy = self.node.policy.load();
        let Some(key) = policy.token() else {
            return self.send_error(id, ErrorCode::InvalidToken, "tokens are not in use here");
        };
        let claims = match key.verify(token, unix_now()) {
            Ok(claims) => claims,
            Err(e) => return self.send_error(id, ErrorCode::InvalidToken, &e.to_string()),
        };
        // Others see a session's user in its messages; a refresh must not turn it into another.
        if claims.sub.as_deref() != self.user() {
            return self.send_error(id, ErrorCode::InvalidToken, "the token is for another user");
        }
        self.claims = Some(Box::new(claims));
        self.arm_expiry(ctx);
        self.send(&ServerFrame::Ack { id });
    }

    /// A relay member's message: to every other member of its room, in the same frame type.
    fn relay(&mut self, opcode: u8, payload: &[u8], ctx: &mut WsContext) {
        let Some(relay) = &self.relay else { return };
        if !relay.may_send {
            return self.close(
                ctx,
                close::POLICY_VIOLATION,
                "the token does not grant sending",
            );
        }
        let key = relay.key.clone();
        metrics().published(Scope::Node, Source::Relay);
        self.fan_out(
            &key,
            frame(opcode, payload),
            Scope::Node,
            Some(self.id),
            ctx,
            |_| {},
        );
    }

    /// A whole message from the client, in the session's mode.
    fn on_message(&mut self, opcode: u8, payload: &[u8], ctx: &mut WsContext) {
        match self.mode {
            Mode::Json if opcode == 0x1 => match std::str::from_utf8(payload) {
                Ok(text) => self.on_text(text, ctx),
                // The reader checked text frames already; this cannot happen.
                Err(_) => self.close(ctx, close::INVALID_PAYLOAD, "invalid utf-8"),
            },
            Mode::Json => self.refuse_binary(),
            Mode::Relay => self.relay(opcode, payload, ctx),
            Mode::Echo => self.out.borrow_mut().push(frame(opcode, payload)),
        }
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
                        Assembled::Text(text) => self.on_message(0x1, text.as_bytes(), ctx),
                        Assembled::Binary(data) => self.on_message(0x2, &data, ctx),
                    }),
                None => Ok(()),
            },
        };
        if result.is_err() {
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
        let kind = match &item {
            Ok(Message::Text(_)) => Some(FrameKind::Text),
            Ok(Message::Binary(_)) => Some(FrameKind::Binary),
            Ok(Message::Continuation(_)) => Some(FrameKind::Continuation),
            Ok(Message::Ping(_)) => Some(FrameKind::Ping),
            Ok(Message::Pong(_)) => Some(FrameKind::Pong),
            Ok(Message::Close(_)) => Some(FrameKind::Close),
            Ok(Message::Nop) | Err(_) => None,
        };
        if let Some(kind) = kind {
            metrics().frame_received(kind);
        }
        match item {
            Ok(Message::Text(text)) if self.mode == Mode::Json => self.on_text(&text, ctx),
            Ok(Message::Text(text)) => self.on_message(0x1, text.as_bytes(), ctx),
            Ok(Message::Binary(data)) => self.on_message(0x2, &data, ctx),
            Ok(Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(Message::Ping(payload)) => self.out.borrow_mut().control(0xA, &payload),
            Ok(Message::Pong(_)) | Ok(Message::Nop) => {}
            Ok(Message::Close(reason)) => {
                // Answer the close handshake and end; the connection is closed right after.
                self.closing = true;
                let code = reason.map_or(close::NORMAL, |r| u16::from(r.code));
                let mut out = self.out.borrow_mut();
                out.ended = Some(Disconnect::ClientClose);
                out.close(code, "");
                drop(out);
                ctx.stop();
            }
            Err(violation) => {
                tracing::debug!(session = %self.info.label, code = violation.code, "protocol error");
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

impl Handler<Kick> for WsSession {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut WsContext) {
        self.close(ctx, close::KICKED, close::KICKED_REASON);
    }
}

impl Handler<Direct> for WsSession {
    type Result = ();

    fn handle(&mut self, Direct(frame): Direct, _: &mut WsContext) {
        if self.closing {
            return;
        }
        // Through the outbox bounds like any delivery: a full outbox evicts the session.
        if self.out.borrow_mut().deliver(&Rc::new(frame)).is_ok() {
            metrics().delivered.inc();
        } else {
            metrics().dropped(crate::metrics::Drop::SlowConsumer, 1);
        }
    }
}

impl Handler<GoAway> for WsSession {
    type Result = ();

    fn handle(&mut self, _: GoAway, ctx: &mut WsContext) {
        self.close(ctx, close::GOING_AWAY, close::GOING_AWAY_REASON);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
