//! The [`Room`] actor: one per room per worker, fanning a publish out to that worker's members.
//!
//! Membership lives in a table shared (same thread, `Rc`) between the room and its worker's
//! [`crate::worker::WorkerRooms`], so that subscribe and unsubscribe take effect synchronously,
//! before their ack, while publishes queue in the room's bounded mailbox.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use actix::{fut::wrap_future, Actor, Addr, AsyncContext, Context, Handler};

use crate::{
    broadcaster::MemberCount,
    messages::Fanout,
    metrics::{metrics, Drop as Dropped},
    node::Node,
    session::SharedOutbox,
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
    /// The member count the admin API reads; kept in step when the room drops evicted members.
    count: MemberCount,
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
    /// Starts a room actor on the current worker.
    pub(crate) fn start_here(members: Members, count: MemberCount, node: &Node) -> Addr<Room> {
        let capacity = node.config.room_queue_capacity;
        Room::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Room {
                members,
                count,
                burst: 0,
            }
        })
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
        let frame = Rc::new(frame);
        let mut delivered = 0u64;
        let mut evicted = 0u64;
        let mut members = self.members.borrow_mut();
        // The sender (a relay member) sits out this delivery: taken out and put back, so the
        // loop below carries no per-recipient check.
        let sender = except.and_then(|id| members.remove(&id).map(|outbox| (id, outbox)));
        members.retain(|_, outbox| {
            // A push into the member's outbox, on this thread: no message and no allocation
            // per recipient. A full outbox evicts the member (its writer closes it with 4000),
            // so the other members are never delayed by it.
            match outbox.borrow_mut().deliver(&frame) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(_) => {
                    evicted += 1;
                    false
                }
            }
        });
        if let Some((id, outbox)) = sender {
            members.insert(id, outbox);
        }
        drop(members);
        metrics().delivered.inc_by(delivered);
        if evicted > 0 {
            metrics().dropped(Dropped::SlowConsumer, evicted);
            self.count
                .fetch_sub(evicted as usize, std::sync::atomic::Ordering::Relaxed);
            metrics().subscriptions.sub(evicted as i64);
        }
        // The last room to finish with this publish records its fan-out time.
        drop(timer);
    }
}
