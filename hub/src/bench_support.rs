//! Fixtures for the criterion micro-benchmarks in `hub/benches/` (feature `bench-support`): the
//! real `Room` fan-out into real session outboxes, with the writers' draining done by the
//! benchmark. Not part of the crate's API, and not in a default build.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicUsize},
        Arc,
    },
};

use actix::Addr;
use bytes::Bytes;
use switchboard_admin::Mode;
use switchboard_protocol::{decode, ClientFrame};

use crate::{
    config::Config,
    messages::Fanout,
    metrics::Source,
    node::{Node, SessionInfo},
    outbox::{Outbox, SharedOutbox},
    publish::{publish, Payload, Publication},
    room::{Members, Room},
    worker::WorkerRooms,
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
                local: None,
            })
            .await;
    }

    /// Takes every queued frame out of the outboxes, as the writers would; returns how many.
    pub fn drain(&self) -> u64 {
        drain(&self.outboxes)
    }
}

/// One publish end to end inside the hub: a client's `publish` text decoded, handed to the one
/// publish path by a session on the worker, fanned out by the room, and queued in the outboxes
/// of `recipients` members of that room on the same worker.
#[derive(Debug)]
pub struct PublishFixture {
    node: Arc<Node>,
    worker: Rc<WorkerRooms>,
    outboxes: Vec<SharedOutbox>,
    text: String,
    publisher: String,
}

impl PublishFixture {
    /// Builds the worker and its members; call inside an actix `System`.
    pub fn new(recipients: usize, payload_bytes: usize) -> PublishFixture {
        let node = Node::new(Config::defaults());
        let worker = Rc::new(WorkerRooms::new(0, node.clone()));
        let mut outboxes = Vec::with_capacity(recipients);
        for i in 0..recipients {
            let id = SessionId(i as u64 + 1);
            let outbox = Outbox::new(usize::MAX, usize::MAX);
            let info = Arc::new(SessionInfo {
                label: format!("00000000-{}", i + 1),
                user: None,
                endpoint: Arc::from("default"),
                mode: Mode::Json,
                worker: 0,
                connected_at: 0,
                subscriptions: AtomicUsize::new(0),
                kicked: AtomicBool::new(false),
            });
            worker.open(id, outbox.clone(), info);
            worker.join(id, "chat:lobby", usize::MAX);
            outboxes.push(outbox);
        }
        let pad = "x".repeat(payload_bytes.saturating_sub(20));
        let text = format!(
            r#"{{"op":"publish","room":"chat:lobby","data":{{"seq":123456,"pad":"{pad}"}},"scope":"node","id":42}}"#
        );
        PublishFixture {
            node,
            worker,
            outboxes,
            text,
            publisher: "00000000-999".to_owned(),
        }
    }

    /// Decodes the publish and hands it to the publish path, as a session does; then waits
    /// until every member's outbox holds the message.
    pub async fn publish(&self) {
        let Ok(ClientFrame::Publish(p)) = decode(&self.text) else {
            panic!("the fixture's publish does not decode");
        };
        let publication = Publication {
            room: &p.room,
            payload: Payload::Message {
                data: p.data,
                from: &self.publisher,
                user: None,
            },
            scope: p.scope,
            source: Source::Client,
            except: None,
        };
        match publish(&self.node, Some(&self.worker), publication) {
            Ok(delivery) => {
                let _ = delivery.finish().await;
            }
            Err(e) => panic!("{e:?}"),
        }
        // Deliveries that go through the room actor land once it has run.
        while self
            .outboxes
            .last()
            .is_some_and(|o| o.borrow().len_frames() == 0)
        {
            tokio::task::yield_now().await;
        }
    }

    /// Takes every queued frame out of the outboxes, as the writers would; returns how many.
    pub fn drain(&self) -> u64 {
        drain(&self.outboxes)
    }
}

/// Takes every queued frame out of `outboxes`, as their writers would; returns how many.
fn drain(outboxes: &[SharedOutbox]) -> u64 {
    let mut n = 0;
    for outbox in outboxes {
        let mut outbox = outbox.borrow_mut();
        n += outbox.len_frames() as u64;
        outbox.clear();
    }
    n
}

/// A `message` frame of `payload` as the hub sends it, and the same frame compressed as it goes
/// to every member that negotiated permessage-deflate (`None`: deflate does not shorten it).
pub fn deflate_message(payload: &[u8]) -> (Bytes, Option<Bytes>) {
    let plain = crate::codec::text_frame(payload);
    let compressed = crate::deflate::deflate_frame(&plain);
    (plain, compressed)
}
