//! The [`Room`] actor: one per room per worker, fanning a publish out to that worker's members.
//!
//! Membership lives in a table shared (same thread, `Rc`) between the room and its worker's
//! [`crate::worker::WorkerRooms`], so that subscribe and unsubscribe take effect synchronously,
//! before their ack, while publishes queue in the room's bounded mailbox.

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use actix::{fut::wrap_future, prelude::SendError, Actor, Addr, AsyncContext, Context, Handler};

use crate::{
    messages::{Deliver, Evict, Fanout},
    node::Node,
    session::{MemberFlags, WsSession},
    stats::Stats,
    SessionId,
};

/// A member of a room on one worker.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) addr: Addr<WsSession>,
    pub(crate) flags: Rc<MemberFlags>,
}

/// The members of one room on one worker.
pub(crate) type Members = Rc<RefCell<HashMap<SessionId, Member>>>;

/// Fans publishes out to one worker's members of one room.
///
/// Its mailbox is bounded by `room_queue_capacity`; publishers use `try_send` and wait only when
/// it is full, so a burst slows publishers instead of growing a queue.
#[derive(Debug)]
pub(crate) struct Room {
    members: Members,
    node: Arc<Node>,
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
    pub(crate) fn start_here(members: Members, node: Arc<Node>) -> Addr<Room> {
        let capacity = node.config.room_queue_capacity;
        Room::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Room {
                members,
                node,
                burst: 0,
            }
        })
    }
}

impl Actor for Room {
    type Context = Context<Self>;
}

impl Handler<Fanout> for Room {
    type Result = ();

    fn handle(&mut self, Fanout(frame): Fanout, ctx: &mut Context<Self>) {
        self.burst += 1;
        if self.burst >= FANOUT_BATCH {
            self.burst = 0;
            // `wait` stops this room's mailbox loop until the yield completes, after the other
            // tasks of the worker (its sessions among them) have run.
            ctx.wait(wrap_future(tokio::task::yield_now()));
        }
        let mut delivered = 0u64;
        let mut members = self.members.borrow_mut();
        members.retain(|_, member| {
            // `try_send`, never `do_send`: a session's queue is bounded by its mailbox capacity,
            // and a full queue means the session cannot keep up. It is evicted here, so the
            // other members are never delayed by it.
            match member.addr.try_send(Deliver(frame.clone())) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(SendError::Full(_)) => {
                    if !member.flags.evicted.replace(true) {
                        Stats::add(&self.node.stats.slow_consumers, 1);
                        // Bounded: the flag above lets this through once per session.
                        member.addr.do_send(Evict);
                    }
                    false
                }
                Err(SendError::Closed(_)) => false,
            }
        });
        Stats::add(&self.node.stats.delivered, delivered);
    }
}
