//! The [`Room`] actor: one per room per worker, fanning a publish out to that worker's members.
//!
//! Membership lives in a table shared (same thread, `Rc`) between the room and its worker's
//! [`crate::worker::WorkerRooms`], which alone adds and removes members, so that subscribe and
//! unsubscribe take effect synchronously, before their ack, while publishes queue in the room's
//! bounded mailbox. The room only reads the table.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
};

use actix::{fut::wrap_future, Actor, Addr, AsyncContext, Context, Handler};

use crate::{
    messages::Fanout,
    metrics::{metrics, Drop as Dropped},
    outbox::{Outgoing, Refused, SharedOutbox},
    SessionId,
};

/// The members of one room on one worker: each session's outbox, by session id.
pub(crate) type Members = Rc<RefCell<HashMap<SessionId, SharedOutbox>>>;

/// How publishers on a room's own worker reach its members, kept by that worker.
///
/// Direct: a publisher on the worker delivers into the members' outboxes itself, with no actor
/// message. But a publisher then delivers as many publishes as it handles in one turn, and
/// several publishers may take their turns before the members' writers get theirs. So when a
/// direct delivery leaves a member's outbox at a quarter of its capacity or more, the room is
/// *queued*: publishers on the worker hand their publishes to the room actor like everyone else
/// (it fans out at most 32 of them per turn, see `FANOUT_BATCH`, and a full queue makes
/// publishers wait), until
/// every publish queued that way is gone, which keeps each publisher's order.
///
/// "Gone" is counted by a guard ([`Queued`]) that travels in the `Fanout`: handled, or dropped
/// unhandled (its publisher ended while waiting for room in the queue), it counts down, so the
/// room never stays queued for a publish that will not arrive. Atomics only because a `Fanout`
/// must be `Send`; every access is on the worker's own thread.
#[derive(Debug, Default)]
pub(crate) struct Mode {
    /// A direct delivery found a member's outbox filling up.
    pressured: AtomicBool,
    /// Publishes from this worker on their way through the room actor's queue.
    queued: AtomicUsize,
}

impl Mode {
    /// Whether a publisher on this worker may deliver directly now.
    pub(crate) fn direct(&self) -> bool {
        !self.pressured.load(Ordering::Relaxed) && self.queued.load(Ordering::Relaxed) == 0
    }

    /// A publish from this worker goes to the room actor's queue; the guard goes with it.
    pub(crate) fn queue_one(self: &Arc<Self>) -> Queued {
        self.queued.fetch_add(1, Ordering::Relaxed);
        Queued(self.clone())
    }

    /// A direct delivery left a member's outbox this full.
    pub(crate) fn note_fullest(&self, frames: usize, soft: usize) {
        if frames >= soft {
            self.pressured.store(true, Ordering::Relaxed);
        }
    }
}

/// One publish of the room's own worker in the room actor's queue (see [`Mode`]).
#[derive(Debug)]
pub(crate) struct Queued(Arc<Mode>);

impl std::ops::Drop for Queued {
    fn drop(&mut self) {
        if self.0.queued.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.pressured.store(false, Ordering::Relaxed);
        }
    }
}

/// Fans publishes out to one worker's members of one room.
///
/// Its mailbox is bounded by `room_queue_capacity`; publishers use `try_send` and wait only when
/// it is full, so a burst slows publishers instead of growing a queue.
#[derive(Debug)]
pub(crate) struct Room {
    members: Members,
    /// Publishes fanned out since the room last yielded its thread.
    burst: usize,
    /// A history room's worker side: what the room delivers on `Drain`.
    log: Option<Rc<dyn Drains>>,
}

/// Publishes a room fans out before it yields its worker thread.
///
/// actix handles every queued message of an actor in one go. Without a yield, a room with a full
/// queue would push up to `room_queue_capacity` frames into each member's queue before any member
/// on the same thread got a turn to write them out, and evict members that read perfectly well.
/// Yielding every few publishes lets members drain in step; the batch still lets a member write
/// several frames per syscall.
const FANOUT_BATCH: usize = 128;

/// What a publish of the room's own worker (queued mode, see [`Mode`]) counts against
/// `FANOUT_BATCH`: those come from publishers that can outpace the members' writers on this very
/// thread, so the room yields after 32 of them; publishes from other threads (other workers, the
/// cluster bridge) arrive at their source's pace, and larger batches let each member's write
/// carry more (a cluster node: 158–165 ns per delivery at 32, 133–142 at 128).
const OWN_WORKER_WEIGHT: usize = 4;

impl Room {
    /// Starts a room actor on the current worker, with a mailbox of `capacity` publishes.
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn start_here(members: Members, capacity: usize) -> Addr<Room> {
        Room::start_with(members, capacity, None)
    }

    /// [`Room::start_here`] for a history room, which delivers from its log.
    pub(crate) fn start_with(
        members: Members,
        capacity: usize,
        log: Option<Rc<dyn Drains>>,
    ) -> Addr<Room> {
        Room::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Room {
                members,
                burst: 0,
                log,
            }
        })
    }
}

/// A history room's side on one worker (`history::WorkerLog`), which its room actor drains on
/// [`Drain`].
pub(crate) trait Drains: std::fmt::Debug {
    /// Delivers what this worker has not delivered yet, up to one batch; true if more wait.
    fn drain_batch(&self) -> bool;
}

/// To a history [`Room`]: its log has messages this worker has not delivered yet. At most one
/// is on its way to each room (see `history.rs`).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

impl Handler<Drain> for Room {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) {
        let Some(log) = &self.log else { return };
        if log.drain_batch() {
            // More than one batch: the rest on the room's next turn, after the worker's other
            // tasks (its members' writers) have had theirs.
            ctx.wait(wrap_future(tokio::task::yield_now()));
            ctx.notify(Drain);
        }
    }
}

/// What one fan-out did: deliveries made, members found full (now evicted), members already
/// evicted.
#[derive(Debug, Default, Clone, Copy)]
#[must_use]
pub(crate) struct Tally {
    pub(crate) delivered: u64,
    pub(crate) overflowed: u64,
    pub(crate) refused: u64,
    /// Frames in the fullest member outbox after the delivery.
    pub(crate) fullest: usize,
}

impl Tally {
    /// Counts the fan-out in the metrics: once per fan-out, never per recipient.
    pub(crate) fn record(self) {
        metrics().delivered.inc_by(self.delivered);
        if self.overflowed > 0 {
            metrics().dropped(Dropped::SlowConsumer, self.overflowed);
        }
        if self.refused > 0 {
            metrics().dropped(Dropped::Evicted, self.refused);
        }
    }
}

/// Pushes `frame` into the outbox of every member in `members` but `except`: the one fan-out
/// loop, for a room actor and for a publisher delivering on its own worker.
///
/// A push into a member's outbox, on this thread: no message and no allocation per recipient.
/// A full outbox evicts its session (its writer closes it with 4000, and the session's end
/// removes it from the table), so the other members never wait for it.
pub(crate) fn fan_out(
    members: &HashMap<SessionId, SharedOutbox>,
    frame: &Outgoing,
    except: Option<SessionId>,
) -> Tally {
    let mut tally = Tally::default();
    let mut deliver = |outbox: &SharedOutbox| {
        let mut outbox = outbox.borrow_mut();
        match outbox.deliver_shared(frame) {
            Ok(()) => tally.delivered += 1,
            Err(Refused::Overflow) => tally.overflowed += 1,
            Err(Refused::Evicted) => tally.refused += 1,
        }
        tally.fullest = tally.fullest.max(outbox.len_frames());
    };
    match except {
        None => {
            for outbox in members.values() {
                deliver(outbox);
            }
        }
        // Only relay publishes name a member to skip: the common loop above carries no
        // per-recipient check.
        Some(skip) => {
            for (id, outbox) in members {
                if *id != skip {
                    deliver(outbox);
                }
            }
        }
    }
    tally
}

/// To a [`Room`]: the ids of its members on its worker (for the admin API).
#[derive(Debug, actix::Message)]
#[rtype(result = "Vec<SessionId>")]
pub(crate) struct ListMembers;

impl Handler<ListMembers> for Room {
    type Result = actix::MessageResult<ListMembers>;

    fn handle(&mut self, _: ListMembers, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.members.borrow().keys().copied().collect())
    }
}

impl Actor for Room {
    type Context = Context<Self>;
}

impl Handler<Fanout> for Room {
    type Result = ();

    fn handle(
        &mut self,
        Fanout {
            frame,
            except,
            timer,
            local,
        }: Fanout,
        ctx: &mut Context<Self>,
    ) {
        // A publish of this worker's, handled: counted down when the guard goes, below.
        self.burst += if local.is_some() {
            OWN_WORKER_WEIGHT
        } else {
            1
        };
        let _queued = local;
        if self.burst >= FANOUT_BATCH {
            self.burst = 0;
            // `wait` stops this room's mailbox loop until the yield completes, after the other
            // tasks of the worker (its sessions among them) have run.
            ctx.wait(wrap_future(tokio::task::yield_now()));
        }
        // Crossed threads once as `Bytes`; on this thread every member shares one `Rc` (and
        // one compressed `Rc`, if some negotiated compression).
        fan_out(&self.members.borrow(), &Outgoing::new(frame), except).record();
        // The last room to finish with this publish records its fan-out time.
        drop(timer);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;
    use crate::outbox::Outbox;

    fn room_with(outboxes: &[SharedOutbox], capacity: usize) -> (Members, Addr<Room>) {
        let members = Members::default();
        for (i, outbox) in outboxes.iter().enumerate() {
            members
                .borrow_mut()
                .insert(SessionId(i as u64), outbox.clone());
        }
        let addr = Room::start_here(members.clone(), capacity);
        (members, addr)
    }

    fn fanout(text: &'static str, except: Option<SessionId>) -> Fanout {
        Fanout {
            frame: Bytes::from_static(text.as_bytes()),
            except,
            timer: None,
            local: None,
        }
    }

    #[actix_rt::test]
    async fn every_member_gets_each_publish_in_order_but_the_skipped_one() {
        let outboxes: Vec<_> = (0..3).map(|_| Outbox::new(16, 1 << 20)).collect();
        let (_members, room) = room_with(&outboxes, 8);
        room.send(fanout("one", None)).await.unwrap();
        room.send(fanout("two", Some(SessionId(1)))).await.unwrap();
        let frames: Vec<usize> = outboxes.iter().map(|o| o.borrow().len_frames()).collect();
        assert_eq!(frames, [2, 1, 2]);
        assert_eq!(outboxes[0].borrow().len_bytes(), "onetwo".len());
    }

    #[actix_rt::test]
    async fn a_full_member_is_evicted_without_holding_up_the_others() {
        let slow = Outbox::new(1, 1 << 20);
        let fast = Outbox::new(16, 1 << 20);
        let (members, room) = room_with(&[slow.clone(), fast.clone()], 8);
        for _ in 0..4 {
            room.send(fanout("m", None)).await.unwrap();
        }
        assert!(slow.borrow().is_evicted());
        assert_eq!(slow.borrow().len_frames(), 1);
        assert_eq!(fast.borrow().len_frames(), 4);
        // The room never changes membership: its worker removes the member when the session
        // ends, in one place for every way a session ends.
        assert_eq!(members.borrow().len(), 2);
    }

    #[test]
    fn a_room_is_direct_again_once_every_queued_publish_is_gone() {
        let mode = Arc::new(Mode::default());
        assert!(mode.direct());
        mode.note_fullest(10, 64);
        assert!(mode.direct());
        mode.note_fullest(64, 64);
        assert!(!mode.direct());
        let handled = mode.queue_one();
        let abandoned = mode.queue_one();
        drop(handled);
        assert!(!mode.direct(), "one queued publish is still on its way");
        // A publish dropped unhandled (its publisher ended while waiting) counts too.
        drop(abandoned);
        assert!(mode.direct());
    }

    #[actix_rt::test]
    async fn a_publisher_waits_for_space_in_a_full_room_queue() {
        let outbox = Outbox::new(usize::MAX, usize::MAX);
        let (_members, room) = room_with(std::slice::from_ref(&outbox), 2);
        // The room does not run until this task yields: the queue fills up.
        room.try_send(fanout("a", None)).unwrap();
        room.try_send(fanout("b", None)).unwrap();
        assert!(matches!(
            room.try_send(fanout("c", None)),
            Err(actix::prelude::SendError::Full(_))
        ));
        // Each clone of an address is a sender of its own that may queue once past the bound:
        // publishers share the one address the worker and the broadcaster keep.
        assert!(room.clone().try_send(fanout("c", None)).is_ok());
        // `send` waits until the room has taken the message.
        room.send(fanout("d", None)).await.unwrap();
        assert_eq!(outbox.borrow().len_frames(), 4);
    }
}
