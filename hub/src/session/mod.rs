//! [`WsSession`]: one actor per WebSocket connection.
//!
//! A session decodes client frames, joins and leaves rooms through its worker (synchronously, so
//! membership is exact when the ack goes out), hands each publish to the one publish path
//! (`publish.rs`), and queues its own replies in its outbox, which its rooms deliver into as well.
//!
//! `connection.rs` runs the session in its actor context on the transport (`transport/`), whose
//! writer polls the session whether or not the socket takes data; the outbox (`outbox.rs`) is
//! bounded in frames and bytes: a client that cannot keep up is evicted with 4000, and dropped
//! outright if even the close frame cannot be written.

mod connection;
mod history;
mod reassembly;

use std::{
    collections::VecDeque,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicUsize},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Handler, Running, SpawnHandle,
    StreamHandler, WrapFuture,
};
use switchboard_admin::{Claims, Mode};
use switchboard_protocol::{
    close, decode, ClientFrame, ErrorCode, Publish, Scope, ServerFrame, Welcome,
};

use crate::{
    codec::{frame, opcode, Batch, Inbound, Item, Message},
    delivery::{Acceptance, Answered, Delivery},
    messages::Command,
    metrics::{metrics, Disconnect, Drop as Dropped, FrameKind, Source},
    node::{ConnectionSlot, Node, SessionEntry, SessionInfo},
    outbox::{Refused, SharedOutbox},
    publish::{publish, Payload, Publication, PublishError},
    transport::handshake::{Admission, RelayRoom},
    unix_now,
    worker::{Join, WorkerRooms},
    SessionId,
};

use self::{
    connection::{ContextMessage, ProtocolError, WsContext},
    reassembly::{Assembled, Reassembly},
};

pub(crate) use self::connection::serve_upgrade;
#[cfg(test)]
pub(crate) use self::connection::{start as start_context, MAILBOX_CAPACITY};

/// One WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsSession {
    id: SessionId,
    /// The id as clients see it (`welcome.session`, `message.from`) and what the node's registry
    /// shows of the session.
    info: Arc<SessionInfo>,
    node: Arc<Node>,
    /// The session's worker, which owns its memberships.
    worker: Rc<WorkerRooms>,
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
    /// The rest of a batch whose handling stopped to wait for a full room queue (`wait_for`):
    /// handled, in order, when the wait is over. Nothing more is read while a session waits, so
    /// this holds at most one batch of what the reader had buffered.
    backlog: VecDeque<Inbound>,
    /// Cluster publishes Redis has yet to answer, in publish order, with their request ids:
    /// answered in that order (see `pipeline`).
    inflight: Inflight,
    /// The task answering `inflight` is running.
    pumping: bool,
    /// The client's inbound rate, when the node limits it.
    bucket: Option<Bucket>,
    /// The next message to handle was charged to `bucket` already.
    charged: bool,
    _slot: ConnectionSlot,
}

/// A session's inbound token buckets: messages and bytes, each refilled at its rate up to
/// `burst` seconds of it. A message over the rate is still charged, so a client that keeps
/// sending over it sinks into debt; at `FAR_OVER` buckets' worth of debt it is closed.
#[derive(Debug)]
struct Bucket {
    rate: crate::config::SessionRate,
    messages: f64,
    bytes: f64,
    at: std::time::Instant,
}

/// Debt, in buckets, at which a session is closed with 1008.
const FAR_OVER: f64 = 4.0;

/// Where a client's message stands against its session's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rate {
    Within,
    Over,
    FarOver,
}

impl Bucket {
    fn new(rate: crate::config::SessionRate) -> Self {
        Bucket {
            rate,
            messages: rate.messages_per_second * rate.burst,
            bytes: rate.bytes_per_second * rate.burst,
            at: std::time::Instant::now(),
        }
    }

    /// What the limit is, for the error message.
    fn describe(&self) -> String {
        let mut limits = Vec::new();
        if self.rate.messages_per_second.is_finite() {
            limits.push(format!("{} messages/s", self.rate.messages_per_second));
        }
        if self.rate.bytes_per_second.is_finite() {
            limits.push(format!("{} bytes/s", self.rate.bytes_per_second));
        }
        format!("over this session's rate ({})", limits.join(", "))
    }

    /// Charges one message of `len` bytes.
    fn charge(&mut self, len: usize) -> Rate {
        let now = std::time::Instant::now();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let r = self.rate;
        let (full_messages, full_bytes) = (
            r.messages_per_second * r.burst,
            r.bytes_per_second * r.burst,
        );
        self.messages = (self.messages + elapsed * r.messages_per_second).min(full_messages);
        self.bytes = (self.bytes + elapsed * r.bytes_per_second).min(full_bytes);
        let within = self.messages >= 1.0 && self.bytes >= len as f64;
        self.messages -= 1.0;
        self.bytes -= len as f64;
        if within {
            Rate::Within
        } else if self.messages < -FAR_OVER * full_messages || self.bytes < -FAR_OVER * full_bytes {
            Rate::FarOver
        } else {
            Rate::Over
        }
    }
}

/// Cluster publishes a session may have waiting for Redis's answer; at this many it stops
/// reading until the oldest is answered.
const MAX_INFLIGHT: usize = 256;

/// A session's unanswered cluster publishes, each with what to do with Redis's answer.
#[derive(Default)]
struct Inflight(VecDeque<(Answer, Acceptance)>);

/// What a cluster publish's answer becomes.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A `switchboard.v1` publish: an ack (if it had an id) or an error frame.
    Publish(Option<u64>),
    /// A relay member's message: the relay protocol has no answers, so a failure is counted
    /// and logged only.
    Relay,
}

impl std::fmt::Debug for Inflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} unanswered", self.0.len())
    }
}

/// Answers a session's cluster publishes as Redis answers them: until none is left (`below`
/// 1, the task `pumping` marks), or until fewer than `below` are (the wait at the bound).
struct Answering {
    below: usize,
}

impl actix::ActorFuture<WsSession> for Answering {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut WsSession,
        _: &mut WsContext,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        act.answer_inflight(task);
        if act.inflight.0.len() < self.below {
            if self.below == 1 {
                act.pumping = false;
            }
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
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
        let bucket = node.config.session_rate.map(Bucket::new);
        WsSession {
            id,
            info,
            node,
            worker,
            fragments: None,
            closing: false,
            out,
            mode: admission.mode,
            relay: admission.relay,
            claims: admission.claims,
            expiry: None,
            backlog: VecDeque::new(),
            inflight: Inflight::default(),
            pumping: false,
            bucket,
            charged: false,
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
                commands: ctx.address().recipient(),
                info: self.info.clone(),
            },
        );
        // Under the worker's heartbeat (pings and the silence check) and able to join rooms.
        self.worker
            .open(self.id, self.out.clone(), self.info.clone());
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
                    self.worker.join(self.id, &relay.key, usize::MAX);
                }
            }
            Mode::Echo => {}
        }
        tracing::debug!(session = %self.info.label, worker = self.worker.index(), "session opened");
    }

    fn stopping(&mut self, _: &mut WsContext) -> Running {
        // Out of every room as soon as the session is ending, whatever ended it.
        self.worker.close(self.id);
        Running::Stop
    }

    fn stopped(&mut self, _: &mut WsContext) {
        // Idempotent: a session that stopped without `stopping` (its context dropped) ends here.
        self.worker.close(self.id);
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

    /// Queues a frame of this session's own (reply, error, welcome). A client that does not read
    /// its replies fills its outbox and is evicted, so a refusal needs no handling here.
    fn send(&self, frame: &ServerFrame<'_>) {
        let _ = self.out.borrow_mut().send(frame);
    }

    /// Acknowledges a request that succeeded: only a request with an `id` gets an answer, so a
    /// fire-and-forget publish costs the hub no reply (errors are always answered).
    fn ack(&self, id: Option<u64>) {
        if id.is_some() {
            self.send(&ServerFrame::Ack { id });
        }
    }

    fn send_error(&self, id: Option<u64>, code: ErrorCode, message: &str) {
        self.send(&ServerFrame::Error { id, code, message });
    }

    fn on_text(&mut self, text: &str, ctx: &mut WsContext) {
        let decoded = decode(text);
        // Answers keep request order: while cluster publishes wait for Redis's answer, only
        // more cluster publishes go ahead (their answers queue behind); anything else waits
        // until those are answered, then is handled.
        if !self.inflight.0.is_empty() && !self.is_pipelined(&decoded) {
            let again = Ok(Message::Text(bytestring::ByteString::from(text.to_owned())));
            self.backlog.push_front(again);
            self.charged = self.bucket.is_some();
            ctx.wait(Answering { below: 1 }.map(|(), act, ctx| act.resume(ctx)));
            return;
        }
        let frame = match decoded {
            Ok(frame) => frame,
            Err(e) => return self.send_error(e.id, e.code, &e.message),
        };
        match frame {
            ClientFrame::Subscribe { room, id, recover } => {
                self.subscribe(&room, id, recover, ctx);
            }
            ClientFrame::History { room, limit, id } => self.history(&room, limit, id, ctx),
            ClientFrame::Presence { room, id } => self.presence(&room, id, ctx),
            ClientFrame::Refresh { token, id } => self.refresh(&token, id, ctx),
            ClientFrame::Unsubscribe { room, id } => {
                if self.worker.leave(self.id, &room) {
                    self.ack(id);
                } else {
                    self.send_error(id, ErrorCode::NotSubscribed, "not subscribed to this room");
                }
            }
            ClientFrame::Publish(publish) => self.publish(publish, ctx),
            ClientFrame::Ping { id } => self.send(&ServerFrame::Pong { id }),
        }
    }

    fn subscribe(
        &mut self,
        room: &str,
        id: Option<u64>,
        recover: Option<switchboard_protocol::Recover<'_>>,
        ctx: &mut WsContext,
    ) {
        if self.worker.is_member(self.id, room) {
            return self.ack(id);
        }
        if self.claims.as_ref().is_some_and(|c| !c.may_subscribe(room)) {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "the token does not grant this room",
            );
        }
        let limit = self.node.config.max_subscriptions;
        // A room new to the node must fit under the node's room limit (a few subscribes racing
        // for the last places may pass it by as many: it bounds memory, not an exact count).
        let max_rooms = self.node.config.max_rooms;
        if !self.node.broadcaster.has(room) && self.node.broadcaster.room_count() >= max_rooms {
            let message = format!("the node is at its limit of {max_rooms} rooms");
            return self.send_error(id, ErrorCode::LimitExceeded, &message);
        }
        if let Some(options) = self.node.history_options(room).cloned() {
            // Held while its position (and what it missed) is worked out: its deliveries
            // wait, so that nothing reaches it before its ack and its replay.
            return match self.worker.join_held(self.id, room, limit, true) {
                Join::Joined => self.subscribe_history(room, id, recover, options, ctx),
                Join::Already => self.ack(id),
                Join::Full => {
                    let message = format!("at most {limit} subscriptions per session");
                    self.send_error(id, ErrorCode::LimitExceeded, &message);
                }
                Join::Closed => {}
            };
        }
        match self.worker.join(self.id, room, limit) {
            // In cluster mode the ack waits until the node's subscription to the room is in
            // place, so that a publish made anywhere after the ack reaches this member.
            Join::Joined => match self.node.broker.in_place(room) {
                Some(wait) => self.wait_then(wait, ctx, move |act| act.ack(id)),
                None => self.ack(id),
            },
            Join::Already => self.ack(id),
            Join::Full => {
                let message = format!("at most {limit} subscriptions per session");
                self.send_error(id, ErrorCode::LimitExceeded, &message);
            }
            // The session is ending: nothing more reaches its client.
            Join::Closed => {}
        }
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
        let publication = Publication {
            room: &room,
            payload: Payload::Message {
                data,
                from: &self.info.label,
                user: self.user(),
            },
            scope,
            source: Source::Client,
            except: None,
        };
        match crate::publish::publish(&self.node, Some(&self.worker), publication) {
            Ok(delivery) => match delivery.into_broker() {
                Ok((accepted, in_order)) => {
                    self.pipeline(Answer::Publish(id), accepted, in_order, ctx);
                }
                Err(delivery) => self.wait_for(delivery, ctx, move |act, accepted| {
                    act.answer_publish(id, accepted)
                }),
            },
            Err(PublishError::TooLarge { size, limit }) => {
                let message = format!("message frame would be {size} bytes, limit is {limit}");
                self.send_error(id, ErrorCode::TooLarge, &message);
            }
        }
    }

    /// Calls `done` once `delivery` is complete: at once when every room took the publish, or
    /// after waiting for room in the queues that were full (or for the broker's answer to a
    /// cluster publish). `wait` also stops this session reading further frames until then,
    /// which pushes back on the publisher through TCP and keeps its messages in order.
    fn wait_for(
        &mut self,
        delivery: Delivery,
        ctx: &mut WsContext,
        done: impl FnOnce(&mut Self, Answered) + 'static,
    ) {
        let mut delivery = delivery;
        if delivery.is_done() {
            return done(self, Ok(delivery.take_placed()));
        }
        ctx.wait(
            delivery
                .finish()
                .into_actor(self)
                .map(move |accepted, act, ctx| {
                    done(act, accepted);
                    act.resume(ctx);
                }),
        );
    }

    /// Whether this frame is a publish the cluster broker queues in order (see `pipeline`).
    fn is_pipelined(
        &self,
        decoded: &Result<ClientFrame<'_>, switchboard_protocol::DecodeError>,
    ) -> bool {
        matches!(decoded, Ok(ClientFrame::Publish(p)) if p.scope == Scope::Cluster)
            && self.node.broker.reach() == Scope::Cluster
    }

    fn answer_publish(&self, id: Option<u64>, accepted: Answered) {
        match accepted {
            Ok(Some(placed)) if id.is_some() => self.send(&ServerFrame::AckAt {
                id,
                at: placed.position(),
                recovered: None,
            }),
            Ok(_) => self.ack(id),
            Err(e) => self.send_error(id, ErrorCode::Unavailable, &e.to_string()),
        }
    }

    /// A cluster publish the broker has queued in order: the session goes on reading while
    /// Redis answers, so a client's publishes share round trips (pipelined) instead of taking
    /// one each. The answers go out in publish order; at `MAX_INFLIGHT` unanswered the session
    /// stops reading until the oldest is answered.
    ///
    /// A publish the broker could not queue yet (`in_order` false: its queue was full) holds
    /// the session until it and every earlier one are answered, so that nothing overtakes it.
    fn pipeline(
        &mut self,
        answer: Answer,
        accepted: Acceptance,
        in_order: bool,
        ctx: &mut WsContext,
    ) {
        self.inflight.0.push_back((answer, accepted));
        if !self.pumping {
            self.pumping = true;
            ctx.spawn(Answering { below: 1 });
        }
        if !in_order {
            ctx.wait(Answering { below: 1 }.map(|(), act, ctx| act.resume(ctx)));
        } else if self.inflight.0.len() >= MAX_INFLIGHT {
            // The answers are polled by this wait itself: actix runs nothing else meanwhile.
            ctx.wait(
                Answering {
                    below: MAX_INFLIGHT,
                }
                .map(|(), act, ctx| act.resume(ctx)),
            );
        }
    }

    /// Answers the cluster publishes Redis has answered, oldest first, up to the first that it
    /// has not.
    fn answer_inflight(&mut self, task: &mut std::task::Context<'_>) {
        while let Some((_, accepted)) = self.inflight.0.front_mut() {
            let std::task::Poll::Ready(accepted) = accepted.as_mut().poll(task) else {
                return;
            };
            match self.inflight.0.pop_front() {
                Some((Answer::Publish(id), _)) => self.answer_publish(id, accepted),
                Some((Answer::Relay, _)) => self.relay_answered(accepted),
                None => {}
            }
        }
        // Its allocation is not kept for a quiet session.
        if self.inflight.0.capacity() > 16 {
            self.inflight.0 = VecDeque::new();
        }
    }

    /// Runs `then` once `wait` is over, with the session's reading held until then (as in
    /// `wait_for`).
    fn wait_then(
        &mut self,
        wait: impl std::future::Future<Output = ()> + 'static,
        ctx: &mut WsContext,
        then: impl FnOnce(&mut Self) + 'static,
    ) {
        ctx.wait(wait.into_actor(self).map(move |(), act, ctx| {
            then(act);
            act.resume(ctx);
        }));
    }

    /// Handles the messages left over when a wait interrupted a batch, until another wait.
    fn resume(&mut self, ctx: &mut WsContext) {
        while !ctx.waiting() {
            let Some(item) = self.backlog.pop_front() else {
                // Its allocation is not kept: waits are rare.
                self.backlog = VecDeque::new();
                return;
            };
            self.on_inbound(item, ctx);
        }
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
        self.ack(id);
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
        let publication = Publication {
            room: &relay.key,
            payload: Payload::Relay { opcode, payload },
            // In cluster mode a relay room spans the nodes like any room.
            scope: Scope::Cluster,
            source: Source::Relay,
            except: Some(self.id),
        };
        // A passed-on frame is not a `message`, so no size check can refuse it: the reader
        // already held it to `max_message_bytes`. A relay message Redis could not take is
        // not answered (the relay protocol has no errors); it is counted and logged.
        // Pipelined like a client's cluster publishes: the member goes on sending while Redis
        // answers, instead of one round trip per message.
        if let Ok(delivery) = publish(&self.node, Some(&self.worker), publication) {
            match delivery.into_broker() {
                Ok((accepted, in_order)) => self.pipeline(Answer::Relay, accepted, in_order, ctx),
                Err(delivery) => {
                    self.wait_for(delivery, ctx, |act, accepted| act.relay_answered(accepted));
                }
            }
        }
    }

    fn relay_answered(&self, accepted: Answered) {
        if let Err(e) = accepted {
            metrics().dropped(Dropped::Unavailable, 1);
            tracing::debug!(session = %self.info.label, error = %e, "relay message not carried");
        }
    }

    /// A whole message from the client, in the session's mode.
    fn on_message(&mut self, opcode: u8, payload: &[u8], ctx: &mut WsContext) {
        match self.mode {
            Mode::Json if opcode == opcode::TEXT => match std::str::from_utf8(payload) {
                Ok(text) => self.on_text(text, ctx),
                // The reader checked text frames already; this cannot happen.
                Err(_) => self.close(ctx, close::INVALID_PAYLOAD, "invalid utf-8"),
            },
            Mode::Json => self.refuse_binary(),
            Mode::Relay => self.relay(opcode, payload, ctx),
            // Under the outbox's byte bound: a client that does not read its echoes is evicted.
            Mode::Echo => {
                let _ = self.out.borrow_mut().push_data(frame(opcode, payload));
            }
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

impl StreamHandler<Batch> for WsSession {
    fn handle(&mut self, batch: Batch, ctx: &mut WsContext) {
        if !self.backlog.is_empty() {
            self.backlog.extend(batch);
            return self.resume(ctx);
        }
        let mut items = batch.into_iter();
        while let Some(item) = items.next() {
            self.on_inbound(item, ctx);
            if ctx.waiting() {
                // A publish waits for a full room queue: the rest comes after it, in order.
                self.backlog.extend(items);
                return;
            }
        }
    }

    fn finished(&mut self, ctx: &mut WsContext) {
        // The client closed its side (or the socket failed).
        self.closing = true;
        ctx.stop();
    }
}

impl WsSession {
    /// Whether the client's `item` is within the session's rate (charging it). A message over
    /// it is answered `rate_limited`, in its place among the answers (on relay and echo
    /// endpoints, which have no errors, it is dropped); a session far over it is closed with
    /// 1008. Fragments are charged, not refused (a message is refused whole or not at all), and
    /// control frames pass.
    fn within_rate(&mut self, item: &Inbound, ctx: &mut WsContext) -> bool {
        let Some(bucket) = &mut self.bucket else {
            return true;
        };
        let (len, refusable) = match item {
            Ok(Message::Text(t)) => (t.len(), true),
            Ok(Message::Binary(b)) => (b.len(), true),
            Ok(Message::Continuation(Item::Last(b))) => (b.len(), false),
            Ok(Message::Continuation(
                Item::FirstText(b) | Item::FirstBinary(b) | Item::Continue(b),
            )) => {
                // Bytes now; the message counts at its last fragment.
                bucket.bytes -= b.len() as f64;
                return true;
            }
            _ => return true,
        };
        match bucket.charge(len) {
            Rate::Within => true,
            Rate::Over if !refusable => true,
            Rate::Over => {
                metrics().limits.rate_refused.inc();
                if let (Mode::Json, Ok(Message::Text(text))) = (self.mode, item) {
                    let id = match decode(text) {
                        Ok(frame) => frame.id(),
                        Err(e) => e.id,
                    };
                    let message = bucket.describe();
                    self.send_error(id, ErrorCode::RateLimited, &message);
                }
                false
            }
            Rate::FarOver => {
                metrics().limits.rate_closed.inc();
                tracing::debug!(session = %self.info.label, "closed: far over its rate limit");
                self.close(ctx, close::POLICY_VIOLATION, close::RATE_LIMIT_REASON);
                false
            }
        }
    }

    /// One client frame (or the violation that ends the session).
    fn on_inbound(&mut self, item: Inbound, ctx: &mut WsContext) {
        if self.closing {
            return;
        }
        // A message handed back to wait (see `on_text`) was charged the first time.
        if self.bucket.is_some()
            && !std::mem::take(&mut self.charged)
            && !self.within_rate(&item, ctx)
        {
            return;
        }
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
            Ok(Message::Text(text)) => self.on_message(opcode::TEXT, text.as_bytes(), ctx),
            Ok(Message::Binary(data)) => self.on_message(opcode::BINARY, &data, ctx),
            Ok(Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(Message::Ping(payload)) => {
                let _ = self.out.borrow_mut().pong(&payload);
            }
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
}

/// `WebsocketContext` requires this handler for its built-in payload stream, which the transport
/// leaves empty (it never yields): frames arrive through the `Batch` stream above.
impl StreamHandler<Result<ContextMessage, ProtocolError>> for WsSession {
    fn handle(&mut self, _: Result<ContextMessage, ProtocolError>, _: &mut WsContext) {}

    fn finished(&mut self, _: &mut WsContext) {}
}

impl Handler<Command> for WsSession {
    type Result = ();

    fn handle(&mut self, command: Command, ctx: &mut WsContext) {
        match command {
            Command::Kick => self.close(ctx, close::KICKED, close::KICKED_REASON),
            Command::GoAway => self.close(ctx, close::GOING_AWAY, close::GOING_AWAY_REASON),
            Command::Direct(frame) => {
                if self.closing {
                    return;
                }
                // Through the outbox bounds like any delivery: a full outbox evicts the session.
                match self.out.borrow_mut().deliver(&Rc::new(frame)) {
                    Ok(()) => metrics().delivered.inc(),
                    Err(Refused::Overflow) => metrics().dropped(Dropped::SlowConsumer, 1),
                    Err(Refused::Evicted) => metrics().dropped(Dropped::Evicted, 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
