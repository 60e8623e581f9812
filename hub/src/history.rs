//! Room logs: the one order of a history room's messages on this node, and (standalone) its
//! history.
//!
//! A history room's messages are not handed to each worker's room actor, as other rooms' are:
//! two publishers on two workers would then enqueue in different orders on different workers,
//! and offsets would not be one order. Instead every message is appended to the room's
//! [`RoomLog`] (under its lock, which is where a standalone node assigns the offset), and each
//! worker with members *pulls* what it has not delivered yet, in log order, from its cursor
//! (`seq`). The publisher's own worker pulls at once, on the publisher's turn (no actor message);
//! other workers are woken with one `Drain` message each, at most one outstanding per worker.
//!
//! So a log holds two kinds of entries: the history (standalone: the last `history_size`
//! messages, younger than `history_ttl`, under the node's `history_memory_bytes`) and the
//! entries some worker has yet to deliver. The second kind is bounded by `room_queue_capacity`:
//! a publisher finding that many undelivered waits for the workers, like a publisher finding a
//! room queue full. In cluster mode the history lives in Redis and a log keeps only the second
//! kind; the bridge appends what arrives from Redis, with the offsets Redis assigned.
//!
//! [`WorkerLog`] is a history room's side on one worker: it pulls for the worker and holds back
//! what a member being replayed to must get only after its replay.
//!
//! Lock order: a log's lock is taken alone, never while holding another log's, and nothing
//! that can block runs under it.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use actix::Addr;
use dashmap::DashMap;
use switchboard_protocol::Position;

use crate::{
    codec::Frame,
    config::RoomOptions,
    metrics::metrics,
    outbox::{Outgoing, Refused},
    room::{fan_out, Drain, Drains, Members, Room, Tally},
    RoomName, SessionId,
};

/// What one retained message costs besides its frame: the entry and its share of the queue.
pub(crate) const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 48;

/// Entries a worker pulls in one go before it yields its thread.
pub(crate) const DRAIN_BATCH: usize = 256;

/// One message of a room log.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The log's own sequence number on this node (worker cursors count these; offsets may
    /// start over with a new epoch in cluster mode, sequence numbers never do).
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) epoch: Arc<str>,
    /// The `message` frame, WebSocket header included.
    pub(crate) frame: Frame,
    /// Where the JSON text starts in `frame`.
    pub(crate) json_at: usize,
    at: Instant,
}

impl Entry {
    /// The `message` frame's JSON text.
    pub(crate) fn json(&self) -> &str {
        // The frame was encoded from a `String`; the header is in front of the text.
        std::str::from_utf8(&self.frame[self.json_at..]).unwrap_or("null")
    }
}

/// A place in a log, owned (the ack of a publish, a subscribe's position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
}

impl Placed {
    pub(crate) fn position(&self) -> Position<'_> {
        Position {
            epoch: &self.epoch,
            offset: self.offset,
        }
    }
}

/// The room logs of a node.
#[derive(Debug)]
pub(crate) struct History {
    logs: DashMap<RoomName, Arc<RoomLog>>,
    /// Standalone: the node keeps the history. Cluster mode: Redis does, logs keep only what is
    /// on its way to the workers.
    keeps: bool,
    /// Bytes of history held by every log.
    bytes: Arc<AtomicUsize>,
    budget: usize,
    /// Undelivered entries a log takes before publishers wait.
    pending_max: usize,
    /// Distinguishes this process's epochs from every earlier run's.
    nonce: String,
    generation: AtomicU64,
}

/// A log's answer to a recovery from `(epoch, offset)`.
#[derive(Debug)]
pub(crate) enum Since {
    /// Every message after the offset, oldest first (maybe none), and the latest position.
    Recovered(Vec<Entry>, Placed),
    /// The log no longer holds them (or the epoch is another): the latest position.
    Lost(Placed),
}

impl History {
    pub(crate) fn new(keeps: bool, budget: usize, pending_max: usize, nonce: String) -> Self {
        History {
            logs: DashMap::new(),
            keeps,
            bytes: Arc::new(AtomicUsize::new(0)),
            budget,
            pending_max: pending_max.max(1),
            nonce,
            generation: AtomicU64::new(0),
        }
    }

    /// A fresh epoch: unique to this process and log generation.
    pub(crate) fn new_epoch(&self) -> Arc<str> {
        let g = self.generation.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}{g:x}", self.nonce))
    }

    /// The log of `room`, made if it has none.
    pub(crate) fn log(&self, room: &str, options: &Arc<RoomOptions>) -> Arc<RoomLog> {
        if let Some(log) = self.logs.get(room) {
            return log.clone();
        }
        self.logs
            .entry(RoomName::from(room))
            .or_insert_with(|| self.new_log(options))
            .clone()
    }

    /// The log of `room` (made if it has none) with a cursor for `worker`, which has members
    /// now and delivers from the next message on. Under the map's lock for the room, so that a
    /// sweep cannot forget the log between the two.
    pub(crate) fn attach(
        &self,
        room: &str,
        options: &Arc<RoomOptions>,
        worker: usize,
    ) -> Arc<RoomLog> {
        let log = self
            .logs
            .entry(RoomName::from(room))
            .or_insert_with(|| self.new_log(options));
        log.register(worker);
        log.clone()
    }

    fn new_log(&self, options: &Arc<RoomOptions>) -> Arc<RoomLog> {
        // Standalone, a new log is a new history: a new epoch. In cluster mode the epoch comes
        // with the first message from Redis.
        let epoch = if self.keeps {
            self.new_epoch()
        } else {
            Arc::from("")
        };
        Arc::new(RoomLog::new(
            options.clone(),
            epoch,
            self.keeps,
            self.bytes.clone(),
            self.pending_max,
        ))
    }

    /// The log of `room`, if it has one.
    pub(crate) fn get(&self, room: &str) -> Option<Arc<RoomLog>> {
        self.logs.get(room).map(|l| l.clone())
    }

    /// Bytes of history held, and messages.
    pub(crate) fn held(&self) -> (usize, usize) {
        let messages = self.logs.iter().map(|l| l.len()).sum();
        (self.bytes.load(Ordering::Relaxed), messages)
    }

    /// Drops what has expired, keeps the node under its memory budget (the history of the
    /// rooms published to least recently goes first, counted), and forgets logs left with
    /// nothing (a log made again gets a new epoch: its history is gone).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for log in self.logs.iter() {
            if log.expire(now) {
                idle.push(log.key().clone());
            }
        }
        for room in idle {
            self.logs.remove_if(&room, |_, log| log.is_idle());
        }
        if self.bytes.load(Ordering::Relaxed) <= self.budget {
            return;
        }
        let mut by_age: Vec<(Instant, Arc<RoomLog>)> = self
            .logs
            .iter()
            .map(|l| (l.last_append(), l.value().clone()))
            .collect();
        by_age.sort_by_key(|(at, _)| *at);
        // Down to 90% of the budget, so that one sweep makes room for a while.
        let target = self.budget / 10 * 9;
        for (_, log) in by_age {
            if self.bytes.load(Ordering::Relaxed) <= target {
                break;
            }
            if log.drop_history() {
                metrics().history.evicted.inc();
            }
        }
    }

    /// Whether the node is over its history budget (a publish then sweeps).
    pub(crate) fn over_budget(&self) -> bool {
        self.keeps && self.bytes.load(Ordering::Relaxed) > self.budget
    }
}

/// One history room's log on this node.
#[derive(Debug)]
pub(crate) struct RoomLog {
    options: Arc<RoomOptions>,
    state: Mutex<LogState>,
    /// Publishers waiting for the workers to deliver are woken here.
    space: tokio::sync::Notify,
    bytes: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct LogState {
    epoch: Arc<str>,
    /// The latest offset (0: none yet).
    head: u64,
    /// The last sequence number given.
    seq: u64,
    entries: VecDeque<Entry>,
    /// Bytes of `entries` (frames and overhead).
    bytes: usize,
    /// Messages kept as history: `history_size` standalone, none in cluster mode.
    keep: usize,
    pending_max: usize,
    /// Workers with members: the last sequence number each delivered, and its room actor
    /// with whether a `Drain` is on its way to it.
    cursors: Vec<Cursor>,
    last_append: Instant,
}

#[derive(Debug)]
struct Cursor {
    worker: usize,
    seq: u64,
    /// The worker's room actor, once it runs (until then its worker drains it on the join).
    addr: Option<Addr<Room>>,
    woken: bool,
}

/// What a worker pulled from a log.
#[derive(Debug, Default)]
pub(crate) struct Pulled {
    pub(crate) entries: Vec<Entry>,
    /// More are waiting: the worker drains again on its next turn.
    pub(crate) more: bool,
    /// More are waiting and no `Drain` is on its way to the worker's room actor: the caller
    /// sends one (the cursor is marked woken).
    pub(crate) wake: bool,
}

/// A log has this many entries undelivered: the publisher waits.
#[derive(Debug)]
pub(crate) struct Full;

impl RoomLog {
    fn new(
        options: Arc<RoomOptions>,
        epoch: Arc<str>,
        keeps: bool,
        bytes: Arc<AtomicUsize>,
        pending_max: usize,
    ) -> Self {
        let keep = if keeps { options.history_size } else { 0 };
        RoomLog {
            options,
            state: Mutex::new(LogState {
                epoch,
                head: 0,
                seq: 0,
                entries: VecDeque::new(),
                bytes: 0,
                keep,
                pending_max,
                cursors: Vec::new(),
                last_append: Instant::now(),
            }),
            space: tokio::sync::Notify::new(),
            bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn options(&self) -> &Arc<RoomOptions> {
        &self.options
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn last_append(&self) -> Instant {
        self.lock().last_append
    }

    fn is_idle(&self) -> bool {
        let state = self.lock();
        state.entries.is_empty() && state.cursors.is_empty()
    }

    /// The latest position.
    pub(crate) fn position(&self) -> Placed {
        let state = self.lock();
        Placed {
            epoch: state.epoch.clone(),
            offset: state.head,
        }
    }

    /// Appends the next message of a standalone node: `encode` makes its frame (and the
    /// offset of its JSON text) for the position it gets. Returns the position and the room
    /// actors of other workers to wake.
    pub(crate) fn append_next(
        &self,
        here: Option<usize>,
        encode: impl FnOnce(Position<'_>) -> (Frame, usize),
    ) -> Result<(Placed, Vec<Addr<Room>>), Full> {
        let mut state = self.lock();
        if state.pending() >= state.pending_max {
            return Err(Full);
        }
        let offset = state.head + 1;
        let epoch = state.epoch.clone();
        let (frame, json_at) = encode(Position {
            epoch: &epoch,
            offset,
        });
        let wake = self.push(&mut state, offset, epoch.clone(), frame, json_at, here);
        Ok((Placed { epoch, offset }, wake))
    }

    /// Appends a message whose position was assigned elsewhere (Redis), in the order it came.
    pub(crate) fn append_at(
        &self,
        placed: &Placed,
        frame: Frame,
        json_at: usize,
    ) -> Result<Vec<Addr<Room>>, (Full, Frame)> {
        let mut state = self.lock();
        if state.pending() >= state.pending_max {
            return Err((Full, frame));
        }
        state.epoch = placed.epoch.clone();
        Ok(self.push(
            &mut state,
            placed.offset,
            placed.epoch.clone(),
            frame,
            json_at,
            None,
        ))
    }

    /// Where the log stands in cluster mode: the epoch and latest offset it has delivered.
    pub(crate) fn head(&self) -> Option<Placed> {
        let state = self.lock();
        (state.head > 0).then(|| Placed {
            epoch: state.epoch.clone(),
            offset: state.head,
        })
    }

    fn push(
        &self,
        state: &mut LogState,
        offset: u64,
        epoch: Arc<str>,
        frame: Frame,
        json_at: usize,
        here: Option<usize>,
    ) -> Vec<Addr<Room>> {
        state.seq += 1;
        state.head = offset;
        state.last_append = Instant::now();
        let cost = frame.len() + ENTRY_OVERHEAD;
        state.bytes += cost;
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        state.entries.push_back(Entry {
            seq: state.seq,
            offset,
            epoch,
            frame,
            json_at,
            at: state.last_append,
        });
        self.trim(state);
        let mut wake = Vec::new();
        for cursor in &mut state.cursors {
            if let (Some(addr), false) = (&cursor.addr, Some(cursor.worker) == here || cursor.woken)
            {
                cursor.woken = true;
                wake.push(addr.clone());
            }
        }
        wake
    }

    /// Drops the entries that are neither history nor undelivered.
    fn trim(&self, state: &mut LogState) {
        let delivered = state.delivered();
        let mut freed = 0;
        while state.entries.len() > state.keep {
            match state.entries.front() {
                Some(front) if front.seq <= delivered => {
                    freed += front.frame.len() + ENTRY_OVERHEAD;
                    state.entries.pop_front();
                }
                _ => break,
            }
        }
        state.bytes -= freed;
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Drops expired history; true when the log is left with nothing at all.
    fn expire(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if let Some(ttl) = self.options.history_ttl {
            let delivered = state.delivered();
            let mut freed = 0;
            while let Some(front) = state.entries.front() {
                if front.seq > delivered || now.saturating_duration_since(front.at) < ttl {
                    break;
                }
                freed += front.frame.len() + ENTRY_OVERHEAD;
                state.entries.pop_front();
            }
            state.bytes -= freed;
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
        let empty = state.entries.is_empty() && state.cursors.is_empty();
        // A log left without history, but whose offsets clients may hold, is forgotten only
        // once its last message would have expired anyway (or at once without a TTL and with
        // nothing in it): a log made again starts a new epoch, which they then learn.
        empty
            && self.options.history_ttl.is_none_or(|ttl| {
                now.saturating_duration_since(state.last_append) >= ttl
                    || state.head == 0
                    || ttl < Duration::from_secs(1)
            })
    }

    /// Drops the whole history (the node is over its memory budget); entries still to be
    /// delivered stay. True if anything was dropped.
    fn drop_history(&self) -> bool {
        let mut state = self.lock();
        let keep = state.keep;
        state.keep = 0;
        let before = state.entries.len();
        self.trim(&mut state);
        state.keep = keep;
        state.entries.len() < before
    }

    /// `worker` has members now: it delivers from the next message on.
    fn register(&self, worker: usize) {
        let mut state = self.lock();
        let seq = state.seq;
        state.cursors.retain(|c| c.worker != worker);
        state.cursors.push(Cursor {
            worker,
            seq,
            addr: None,
            woken: false,
        });
    }

    /// The room actor that delivers for `worker` runs now.
    pub(crate) fn set_room(&self, worker: usize, addr: Addr<Room>) {
        let mut state = self.lock();
        if let Some(cursor) = state.cursors.iter_mut().find(|c| c.worker == worker) {
            cursor.addr = Some(addr);
        }
    }

    /// `worker` has no members left.
    pub(crate) fn unregister(&self, worker: usize) {
        let mut state = self.lock();
        state.cursors.retain(|c| c.worker != worker);
        self.trim(&mut state);
        drop(state);
        self.space.notify_waiters();
    }

    /// What `worker` has yet to deliver, up to `DRAIN_BATCH` entries, and the latest
    /// position; its cursor moves past them. `by_room`: the pull of the worker's room actor,
    /// handling a `Drain`.
    pub(crate) fn pull(&self, worker: usize, by_room: bool) -> (Pulled, Placed) {
        let mut state = self.lock();
        let mut pulled = Pulled::default();
        let head = Placed {
            epoch: state.epoch.clone(),
            offset: state.head,
        };
        let last = state.seq;
        let Some(i) = state.cursors.iter().position(|c| c.worker == worker) else {
            return (pulled, head);
        };
        let from = state.cursors[i].seq;
        if from < last {
            let first = state.entries.front().map_or(last + 1, |e| e.seq);
            let skip = (from + 1).saturating_sub(first) as usize;
            pulled
                .entries
                .extend(state.entries.iter().skip(skip).take(DRAIN_BATCH).cloned());
            let upto = pulled.entries.last().map_or(last, |e| e.seq);
            pulled.more = upto < last;
            state.cursors[i].seq = upto;
        }
        // `woken` is true exactly while a `Drain` is on its way to the room actor (or being
        // handled): only the room's own pull, which is that `Drain`, clears it, so however often
        // publishers and joins pull directly, at most one `Drain` is ever queued per worker.
        if by_room {
            state.cursors[i].woken = pulled.more;
        } else if pulled.more && !state.cursors[i].woken {
            state.cursors[i].woken = true;
            pulled.wake = true;
        }
        self.trim(&mut state);
        drop(state);
        if !pulled.entries.is_empty() {
            self.space.notify_waiters();
        }
        (pulled, head)
    }

    /// Waits until the log has room for another entry (some worker delivered).
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.pending() < state.pending_max {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The messages after `offset` of `epoch`, if the history still holds every one of them.
    pub(crate) fn since(&self, epoch: &str, offset: u64, max: usize) -> Since {
        let state = self.lock();
        let head = Placed {
            epoch: state.epoch.clone(),
            offset: state.head,
        };
        if *state.epoch != *epoch || offset > state.head {
            return Since::Lost(head);
        }
        if offset == state.head {
            return Since::Recovered(Vec::new(), head);
        }
        let first = state.entries.front().map_or(u64::MAX, |e| e.offset);
        if first > offset + 1 || state.head - offset > max as u64 {
            return Since::Lost(head);
        }
        let entries = state
            .entries
            .iter()
            .filter(|e| e.offset > offset)
            .cloned()
            .collect();
        Since::Recovered(entries, head)
    }

    /// The last `limit` messages of the history, oldest first, and the latest position.
    pub(crate) fn last(&self, limit: usize) -> (Vec<Entry>, Placed) {
        let state = self.lock();
        let ttl = self.options.history_ttl;
        let now = Instant::now();
        // Entries are in the order they came: the history is the last `keep`, the expired ones
        // are at its front, and the answer is the last `limit` of what is left.
        let len = state.entries.len();
        let mut start = len - len.min(state.keep);
        while state
            .entries
            .get(start)
            .is_some_and(|e| ttl.is_some_and(|ttl| now.saturating_duration_since(e.at) >= ttl))
        {
            start += 1;
        }
        let start = start.max(len.saturating_sub(limit));
        let entries: Vec<Entry> = state.entries.range(start..).cloned().collect();
        (
            entries,
            Placed {
                epoch: state.epoch.clone(),
                offset: state.head,
            },
        )
    }
}

impl LogState {
    /// The sequence number every worker has delivered up to.
    fn delivered(&self) -> u64 {
        self.cursors.iter().map(|c| c.seq).min().unwrap_or(self.seq)
    }

    /// Entries some worker has yet to deliver.
    fn pending(&self) -> usize {
        (self.seq - self.delivered()) as usize
    }
}

/// A `Drain` for each room actor in `wake`: at most one is on its way to each (see
/// `Cursor::woken`), so sending past the mailbox bound cannot grow a queue.
pub(crate) fn wake(wake: Vec<Addr<Room>>) {
    for addr in wake {
        addr.do_send(Drain);
    }
}

/// A history room's members on one worker, as its log's entries reach them.
///
/// Most members take every entry. A member that just subscribed skips the entries up to the
/// position its ack named (`floor`: they reach this worker after the ack was decided), and a
/// member that is being replayed what it missed is *held*: entries wait in its own list until
/// the replay is done, so that the missed messages come first, then the live ones, without a
/// gap or a duplicate.
#[derive(Debug)]
pub(crate) struct WorkerLog {
    pub(crate) log: Arc<RoomLog>,
    worker: usize,
    members: Members,
    special: RefCell<HashMap<SessionId, Special>>,
    /// The epoch and offset of the entry delivered last: a new epoch voids the members'
    /// floors, and a floor at or below the offset is not needed (those entries are gone by).
    epoch: RefCell<Arc<str>>,
    last: std::cell::Cell<u64>,
    /// Entries a held member may have waiting; more and it is evicted (it is that slow).
    hold_max: usize,
}

/// What [`WorkerLog::drain`] left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drained {
    /// More entries wait for this worker.
    pub(crate) more: bool,
    /// ... and no `Drain` is on its way to the room actor: the caller sends one.
    pub(crate) wake: bool,
}

#[derive(Debug, Default)]
struct Special {
    /// Entries up to this offset are not for this member.
    floor: Option<u64>,
    /// Entries waiting for the member's replay to end, with their offsets.
    held: Option<Vec<(u64, Rc<Frame>)>>,
}

impl WorkerLog {
    pub(crate) fn new(log: Arc<RoomLog>, worker: usize, members: Members, hold_max: usize) -> Self {
        WorkerLog {
            log,
            worker,
            members,
            special: RefCell::default(),
            epoch: RefCell::new(Arc::from("")),
            last: std::cell::Cell::new(0),
            hold_max,
        }
    }

    /// Delivers what this worker has not delivered yet, up to one batch.
    /// `by_room`: the room actor drains, handling a `Drain` (see [`RoomLog::pull`]).
    pub(crate) fn drain(&self, by_room: bool) -> Drained {
        let (pulled, _) = self.log.pull(self.worker, by_room);
        let drained = Drained {
            more: pulled.more,
            wake: pulled.wake,
        };
        for entry in pulled.entries {
            self.deliver(entry);
        }
        drained
    }

    fn deliver(&self, entry: Entry) {
        let frame = Outgoing::new(entry.frame);
        let mut special = self.special.borrow_mut();
        {
            let mut epoch = self.epoch.borrow_mut();
            if **epoch != *entry.epoch {
                // A floor belongs to the epoch it was read in; a new epoch (the history was
                // lost) voids it. The first entry only tells the worker which epoch it is in.
                if !epoch.is_empty() {
                    for s in special.values_mut() {
                        s.floor = None;
                    }
                }
                *epoch = entry.epoch.clone();
            }
        }
        self.last.set(entry.offset);
        let members = self.members.borrow();
        if special.is_empty() {
            fan_out(&members, &frame, None).record();
            return;
        }
        let mut tally = Tally::default();
        for (id, outbox) in members.iter() {
            if let Some(s) = special.get_mut(id) {
                if s.floor.is_some_and(|floor| entry.offset <= floor) {
                    continue;
                }
                if let Some(held) = &mut s.held {
                    if held.len() >= self.hold_max {
                        outbox.borrow_mut().evict();
                        tally.overflowed += 1;
                    } else {
                        held.push((entry.offset, frame.plain().clone()));
                    }
                    continue;
                }
            }
            let mut outbox = outbox.borrow_mut();
            match outbox.deliver_shared(&frame) {
                Ok(()) => tally.delivered += 1,
                Err(Refused::Overflow) => tally.overflowed += 1,
                Err(Refused::Evicted) => tally.refused += 1,
            }
        }
        // A floor this entry passed has done its work.
        special.retain(|_, s| s.held.is_some() || s.floor.is_some_and(|f| f > entry.offset));
        tally.record();
    }

    /// The member's entries wait (in its own list) until [`WorkerLog::settle`].
    pub(crate) fn hold(&self, id: SessionId) {
        self.special.borrow_mut().entry(id).or_default().held = Some(Vec::new());
    }

    /// The member takes entries after `at` (all, with `None`) from now on; what was held for
    /// it past `at` is returned, in order, for the session to queue.
    pub(crate) fn settle(&self, id: SessionId, at: Option<&Placed>) -> Vec<Rc<Frame>> {
        let floor = at.map(|at| at.offset);
        // A floor this worker has delivered past, in the same epoch, needs no check per entry:
        // the entries up to it will not come again, so the member takes the plain fan-out loop.
        let needed =
            at.is_some_and(|at| *self.epoch.borrow() != at.epoch || at.offset > self.last.get());
        let mut special = self.special.borrow_mut();
        let held = match special.get_mut(&id) {
            Some(s) => s.held.take().unwrap_or_default(),
            None => Vec::new(),
        };
        if needed {
            special.insert(id, Special { floor, held: None });
        } else {
            special.remove(&id);
        }
        held.into_iter()
            .filter(|(offset, _)| floor.is_none_or(|f| *offset > f))
            .map(|(_, frame)| frame)
            .collect()
    }

    /// The member left.
    pub(crate) fn forget(&self, id: SessionId) {
        self.special.borrow_mut().remove(&id);
    }
}

impl Drains for WorkerLog {
    fn drain_batch(&self) -> bool {
        self.drain(true).more
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn options(size: usize) -> Arc<RoomOptions> {
        Arc::new(RoomOptions {
            history_size: size,
            history_ttl: None,
            presence: false,
            join_leave: false,
            leave_debounce: Duration::ZERO,
        })
    }

    fn append(log: &RoomLog) -> Result<Placed, Full> {
        log.append_next(None, |at| (Bytes::from(at.offset.to_string()), 0))
            .map(|(placed, _)| placed)
    }

    #[test]
    fn undelivered_entries_are_bounded_and_a_worker_pulling_makes_room() {
        let history = History::new(true, 1 << 20, 2, "t".into());
        let log = history.attach("r", &options(1), 0);
        append(&log).unwrap();
        append(&log).unwrap();
        assert!(
            append(&log).is_err(),
            "two undelivered: the publisher waits"
        );
        let (pulled, head) = log.pull(0, false);
        assert_eq!(pulled.entries.len(), 2);
        assert_eq!(head.offset, 2);
        assert_eq!(append(&log).unwrap().offset, 3);
        // History keeps one; a worker that leaves no longer holds entries back.
        log.unregister(0);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn direct_pulls_ask_for_one_drain_at_most_until_the_room_has_handled_it() {
        let history = History::new(true, 1 << 20, 10_000, "t".into());
        let log = history.attach("r", &options(1), 0);
        for _ in 0..4 * DRAIN_BATCH {
            append(&log).unwrap();
        }
        let (first, _) = log.pull(0, false);
        assert!(
            first.more && first.wake,
            "more than a batch: one Drain asked for"
        );
        let (second, _) = log.pull(0, false);
        assert!(second.more && !second.wake, "one is on its way already");
        // The room handles its Drain: still more, it goes on by itself; then done.
        let (by_room, _) = log.pull(0, true);
        assert!(by_room.more && !by_room.wake);
        let (last, _) = log.pull(0, true);
        assert!(!last.more);
        append(&log).unwrap();
        for _ in 0..DRAIN_BATCH + 1 {
            append(&log).unwrap();
        }
        let (again, _) = log.pull(0, false);
        assert!(again.wake, "none on its way any more: a new one");
    }

    #[test]
    fn recovery_holds_every_message_after_the_offset_or_says_it_cannot() {
        let history = History::new(true, 1 << 20, 100, "t".into());
        let log = history.log("r", &options(3));
        for _ in 0..5 {
            append(&log).unwrap();
        }
        let epoch = log.position().epoch;
        match log.since(&epoch, 2, 3) {
            Since::Recovered(entries, head) => {
                let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
                assert_eq!(offsets, [3, 4, 5]);
                assert_eq!(head.offset, 5);
            }
            Since::Lost(_) => panic!("3..=5 are held"),
        }
        assert!(
            matches!(log.since(&epoch, 1, 3), Since::Lost(_)),
            "2 is gone"
        );
        assert!(matches!(log.since("other", 4, 3), Since::Lost(_)));
        assert!(matches!(log.since(&epoch, 9, 3), Since::Lost(_)));
        assert!(matches!(log.since(&epoch, 5, 3), Since::Recovered(v, _) if v.is_empty()));
        let (last, _) = log.last(2);
        assert_eq!(last.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn over_the_budget_the_least_recently_published_rooms_lose_their_history_first() {
        let history = History::new(true, 3 * (ENTRY_OVERHEAD + 1), 100, "t".into());
        let old = history.log("old", &options(10));
        append(&old).unwrap();
        append(&old).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let new = history.log("new", &options(10));
        append(&new).unwrap();
        append(&new).unwrap();
        assert!(history.over_budget());
        history.sweep();
        assert!(!history.over_budget());
        assert_eq!(old.len(), 0, "the older room's history went");
        assert_eq!(new.len(), 2);
        // A log left with nothing is forgotten: made again, it is a new history.
        let epoch = old.position().epoch;
        history.sweep();
        assert_ne!(history.log("old", &options(10)).position().epoch, epoch);
    }
    /// A history room's worker side: a held member gets what arrived while it was held, past
    /// its position and in order, and nothing twice; a floor skips what its ack covered.
    #[test]
    fn a_held_member_gets_what_came_after_its_position_once_and_in_order() {
        use crate::outbox::Outbox;
        let options = Arc::new(RoomOptions {
            history_size: 100,
            history_ttl: None,
            presence: false,
            join_leave: false,
            leave_debounce: std::time::Duration::ZERO,
        });
        let history = History::new(true, 1 << 20, 64, "test".into());
        let log = history.attach("chat", &options, 0);
        let members = Members::default();
        let worker = WorkerLog::new(log.clone(), 0, members.clone(), 16);
        let append = |n: u64| {
            log.append_next(None, |at| {
                let text = format!("{n}@{}", at.offset);
                (Bytes::from(text.into_bytes()), 0)
            })
            .unwrap()
        };
        let old = Outbox::new(64, 1 << 20);
        members.borrow_mut().insert(SessionId(1), old.clone());
        append(1);
        assert!(!worker.drain(false).more);
        assert_eq!(old.borrow().len_frames(), 1);

        // A new member, held while its position is read (2, once these two are in).
        let new = Outbox::new(64, 1 << 20);
        members.borrow_mut().insert(SessionId(2), new.clone());
        worker.hold(SessionId(2));
        append(2);
        let (placed, _) = append(3);
        assert_eq!(placed.offset, 3);
        append(4);
        let _ = worker.drain(false);
        assert_eq!(old.borrow().len_frames(), 4, "the others are not held up");
        assert_eq!(new.borrow().len_frames(), 0, "held");
        let at = Placed {
            epoch: placed.epoch.clone(),
            offset: 3,
        };
        let held = worker.settle(SessionId(2), Some(&at));
        let held: Vec<&[u8]> = held.iter().map(|f| &f[..]).collect();
        assert_eq!(held, [&b"4@4"[..]], "only what came after its position");
        append(5);
        let _ = worker.drain(false);
        assert_eq!(new.borrow().len_frames(), 1, "then live, directly");

        // A member whose ack named a position this worker has not delivered yet skips up to it.
        append(6);
        let late = Outbox::new(64, 1 << 20);
        members.borrow_mut().insert(SessionId(3), late.clone());
        let at = Placed {
            epoch: placed.epoch.clone(),
            offset: 6,
        };
        assert!(worker.settle(SessionId(3), Some(&at)).is_empty());
        append(7);
        let _ = worker.drain(false);
        assert_eq!(late.borrow().len_frames(), 1, "6 is skipped, 7 arrives");
        assert_eq!(old.borrow().len_frames(), 7);
    }
}
