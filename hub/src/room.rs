//! The [`Room`] actor: one per room per worker, fanning a publish out to that worker's members.
//!
//! Membership lives in a table shared (same thread, `Rc`) between the room and its worker's
//! [`crate::worker::WorkerRooms`], which alone adds and removes members, so that subscribe and
//! unsubscribe take effect synchronously, before their ack, while publishes queue in the room's
//! bounded mailbox. The room only reads the table.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use actix::{fut::wrap_future, Actor, Addr, AsyncContext, Context, Handler};

use crate::{
    messages::Fanout,
    metrics::{metrics, Drop as Dropped},
    outbox::{Refused, SharedOutbox},
    SessionId,
};

/// The members of one room on one worker: each session's outbox, by session id.
pub(crate) type Members = Rc<RefCell<HashMap<SessionId, SharedOutbox>>>;

/// Fans publishes out to one worker's members of one room.
///
/// Its mailbox is bounded by `room_queue_capacity`; publishers use `try_send` and wait only when
/// it is full, so a burst slows publishers instead of growing a queue.
#[derive(Debug)]
pub(crate) struct Room {
    members: Members,
    /// Publishes fanned out since the room last yielded its thread.
    burst: usize,
}

/// Publishes a room fans out before it yields its worker thread.
///
/// actix handles every queued message of an actor in one go. Without a yield, a room with a full
/// queue would push up to `room_queue_capacity` frames into each member's queue before any member
/// on the same thread got a turn to write them out, and evict members that read perfectly well.
/// Yielding every few publishes lets members drain in step; the batch still lets a member write
/// several frames per syscall.
const FANOUT_BATCH: usize = 32;

impl Room {
    /// Starts a room actor on the current worker, with a mailbox of `capacity` publishes.
    pub(crate) fn start_here(members: Members, capacity: usize) -> Addr<Room> {
        Room::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Room { members, burst: 0 }
        })
    }

    /// Pushes `frame` into every member's outbox but `except`'s; returns the deliveries made,
    /// members found full (now evicted) and members already evicted.
    fn deliver(&self, frame: &Rc<bytes::Bytes>, except: Option<SessionId>) -> (u64, u64, u64) {
        let (mut delivered, mut overflowed, mut refused) = (0u64, 0u64, 0u64);
        let mut tally = |result: Result<(), Refused>| match result {
            Ok(()) => delivered += 1,
            Err(Refused::Overflow) => overflowed += 1,
            Err(Refused::Evicted) => refused += 1,
        };
        let members = self.members.borrow();
        // A push into the member's outbox, on this thread: no message and no allocation per
        // recipient. A full outbox evicts its session (its writer closes it with 4000, and the
        // session's end removes it from this table), so the other members never wait for it.
        match except {
            None => {
                for outbox in members.values() {
                    tally(outbox.borrow_mut().deliver(frame));
                }
            }
            // Only relay publishes name a member to skip: the common loop above carries no
            // per-recipient check.
            Some(skip) => {
                for (id, outbox) in members.iter() {
                    if *id != skip {
                        tally(outbox.borrow_mut().deliver(frame));
                    }
                }
            }
        }
        (delivered, overflowed, refused)
    }
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
        }: Fanout,
        ctx: &mut Context<Self>,
    ) {
        self.burst += 1;
        if self.burst >= FANOUT_BATCH {
            self.burst = 0;
            // `wait` stops this room's mailbox loop until the yield completes, after the other
            // tasks of the worker (its sessions among them) have run.
            ctx.wait(wrap_future(tokio::task::yield_now()));
        }
        // Crossed threads once as `Bytes`; on this thread every member shares one `Rc`.
        let (delivered, overflowed, refused) = self.deliver(&Rc::new(frame), except);
        metrics().delivered.inc_by(delivered);
        if overflowed > 0 {
            metrics().dropped(Dropped::SlowConsumer, overflowed);
        }
        if refused > 0 {
            metrics().dropped(Dropped::Evicted, refused);
        }
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
