//! Fixtures for the criterion micro-benchmarks in `hub/benches/` (feature `bench-support`): the
//! real `Room` fan-out into real session outboxes, with the writers' draining done by the
//! benchmark. Not part of the crate's API, and not in a default build.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use actix::Addr;
use bytes::Bytes;

use crate::{
    config::Config,
    messages::Fanout,
    outbox::{Outbox, SharedOutbox},
    room::{Members, Room},
    SessionId,
};

/// One room on the current thread with `members` session outboxes.
#[derive(Debug)]
pub struct RoomFixture {
    room: Addr<Room>,
    outboxes: Vec<SharedOutbox>,
    frame: Bytes,
}

impl RoomFixture {
    /// Builds the room; call inside an actix `System`.
    pub fn new(members: usize, payload_bytes: usize) -> RoomFixture {
        let capacity = Config::defaults().room_queue_capacity;
        let table: Members = Rc::new(RefCell::new(HashMap::new()));
        let mut outboxes = Vec::with_capacity(members);
        for i in 0..members {
            let outbox = Outbox::new(usize::MAX, usize::MAX);
            table
                .borrow_mut()
                .insert(SessionId(i as u64), outbox.clone());
            outboxes.push(outbox);
        }
        let room = Room::start_here(table, capacity);
        RoomFixture {
            room,
            outboxes,
            frame: Bytes::from(vec![b'x'; payload_bytes]),
        }
    }

    /// Publishes one frame to the room and waits until the room has handled it.
    pub async fn publish(&self) {
        let _ = self
            .room
            .send(Fanout {
                frame: self.frame.clone(),
                except: None,
                timer: None,
            })
            .await;
    }

    /// Takes every queued frame out of the outboxes, as the writers would; returns how many.
    pub fn drain(&self) -> u64 {
        let mut n = 0;
        for outbox in &self.outboxes {
            let mut outbox = outbox.borrow_mut();
            n += outbox.len_frames() as u64;
            outbox.clear();
        }
        n
    }
}
