//! The [`Room`] actor: one per room per worker, fanning a publish out to that worker's members.
//!
//! Membership lives in a table shared (same thread, `Rc`) between the room and its worker's
//! [`crate::worker::WorkerRooms`], so that subscribe and unsubscribe take effect synchronously,
//! before their ack, while publishes queue in the room's bounded mailbox.

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use actix::{prelude::SendError, Actor, Addr, Context, Handler};

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
}

impl Room {
    /// Starts a room actor on the current worker.
    pub(crate) fn start_here(members: Members, node: Arc<Node>) -> Addr<Room> {
        let capacity = node.config.room_queue_capacity;
        Room::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Room { members, node }
        })
    }
}

impl Actor for Room {
    type Context = Context<Self>;
}

impl Handler<Fanout> for Room {
    type Result = ();

    fn handle(&mut self, Fanout(frame): Fanout, _: &mut Context<Self>) {
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
