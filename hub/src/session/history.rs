//! A session's requests about history and presence rooms: subscribe (with its position and,
//! with `recover`, the replay of what it missed), `history` and `presence`.
//!
//! A subscribe to a history room joins *held* (see `room::WorkerLog`): the room's live
//! messages wait in the member's own list while its position is read (from the node's log, or
//! from Redis in cluster mode) and what it missed is replayed. The replay goes through the
//! outbox like live traffic, a part at a time: while the outbox is half full the session waits
//! for its writer, so that a client recovering many messages is paced, not evicted. Then the
//! held messages after the position follow, and the member takes live messages directly. The
//! session reads nothing more meanwhile, so its answers keep request order.

use std::{collections::VecDeque, rc::Rc, sync::Arc, time::Duration};

use actix::{ActorFutureExt, AsyncContext, WrapFuture};
use switchboard_protocol::{ErrorCode, Member, Recover, ServerFrame};

use super::{WsContext, WsSession};
use crate::{
    cluster::Stored,
    codec::Frame,
    config::RoomOptions,
    history::{Placed, Since},
    metrics::metrics,
    presence::Listed,
};

/// The most messages one `history` request returns.
pub(crate) const HISTORY_LIMIT_MAX: usize = 1000;

/// How long a replay waits for the writer when the outbox is half full.
const REPLAY_PAUSE: Duration = Duration::from_millis(5);

impl WsSession {
    /// A subscribe to a history room whose member was just added (held).
    pub(super) fn subscribe_history(
        &mut self,
        room: &str,
        id: Option<u64>,
        recover: Option<Recover<'_>>,
        options: Arc<RoomOptions>,
        ctx: &mut WsContext,
    ) {
        let Some(shared) = self.node.cluster.clone() else {
            let log = self.node.history.log(room, &options);
            let (frames, at, recovered) = match recover {
                None => (VecDeque::new(), log.position(), None),
                Some(r) => match log.since(&r.epoch, r.offset, options.history_size) {
                    Since::Recovered(entries, at) => {
                        let frames = entries.into_iter().map(|e| Rc::new(e.frame)).collect();
                        (frames, at, Some(true))
                    }
                    Since::Lost(at) => (VecDeque::new(), at, Some(false)),
                },
            };
            return self.settle_subscribe(room.to_owned(), id, Some(at), recovered, frames, ctx);
        };
        // Cluster mode: the position (and what was missed) is in Redis, read once the node's
        // subscription to the room is in place, so that nothing published after the read is
        // missed.
        let in_place = self.node.broker.in_place(room);
        let from = recover.as_ref().map(|r| r.offset + 1);
        let count = if recover.is_some() {
            options.history_size + 1
        } else {
            1
        };
        let owned_room = room.to_owned();
        let recover = recover.map(|r| (r.epoch.into_owned(), r.offset));
        let read = async move {
            if let Some(wait) = in_place {
                wait.await;
            }
            shared.read(&owned_room, &options, from, count).await
        };
        let room = room.to_owned();
        ctx.wait(read.into_actor(self).map(move |read, act, ctx| {
            act.subscribed_in_cluster(room, id, recover, read, ctx);
            act.resume(ctx);
        }));
    }

    /// The end of a cluster subscribe to a history room, with what Redis answered.
    fn subscribed_in_cluster(
        &mut self,
        room: String,
        id: Option<u64>,
        recover: Option<(String, u64)>,
        read: Result<Arc<crate::cluster::Read>, crate::delivery::Unavailable>,
        ctx: &mut WsContext,
    ) {
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(room, error = %e, "a history room's position is out of reach");
                let recovered = recover.map(|_| false);
                return self.settle_subscribe(room, id, None, recovered, VecDeque::new(), ctx);
            }
        };
        let Some((epoch, offset)) = recover else {
            let at = read.at.clone();
            return self.settle_subscribe(room, id, Some(at), None, VecDeque::new(), ctx);
        };
        let frames =
            replay_frames(&read.at, offset, &read.messages).filter(|_| *epoch == *read.at.epoch);
        let recovered = frames.is_some();
        let frames = frames.unwrap_or_default();
        let at = read.at.clone();
        self.settle_subscribe(room, id, Some(at), Some(recovered), frames, ctx);
    }

    /// Acks a subscribe to a history room at `at` (none: its position is out of reach), then
    /// replays `frames`, then lets the member's held messages after `at` follow.
    fn settle_subscribe(
        &mut self,
        room: String,
        id: Option<u64>,
        at: Option<Placed>,
        recovered: Option<bool>,
        frames: VecDeque<Rc<Frame>>,
        ctx: &mut WsContext,
    ) {
        match recovered {
            Some(true) => metrics().history.recovered.inc(),
            Some(false) => metrics().history.not_recovered.inc(),
            None => {}
        }
        match &at {
            Some(at) if id.is_some() || recovered.is_some() => self.send(&ServerFrame::AckAt {
                id,
                at: at.position(),
                recovered,
            }),
            None if recovered.is_some() => self.send(&ServerFrame::AckUnrecovered { id }),
            _ => self.ack(id),
        }
        self.replay(room, frames, at, ctx);
    }

    /// Queues `frames` as the outbox makes room, then settles the member at `floor`.
    fn replay(
        &mut self,
        room: String,
        mut frames: VecDeque<Rc<Frame>>,
        floor: Option<Placed>,
        ctx: &mut WsContext,
    ) {
        let mut delivered = 0;
        loop {
            let mut out = self.out.borrow_mut();
            if out.is_evicted() {
                return;
            }
            if frames.is_empty() {
                break;
            }
            if !out.has_room_for_replay() {
                drop(out);
                metrics().delivered.inc_by(delivered);
                ctx.wait(tokio::time::sleep(REPLAY_PAUSE).into_actor(self).map(
                    move |(), act, ctx| {
                        act.replay(room, frames, floor, ctx);
                        act.resume(ctx);
                    },
                ));
                return;
            }
            if let Some(frame) = frames.pop_front() {
                if out.deliver(&frame).is_ok() {
                    delivered += 1;
                }
            }
        }
        metrics().delivered.inc_by(delivered);
        let held = self.worker.settle(self.id, &room, floor.as_ref());
        let mut out = self.out.borrow_mut();
        for frame in held {
            if out.deliver(&frame).is_err() {
                break;
            }
        }
    }

    /// `history`: the room's last messages, oldest first.
    pub(super) fn history(
        &mut self,
        room: &str,
        limit: Option<u64>,
        id: Option<u64>,
        ctx: &mut WsContext,
    ) {
        if self.claims.as_ref().is_some_and(|c| !c.may_subscribe(room)) {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "the token does not grant this room",
            );
        }
        let Some(options) = self.node.history_options(room).cloned() else {
            return self.send_error(id, ErrorCode::Unsupported, "this room keeps no history");
        };
        let cap = HISTORY_LIMIT_MAX.min(options.history_size);
        let limit = limit.map_or(cap, |l| usize::try_from(l).unwrap_or(usize::MAX).min(cap));
        let Some(shared) = self.node.cluster.clone() else {
            let log = self.node.history.log(room, &options);
            let (entries, at) = log.last(limit);
            let texts: Vec<&str> = entries.iter().map(|e| e.json()).collect();
            return self.send_history(id, room, &at, &texts);
        };
        let owned = room.to_owned();
        let read = async move { shared.read(&owned, &options, None, limit).await };
        let room = room.to_owned();
        ctx.wait(read.into_actor(self).map(move |read, act, ctx| {
            match read {
                Ok(read) => {
                    let texts: Vec<&str> = read.messages.iter().map(|m| m.json()).collect();
                    act.send_history(id, &room, &read.at, &texts);
                }
                Err(e) => act.send_error(id, ErrorCode::Unavailable, &e.to_string()),
            }
            act.resume(ctx);
        }));
    }

    /// The `history` answer, with as many of the newest messages as fit in half the outbox.
    fn send_history(&self, id: Option<u64>, room: &str, at: &Placed, texts: &[&str]) {
        let budget = self.node.config.outbox_max_bytes / 2;
        let mut used = 256;
        let mut first = texts.len();
        while first > 0 && used + texts[first - 1].len() < budget {
            first -= 1;
            used += texts[first].len() + 1;
        }
        self.send(&ServerFrame::History {
            id,
            room,
            at: at.position(),
            messages: &texts[first..],
        });
    }

    /// `presence`: who is in the room, on every node.
    pub(super) fn presence(&mut self, room: &str, id: Option<u64>, ctx: &mut WsContext) {
        if self.claims.as_ref().is_some_and(|c| !c.may_subscribe(room)) {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "the token does not grant this room",
            );
        }
        if !self.node.tracking_options(room).is_some_and(|o| o.presence) {
            return self.send_error(id, ErrorCode::Unsupported, "this room has no presence");
        }
        match self.node.presence.list(room) {
            Listed::Now(rows) => self.send_presence(id, room, &rows),
            Listed::Later(later) => {
                let room = room.to_owned();
                ctx.wait(later.into_actor(self).map(move |rows, act, ctx| {
                    match rows {
                        Ok(rows) => act.send_presence(id, &room, &rows),
                        Err(e) => act.send_error(id, ErrorCode::Unavailable, &e.to_string()),
                    }
                    act.resume(ctx);
                }));
            }
        }
    }

    fn send_presence(&self, id: Option<u64>, room: &str, rows: &[crate::presence::Row]) {
        let members: Vec<Member<'_>> = rows
            .iter()
            .map(|r| Member {
                session: &r.session,
                user: r.user.as_deref(),
                node: &r.node,
            })
            .collect();
        self.send(&ServerFrame::Presence {
            id,
            room,
            members: &members,
        });
    }
}

/// The frames replaying the messages after `offset` up to `at` (oldest first), if `messages`
/// hold every one of them: `None` when some are gone.
fn replay_frames(at: &Placed, offset: u64, messages: &[Stored]) -> Option<VecDeque<Rc<Frame>>> {
    if offset > at.offset {
        return None;
    }
    let mut frames = VecDeque::with_capacity(messages.len());
    let mut expected = offset + 1;
    for message in messages {
        if message.offset > at.offset {
            break;
        }
        if message.offset != expected {
            return None;
        }
        frames.push_back(Rc::new(message.frame.clone()));
        expected += 1;
    }
    (expected == at.offset + 1).then_some(frames)
}
