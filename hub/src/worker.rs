//! [`WorkerRooms`]: the rooms of one worker thread.
//!
//! Each actix worker builds one at start-up. Sessions on the worker join and leave rooms through
//! it synchronously; it starts a [`Room`] actor when a room gets its first member on this worker
//! and forgets it (the actor then stops once its queue is drained) when the last one leaves,
//! telling the node's broadcaster both times.

use std::{
    cell::RefCell,
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
};

use actix::Addr;

use crate::{
    node::Node,
    room::{Members, Room},
    session::SharedOutbox,
    RoomName, SessionId,
};

/// The rooms with members on one worker.
#[derive(Debug)]
pub(crate) struct WorkerRooms {
    index: usize,
    node: Arc<Node>,
    rooms: RefCell<HashMap<RoomName, LocalRoom>>,
}

#[derive(Debug)]
struct LocalRoom {
    addr: Addr<Room>,
    members: Members,
}

impl WorkerRooms {
    pub(crate) fn new(index: usize, node: Arc<Node>) -> Self {
        WorkerRooms {
            index,
            node,
            rooms: RefCell::default(),
        }
    }

    /// The worker's index, shown to clients in `welcome`.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Adds a member to `room`. From the moment this returns, every publish that reaches the
    /// room's queue reaches the member.
    pub(crate) fn join(&self, room: &RoomName, id: SessionId, member: SharedOutbox) {
        let mut rooms = self.rooms.borrow_mut();
        let local = match rooms.entry(room.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let members = Members::default();
                let addr = Room::start_here(members.clone(), self.node.clone());
                self.node
                    .broadcaster
                    .register(room.clone(), self.index, addr.clone());
                e.insert(LocalRoom { addr, members })
            }
        };
        local.members.borrow_mut().insert(id, member);
    }

    /// Removes a member from `room`; forgets the room on this worker when it was the last.
    pub(crate) fn leave(&self, room: &str, id: SessionId) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(local) = rooms.get(room) else {
            return;
        };
        let now_empty = {
            let mut members = local.members.borrow_mut();
            members.remove(&id);
            members.is_empty()
        };
        if now_empty {
            rooms.remove(room);
            self.node.broadcaster.unregister(room, self.index);
        }
    }

    /// The room actor serving `room` on this worker, if it has members here.
    pub(crate) fn local_room(&self, room: &str) -> Option<Addr<Room>> {
        self.rooms
            .borrow()
            .get(room)
            .map(|local| local.addr.clone())
    }
}
