//! [`Outbox`]: the frames waiting for one session's socket.
//!
//! Rooms deliver into it directly (same worker thread, no message per recipient): a delivery is
//! a reference-count increment on the shared frame and a push. The session adds its own replies.
//! The connection's writer drains it with vectored writes.
//!
//! It is bounded twice: by `outbox_capacity` frames and by `outbox_max_bytes` bytes waiting for
//! the socket. A delivery that would go over either marks the session evicted and wakes its
//! writer, which closes it with 4000 "slow consumer"; the room drops the member. Nothing a peer
//! does can make it grow past those bounds by more than the one frame being written.

use std::{
    cell::RefCell,
    collections::VecDeque,
    rc::Rc,
    task::{Context, Waker},
    time::Instant,
};

use bytes::Bytes;

use super::transport::{close_frame, frame, text_frame};
use crate::metrics::Disconnect;

/// A session's handle on its outbox, shared with its rooms and its writer on one thread.
pub(crate) type SharedOutbox = Rc<RefCell<Outbox>>;

/// The frames waiting for one session's socket, in order.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Frames are `Rc`s: a room hands the same frame to every member on its thread, and an
    /// `Rc` clone is a plain increment where a `Bytes` clone is an atomic one.
    pub(super) frames: VecDeque<Rc<Bytes>>,
    /// Bytes of the front frame already written.
    pub(super) front_written: usize,
    /// Bytes queued and not yet written.
    pub(super) bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    /// Set once a delivery found the outbox full; the writer then evicts the session.
    pub(super) evicted: bool,
    /// Set by the worker's heartbeat when the client has been silent too long; the writer then
    /// closes the session with 4003.
    pub(super) timed_out: bool,
    /// When the session last heard from its client (any frame, pongs included).
    pub(crate) last_heard: Instant,
    /// How the session ended, once it has: set by the first close frame queued (or by the
    /// session when the client closed first), read when the connection ends.
    pub(crate) ended: Option<Disconnect>,
    /// The writer's task, woken when a delivery arrives while it is idle.
    waker: Option<Waker>,
}

/// A delivery was refused: the session is (now) evicted.
#[derive(Debug)]
pub(crate) struct Overflow;

impl Outbox {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> SharedOutbox {
        Rc::new(RefCell::new(Outbox {
            frames: VecDeque::new(),
            front_written: 0,
            bytes: 0,
            max_frames,
            max_bytes,
            evicted: false,
            timed_out: false,
            last_heard: Instant::now(),
            ended: None,
            waker: None,
        }))
    }

    /// Delivers a shared frame from a room. Refused once the session is evicted or when the
    /// frame would take the outbox over its bounds (which evicts it).
    pub(crate) fn deliver(&mut self, frame: &Rc<Bytes>) -> Result<(), Overflow> {
        if self.evicted {
            return Err(Overflow);
        }
        if self.frames.len() >= self.max_frames || self.bytes + frame.len() > self.max_bytes {
            self.evicted = true;
            self.wake();
            return Err(Overflow);
        }
        let was_idle = self.frames.is_empty();
        self.bytes += frame.len();
        self.frames.push_back(frame.clone());
        if was_idle {
            // The writer sleeps while the outbox is empty; one wake-up per batch of frames.
            self.wake();
        }
        Ok(())
    }

    /// Queues one of the session's own frames (replies are never refused: they are bounded by
    /// the client's own requests, which the session reads one at a time).
    pub(crate) fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(Rc::new(frame));
    }

    /// Queues a text frame.
    pub(crate) fn text(&mut self, text: &str) {
        self.push(text_frame(text.as_bytes()));
    }

    /// Queues a ping or pong (`opcode` 0x9 or 0xA) with up to 125 bytes of payload.
    pub(crate) fn control(&mut self, opcode: u8, payload: &[u8]) {
        let payload = &payload[..payload.len().min(125)];
        self.push(frame(opcode, payload));
    }

    /// Queues a server ping, waking the writer if it is idle (the heartbeat runs outside it).
    pub(crate) fn ping(&mut self) {
        let was_idle = self.frames.is_empty();
        self.control(0x9, b"");
        if was_idle {
            self.wake();
        }
    }

    /// Marks the session silent for too long and wakes its writer, which closes it. True the
    /// first time.
    pub(crate) fn time_out(&mut self) -> bool {
        if self.timed_out {
            return false;
        }
        self.timed_out = true;
        self.wake();
        true
    }

    /// Queues a close frame.
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.ended.get_or_insert(Disconnect::Code(code));
        self.push(close_frame(code, reason));
    }

    /// Bytes queued.
    pub(crate) fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Frames queued.
    pub(crate) fn len_frames(&self) -> usize {
        self.frames.len()
    }

    /// Drops every queued frame (micro-benchmarks stand in for the writer with this).
    pub(crate) fn clear(&mut self) {
        self.frames.clear();
        self.front_written = 0;
        self.bytes = 0;
    }

    /// Remembers the writer's task.
    pub(super) fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }

    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}
