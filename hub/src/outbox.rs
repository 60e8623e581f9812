//! [`Outbox`]: the frames waiting for one session's socket.
//!
//! Rooms deliver into it directly (same worker thread, no message per recipient): a delivery is
//! a reference-count increment on the shared frame and a push. The session adds its own frames
//! (replies, errors, echoes, pongs). The connection's writer drains it, many frames per write.
//!
//! It is bounded twice: by `outbox_capacity` frames (deliveries) and by `outbox_max_bytes` bytes
//! waiting for the socket (everything). A frame that would take it over either bound is not
//! queued: the session is marked evicted and its writer is woken, which closes it with 4000
//! "slow consumer". So the bytes queued never exceed `outbox_max_bytes`, whatever a peer sends or
//! fails to read; only the close frame itself (at most 127 bytes) is queued past the bound.

use std::{
    cell::RefCell,
    collections::VecDeque,
    io::IoSlice,
    rc::Rc,
    task::{Context, Waker},
    time::Instant,
};

use switchboard_protocol::ServerFrame;

use crate::{
    codec::{close_frame, control_frame, opcode, text_frame_of, Frame},
    deflate::deflate_frame,
    metrics::Disconnect,
};

/// A session's handle on its outbox, shared with its rooms and its writer on one thread.
pub(crate) type SharedOutbox = Rc<RefCell<Outbox>>;

/// The frames waiting for one session's socket, in order.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Frames are `Rc`s: a room hands the same frame to every member on its thread, and an
    /// `Rc` clone is a plain increment where a `Bytes` clone is an atomic one.
    frames: VecDeque<Rc<Frame>>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    /// Set once a frame found the outbox full; the writer then evicts the session.
    evicted: bool,
    /// Set by the worker's heartbeat when the client has been silent too long; the writer then
    /// closes the session with 4003.
    timed_out: bool,
    /// When the session last heard from its client (any frame, pongs included).
    pub(crate) last_heard: Instant,
    /// How the session ended, once it has: set by the first close frame queued (or by the
    /// session when the client closed first), read when the connection ends.
    pub(crate) ended: Option<Disconnect>,
    /// The writer's task, woken when a frame arrives while it is idle.
    waker: Option<Waker>,
    /// The session negotiated permessage-deflate and may be sent compressed messages: data
    /// frames of at least this many bytes go out compressed.
    pub(crate) compress_from: Option<usize>,
}

/// A frame on its way to the members of a room on one worker, with its compressed form made at
/// most once, for the first member that negotiated compression: every other such member shares
/// it, as they all share the plain frame (see `deflate.rs`).
#[derive(Debug)]
pub(crate) struct Outgoing {
    plain: Rc<Frame>,
    deflated: std::cell::OnceCell<Option<Rc<Frame>>>,
}

impl Outgoing {
    pub(crate) fn new(frame: Frame) -> Outgoing {
        Outgoing::of(Rc::new(frame))
    }

    pub(crate) fn of(plain: Rc<Frame>) -> Outgoing {
        Outgoing {
            plain,
            deflated: std::cell::OnceCell::new(),
        }
    }

    /// The frame as it goes to every member.
    pub(crate) fn plain(&self) -> &Rc<Frame> {
        &self.plain
    }

    /// The frame for a member that compresses frames from `compress_from` bytes on (`None`:
    /// it does not): the compressed one if the plain one is that long and deflate made it
    /// shorter.
    #[inline]
    fn for_member(&self, compress_from: Option<usize>) -> &Rc<Frame> {
        match compress_from {
            Some(min) if self.plain.len() >= min => self.deflated(),
            _ => &self.plain,
        }
    }

    /// Out of line: the fan-out loop for members without compression stays as small as it was.
    #[cold]
    #[inline(never)]
    fn deflated(&self) -> &Rc<Frame> {
        self.deflated
            .get_or_init(|| deflate_frame(&self.plain).map(Rc::new))
            .as_ref()
            .unwrap_or(&self.plain)
    }
}

/// A frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This frame found the outbox full: the session is now evicted.
    Overflow,
    /// The session was evicted earlier; it is on its way out.
    Evicted,
}

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
            compress_from: None,
        }))
    }

    /// Delivers a shared frame from a room (or the operator). Refused once the session is
    /// evicted, or when the frame would take the outbox over either bound (which evicts it).
    #[inline]
    pub(crate) fn deliver_shared(&mut self, frame: &Outgoing) -> Result<(), Refused> {
        if self.frames.len() >= self.max_frames {
            return Err(self.overflow());
        }
        let frame = frame.for_member(self.compress_from).clone();
        self.enqueue(frame, true)
    }

    /// Delivers a frame meant for this session alone (a replay, an operator's direct frame),
    /// like [`Outbox::deliver_shared`]; compressed for this session if it compresses.
    pub(crate) fn deliver(&mut self, frame: &Rc<Frame>) -> Result<(), Refused> {
        self.deliver_shared(&Outgoing::of(frame.clone()))
    }

    /// Queues a data frame of the session's own (an echo), compressed if the session
    /// compresses.
    pub(crate) fn push_data(&mut self, frame: Frame) -> Result<(), Refused> {
        let frame = Outgoing::new(frame).for_member(self.compress_from).clone();
        self.enqueue(frame, false)
    }

    /// Queues one of the session's own frames, under the byte bound: a client that sends
    /// requests (or pings, or echo messages) faster than it reads the answers is evicted like a
    /// slow reader of deliveries. The session runs inside its writer's task, so this does not
    /// wake the writer: the writer flushes once the session has had its turn.
    pub(crate) fn push(&mut self, frame: Frame) -> Result<(), Refused> {
        self.enqueue(Rc::new(frame), false)
    }

    #[inline]
    fn enqueue(&mut self, frame: Rc<Frame>, wake: bool) -> Result<(), Refused> {
        if self.evicted {
            return Err(Refused::Evicted);
        }
        if self.bytes + frame.len() > self.max_bytes {
            return Err(self.overflow());
        }
        let was_idle = self.frames.is_empty();
        self.bytes += frame.len();
        self.frames.push_back(frame);
        if wake && was_idle {
            // The writer sleeps while the outbox is empty; one wake-up per batch of frames.
            self.wake();
        }
        Ok(())
    }

    #[cold]
    fn overflow(&mut self) -> Refused {
        if self.evicted {
            return Refused::Evicted;
        }
        self.evicted = true;
        self.wake();
        Refused::Overflow
    }

    /// Queues a protocol frame of the session's own (reply, error, welcome).
    pub(crate) fn send(&mut self, frame: &ServerFrame<'_>) -> Result<(), Refused> {
        self.push(text_frame_of(frame))
    }

    /// Queues a pong answering a client's ping.
    pub(crate) fn pong(&mut self, payload: &[u8]) -> Result<(), Refused> {
        self.push(control_frame(opcode::PONG, payload))
    }

    /// Queues a server ping, waking the writer (the heartbeat runs outside it).
    pub(crate) fn ping(&mut self) -> Result<(), Refused> {
        self.enqueue(Rc::new(control_frame(opcode::PING, b"")), true)
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

    /// Queues a close frame, past the bounds: the last frame a session sends.
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.ended.get_or_insert(Disconnect::Code(code));
        let frame = close_frame(code, reason);
        self.bytes += frame.len();
        self.frames.push_back(Rc::new(frame));
        self.wake();
    }

    /// Evicts the session as a slow consumer: its writer closes it with 4000.
    pub(crate) fn evict(&mut self) {
        let _ = self.overflow();
    }

    /// Whether a replay may queue more now: the outbox is less than half full either way, so
    /// that live traffic still finds room while the writer catches up.
    pub(crate) fn has_room_for_replay(&self) -> bool {
        self.frames.len() < self.max_frames / 2 && self.bytes < self.max_bytes / 2
    }

    /// True once a frame found the outbox full.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted
    }

    /// True once the heartbeat found the client silent.
    pub(crate) fn is_timed_out(&self) -> bool {
        self.timed_out
    }

    /// Bytes queued.
    pub(crate) fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Frames queued.
    pub(crate) fn len_frames(&self) -> usize {
        self.frames.len()
    }

    /// Ends the queue for a session being closed by its writer: keeps the frame being written
    /// (a frame cut in half would corrupt the stream), drops the rest and returns how many were
    /// dropped. Further frames are refused.
    pub(crate) fn discard_unwritten(&mut self) -> usize {
        self.evicted = true;
        let discarded = self.frames.len().saturating_sub(1);
        self.frames.truncate(1);
        self.bytes = self.frames.front().map_or(0, |f| f.len()) - self.front_written;
        discarded
    }

    /// Unwritten bytes of the front frame (0 when there is none).
    pub(crate) fn front_len(&self) -> usize {
        self.frames
            .front()
            .map_or(0, |f| f.len() - self.front_written)
    }

    /// Fills `slices` with the unwritten bytes of the first frames; returns how many it filled.
    pub(crate) fn unwritten<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, (slot, frame)) in slices.iter_mut().zip(self.frames.iter()).enumerate() {
            let skip = if i == 0 { self.front_written } else { 0 };
            *slot = IoSlice::new(&frame[skip..]);
            n += 1;
        }
        n
    }

    /// Appends the unwritten bytes of the first frames to `buf`: whole frames while they fit in
    /// `limit` bytes, and always at least the front one.
    pub(crate) fn gather(&self, buf: &mut Vec<u8>, limit: usize) {
        for (i, frame) in self.frames.iter().enumerate() {
            let bytes = if i == 0 {
                &frame[self.front_written..]
            } else {
                &frame[..]
            };
            if i > 0 && buf.len() + bytes.len() > limit {
                break;
            }
            buf.extend_from_slice(bytes);
        }
    }

    /// Records that the socket took `written` more bytes.
    pub(crate) fn written(&mut self, mut written: usize) {
        self.bytes -= written.min(self.bytes);
        while written > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                self.frames.pop_front();
                self.front_written = 0;
            } else {
                self.front_written += written;
                written = 0;
            }
        }
    }

    /// Releases the queue's allocation once a burst is written: an idle session should not keep
    /// the size its busiest moment needed.
    pub(crate) fn shrink_when_idle(&mut self, keep: usize) {
        if self.frames.is_empty() && self.frames.capacity() > keep {
            self.frames = VecDeque::new();
        }
    }

    /// Drops every queued frame (micro-benchmarks stand in for the writer with this).
    #[cfg(feature = "bench-support")]
    pub(crate) fn clear(&mut self) {
        self.frames.clear();
        self.front_written = 0;
        self.bytes = 0;
    }

    /// Remembers the writer's task.
    pub(crate) fn register(&mut self, cx: &Context<'_>) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::Wake,
    };

    use bytes::Bytes;

    use super::*;

    fn shared(len: usize) -> Rc<Frame> {
        Rc::new(Bytes::from(vec![b'x'; len]))
    }

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn with_waker(out: &SharedOutbox) -> Arc<Count> {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        out.borrow_mut().register(&Context::from_waker(&waker));
        count
    }

    #[test]
    fn deliveries_stop_at_the_frame_bound_and_evict_once() {
        let out = Outbox::new(3, 1 << 20);
        let mut o = out.borrow_mut();
        for _ in 0..3 {
            o.deliver(&shared(10)).unwrap();
        }
        assert_eq!(o.deliver(&shared(10)), Err(Refused::Overflow));
        assert!(o.is_evicted());
        assert_eq!(o.deliver(&shared(10)), Err(Refused::Evicted));
        assert_eq!(o.push(Bytes::from_static(b"ack")), Err(Refused::Evicted));
        assert_eq!(o.len_frames(), 3);
        assert_eq!(o.len_bytes(), 30);
    }

    #[test]
    fn no_frame_takes_the_outbox_past_its_byte_bound() {
        let max = 1000;
        let out = Outbox::new(usize::MAX, max);
        let mut o = out.borrow_mut();
        let mut accepted = 0;
        // The session's own frames (echoes, replies) obey the same byte bound as deliveries.
        for i in 0..100 {
            let r = if i % 2 == 0 {
                o.push(Bytes::from(vec![0; 90]))
            } else {
                o.deliver(&shared(90))
            };
            if r.is_ok() {
                accepted += 1;
            }
            assert!(
                o.len_bytes() <= max,
                "{} bytes after frame {i}",
                o.len_bytes()
            );
        }
        assert_eq!(accepted, 11);
        assert!(o.is_evicted());
        // Only the close frame goes past the bound.
        o.close(4000, "slow consumer");
        assert!(o.len_bytes() <= max + 127);
        assert_eq!(o.ended, Some(Disconnect::Code(4000)));
    }

    #[test]
    fn the_writer_is_woken_when_work_arrives_and_not_per_frame() {
        let out = Outbox::new(100, 1 << 20);
        let wakes = with_waker(&out);
        out.borrow_mut().deliver(&shared(5)).unwrap();
        out.borrow_mut().deliver(&shared(5)).unwrap();
        out.borrow_mut().pong(b"p").unwrap();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "one wake-up per batch");
        let total = out.borrow().len_bytes();
        out.borrow_mut().written(total);
        // The session's own frames are queued from inside the writer's task: no wake-up.
        out.borrow_mut().pong(b"p").unwrap();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        let mut o = out.borrow_mut();
        let total = o.len_bytes();
        o.written(total);
        assert_eq!(o.len_frames(), 0);
        o.ping().unwrap();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2, "idle again: woken");
        assert!(o.time_out());
        assert!(!o.time_out());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn partial_writes_keep_frames_whole_and_in_order() {
        let out = Outbox::new(100, 1 << 20);
        let mut o = out.borrow_mut();
        o.push(Bytes::from_static(b"abc")).unwrap();
        o.push(Bytes::from_static(b"defg")).unwrap();
        o.written(2);
        let unwritten = |o: &Outbox| {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = o.unwritten(&mut slices);
            slices[..n].iter().map(|s| s.to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(unwritten(&o).concat(), b"cdefg");
        assert_eq!(o.len_bytes(), 5);
        // An eviction mid-frame keeps the frame being written, so the stream stays valid.
        assert_eq!(o.discard_unwritten(), 1);
        assert_eq!(unwritten(&o), [b"c".to_vec()]);
        assert_eq!(o.len_bytes(), 1);
        o.written(1);
        assert_eq!(o.len_frames(), 0);
        o.shrink_when_idle(0);
    }

    #[test]
    fn gather_copies_whole_frames_up_to_the_limit_from_the_unwritten_part() {
        let out = Outbox::new(100, 1 << 20);
        let mut o = out.borrow_mut();
        for frame in [&b"abc"[..], b"defg", b"hi", b"jklmnop"] {
            o.push(Bytes::copy_from_slice(frame)).unwrap();
        }
        o.written(1);
        assert_eq!(o.front_len(), 2);
        let mut buf = Vec::new();
        o.gather(&mut buf, 8);
        // "bc" + "defg" + "hi" is 8 bytes; the next frame would go past the limit.
        assert_eq!(buf, b"bcdefghi");
        o.written(buf.len());
        buf.clear();
        // The front frame is copied even when it alone is longer than the limit.
        o.gather(&mut buf, 4);
        assert_eq!(buf, b"jklmnop");
        o.written(3);
        buf.clear();
        o.gather(&mut buf, 4);
        assert_eq!(buf, b"mnop");
        o.written(4);
        assert_eq!((o.len_frames(), o.len_bytes()), (0, 0));
    }
}
