//! `fanout`: N subscribers spread evenly over R rooms (subscriber i in room i mod R), P
//! publishers each publishing M messages to every room in turn (message s goes to room 0, 1, …,
//! R−1, then s+1), at `--rate` messages per second per publisher. With `--publisher-rooms own`,
//! publisher p publishes its M messages to room p mod R only: the chat-shaped load of many small
//! rooms, each with its own publishers. With several `--url`s (the nodes of a cluster),
//! subscriber i connects to URL i mod n, and the report breaks deliveries, CPU and memory down
//! per node.
//!
//! Phases: every subscriber connects and has its subscription confirmed; every publisher
//! connects; then publishing starts. The run ends when every subscriber has all it expects
//! (P × M), or when nothing has arrived for `--drain-idle` seconds after the publishers
//! finished, or at `--timeout`.
//!
//! One task per connection. A subscriber owns its loss/duplicate tracker and records latencies
//! in its thread's histogram; the controller only reads each task's [`Slot`].

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use futures_util::SinkExt as _;
use tokio::{
    sync::{mpsc, watch, Semaphore},
    time::{sleep_until, Instant},
};

use crate::{
    adapters::{self, dispatch, next, next_ready, send_replies, Adapter, AdapterOpts, Conn, Event},
    control::{join_all, wait_ready, ErrorTally, Pacer, Slot},
    error::{Error, Result},
    net::{Endpoint, Ws},
    payload::{self, now_ns},
    progress::Progress,
    report::{NodeReport, Report, Rss},
    stats::{record_latency, Accounting, SeqTracker},
    sys,
    wire::RawWs,
    Endpoints, FanoutArgs, Outcome, PublishTo, PublisherRooms,
};

/// Publishes written before a flush.
const WRITE_BATCH: usize = 256;
/// Memory the loss bitsets may take before accounting falls back to in-order counting.
const BITSET_BUDGET: u64 = 512 << 20;

/// What every connection task of a run knows.
#[derive(Debug)]
struct Shared {
    /// Where subscribers connect (`--url`): subscriber i to `eps[i mod n]`.
    eps: Vec<Endpoint>,
    /// Where publishers connect (`--publish-url`, by default the first `--url`).
    publish_ep: Endpoint,
    opts: AdapterOpts,
    handshakes: Semaphore,
    publishers: usize,
    messages: u64,
    size: usize,
    /// Messages per second per publisher connection; 0: unlimited.
    rate: f64,
    window: u64,
    accounting: Accounting,
    /// Rooms in the run.
    rooms: usize,
    publisher_rooms: PublisherRooms,
    /// Set with the stop signal: a subscriber whose socket never runs dry checks it between
    /// batches (the biased select would always pick the socket).
    stopping: AtomicBool,
}

impl Shared {
    /// How many publishers publish to `room`.
    fn senders_to(&self, room: usize) -> u64 {
        match self.publisher_rooms {
            PublisherRooms::All => self.publishers as u64,
            PublisherRooms::Own => (0..self.publishers)
                .filter(|p| p % self.rooms == room)
                .count() as u64,
        }
    }
}

/// What a subscriber saw.
#[derive(Debug)]
struct SubOutcome {
    tracker: SeqTracker,
    unrecognised: u64,
    last_ns: u64,
    error: Option<Error>,
}

/// How a publisher ended.
#[derive(Debug)]
struct PubOutcome {
    error: Option<Error>,
}

/// Runs the scenario with adapter `A`.
pub(crate) async fn run<A: Adapter>(args: &FanoutArgs, eps: Endpoints) -> Outcome {
    let c = &args.common;
    let deadline = Instant::now() + Duration::from_secs_f64(c.timeout);
    let mut progress = Progress::new();
    let rooms = args.rooms;
    let per_room = A::CONNECTION_PER_ROOM;
    let own = args.publisher_rooms == PublisherRooms::Own;
    let pub_conns: Vec<(usize, Vec<usize>)> = if own {
        (0..args.publishers).map(|p| (p, vec![p % rooms])).collect()
    } else if per_room {
        (0..args.publishers)
            .flat_map(|p| (0..rooms).map(move |r| (p, vec![r])))
            .collect()
    } else {
        (0..args.publishers)
            .map(|p| (p, (0..rooms).collect()))
            .collect()
    };
    let accounting = Accounting::choose(
        args.subscribers,
        args.publishers,
        args.messages,
        BITSET_BUDGET,
    );
    let multi = eps.nodes.len() > 1;
    // One URL: `publish_url` only when the publishers go to another server or URL. Several:
    // always (by default the first URL), as `url` is then a list.
    let publish_url = match (&eps.publish, multi) {
        (PublishTo::Elsewhere(_), _) => args.publish_url.clone(),
        (PublishTo::Node(k), true) => Some(
            args.publish_url
                .clone()
                .unwrap_or_else(|| eps.urls[*k].clone()),
        ),
        (PublishTo::Node(_), false) => None,
    };
    let publish_node = match eps.publish {
        PublishTo::Node(k) => Some(k),
        PublishTo::Elsewhere(_) => None,
    };
    let node_urls = eps.urls;
    let shared = Arc::new(Shared {
        publish_ep: match eps.publish {
            PublishTo::Node(k) => eps.nodes[k].clone(),
            PublishTo::Elsewhere(ep) => ep,
        },
        eps: eps.nodes,
        opts: AdapterOpts {
            scope: args.scope,
            fire_and_forget: args.window == 0,
        },
        handshakes: Semaphore::new(c.concurrency),
        publishers: args.publishers,
        messages: args.messages,
        size: args.size,
        // A publisher with one connection per room spreads its rate over them.
        rate: if per_room && !own {
            args.rate / rooms as f64
        } else {
            args.rate
        },
        window: args.window as u64,
        accounting,
        rooms,
        publisher_rooms: args.publisher_rooms,
        stopping: AtomicBool::new(false),
    });

    let mut report = Report::new("fanout", c.target, &c.url);
    report.publish_url = publish_url;
    report.subscribers = Some(args.subscribers);
    report.rooms = Some(rooms);
    report.publisher_rooms = Some(if own { "own" } else { "all" });
    report.publishers = Some(args.publishers);
    report.messages = Some(args.messages);
    report.size = Some(args.size);
    report.rate = Some(args.rate);
    if c.target == crate::Target::Switchboard {
        report.scope = Some(args.scope.name());
        report.window = Some(args.window);
    }
    report.connections = args.subscribers + pub_conns.len();
    report.threads = c.threads;
    report.source_ips = c.source_ips;
    report.loss_accounting = Some(accounting);

    // One sample per `--server-pid` (none, or one per node).
    let pids = c.server_pids();
    let rss = || {
        pids.iter()
            .map(|&p| sys::rss_kib(p))
            .collect::<Result<Vec<_>>>()
    };
    let rss_before = match rss() {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);

    // Subscribers.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut sub_slots = Vec::with_capacity(args.subscribers);
    let mut sub_tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let slot = Arc::new(Slot::default());
        sub_slots.push(slot.clone());
        sub_tasks.push(tokio::spawn(subscriber::<A>(
            shared.clone(),
            i,
            i % rooms,
            slot,
            ready_tx.clone(),
            stop_rx.clone(),
        )));
    }
    if let Err(e) = wait_ready(
        &mut ready_rx,
        args.subscribers,
        deadline,
        &mut progress,
        "subscribers",
    )
    .await
    {
        return Outcome::failed(e);
    }

    // Publishers.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut pub_slots = Vec::with_capacity(pub_conns.len());
    let mut pub_tasks = Vec::with_capacity(pub_conns.len());
    for (j, (p, rooms)) in pub_conns.into_iter().enumerate() {
        let slot = Arc::new(Slot::default());
        pub_slots.push(slot.clone());
        pub_tasks.push(tokio::spawn(publisher::<A>(
            shared.clone(),
            args.subscribers + j,
            p as u32,
            rooms,
            slot,
            ready_tx.clone(),
            go_rx.clone(),
            stop_rx.clone(),
        )));
    }
    if let Err(e) = wait_ready(
        &mut ready_rx,
        pub_slots.len(),
        deadline,
        &mut progress,
        "publishers",
    )
    .await
    {
        return Outcome::failed(e);
    }
    let rss_connected = match rss() {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };

    // Publish, and watch the deliveries. The servers' (and Redis's) CPU time is sampled now (they
    // are idle: the first publish is about to leave) and once the deliveries are over.
    let cpu = || {
        let servers = pids
            .iter()
            .map(|&p| sys::cpu_ns("--server-pid", p))
            .collect::<Result<Vec<_>>>()?;
        let redis = args
            .redis_pid
            .map(|p| sys::cpu_ns("--redis-pid", p))
            .transpose()?;
        Ok::<_, Error>((servers, redis))
    };
    let cpu_start = match cpu() {
        Ok(t) => t,
        Err(e) => return Outcome::failed(e),
    };
    let _ = go_tx.send(true);
    let expected: u64 = (0..args.subscribers)
        .map(|i| shared.senders_to(i % rooms) * args.messages)
        .sum();
    let total_sends: u64 = if own {
        args.publishers as u64 * args.messages
    } else {
        args.publishers as u64 * args.messages * rooms as u64
    };
    let drain_idle = Duration::from_secs_f64(args.drain_idle);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_total = 0;
    let mut last_change = Instant::now();
    let mut pubs_done_at: Option<Instant> = None;
    let started = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let delivered: u64 = sub_slots.iter().map(|s| s.count()).sum();
        if delivered != last_total {
            last_total = delivered;
            last_change = now;
        }
        let sent: u64 = pub_slots.iter().map(|s| s.count()).sum();
        let secs = now.duration_since(started).as_secs_f64().max(1e-3);
        progress.update(|| {
            format!(
                "sent {sent}/{total_sends}, delivered {delivered}/{expected} ({:.0} msgs/s)",
                delivered as f64 / secs
            )
        });
        if sub_slots.iter().all(|s| s.is_done()) {
            break;
        }
        if pub_slots.iter().all(|s| s.is_done()) {
            let since = *pubs_done_at.get_or_insert(now);
            if now.duration_since(since.max(last_change)) >= drain_idle {
                break;
            }
        }
        if now >= deadline {
            report.timed_out = true;
            break;
        }
    }
    progress.clear();
    let cpu_end = match cpu() {
        Ok(t) => t,
        Err(e) => return Outcome::failed(e),
    };
    let published: u64 = pub_slots.iter().map(|s| s.count()).sum();
    let rss_end = match rss() {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };
    shared.stopping.store(true, Relaxed);
    let _ = stop_tx.send(true);

    // Collect.
    let join_deadline = Instant::now() + Duration::from_secs(10);
    let subs = join_all(sub_tasks, join_deadline).await;
    let pubs = join_all(pub_tasks, join_deadline).await;
    let mut errors = ErrorTally::default();
    let (mut delivered, mut lost, mut duplicated, mut invalid) = (0, 0, 0, 0);
    let mut last_ns = 0;
    let n_nodes = shared.eps.len();
    let mut node_delivered = vec![0u64; n_nodes];
    for (i, s) in subs.iter().enumerate() {
        let Some(s) = s else { continue };
        node_delivered[i % n_nodes] += s.tracker.unique + s.tracker.duplicated;
        delivered += s.tracker.unique + s.tracker.duplicated;
        lost += s.tracker.lost();
        duplicated += s.tracker.duplicated;
        invalid += s.tracker.invalid + s.unrecognised;
        last_ns = last_ns.max(s.last_ns);
        if let Some(e) = &s.error {
            errors.add("subscriber", e);
        }
    }
    // A subscriber that did not finish in time counts as losing what it had not reported.
    let missing = subs.iter().filter(|s| s.is_none()).count();
    lost += subs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| shared.senders_to(i % rooms) * args.messages)
        .sum::<u64>();
    let mut publisher_failed = None;
    for p in pubs.iter().flatten() {
        if let Some(e) = &p.error {
            errors.add("publisher", e);
            publisher_failed.get_or_insert_with(|| e.clone());
        }
    }
    let first_ns = pub_slots
        .iter()
        .map(|s| s.first_ns.load(Relaxed))
        .filter(|&t| t > 0)
        .min();
    let pubs_done_ns = pub_slots.iter().map(|s| s.done_ns.load(Relaxed)).max();
    report.delivered = Some(delivered);
    report.expected = Some(expected);
    report.lost = Some(lost);
    report.duplicated = Some(duplicated);
    report.invalid = Some(invalid);
    if let Some(first) = first_ns {
        let elapsed = last_ns.saturating_sub(first) as f64 / 1e9;
        report.elapsed_s = round3(elapsed);
        if elapsed > 0.0 {
            report.msgs_per_sec = Some((delivered as f64 / elapsed).round());
        } else if let Some(done) = pubs_done_ns {
            // Nothing delivered: the run lasted as long as the publishing.
            report.elapsed_s = round3(done.saturating_sub(first) as f64 / 1e9);
        }
        if let Some(done) = pubs_done_ns.filter(|&d| d > first) {
            report.publish_s = Some(round3((done - first) as f64 / 1e9));
        }
    }
    report.disconnected = errors.total() + missing;
    report.errors = errors.top(5);
    // Each `--server-pid` is its `--url`'s server: it holds the subscribers connected there, and
    // the publishers when `--publish-url` is that node.
    let node_subs =
        |k: usize| args.subscribers / n_nodes + usize::from(k < args.subscribers % n_nodes);
    let node_pubs = |k: usize| {
        if publish_node == Some(k) {
            pub_slots.len()
        } else {
            0
        }
    };
    let held: usize = (0..n_nodes).map(|k| node_subs(k) + node_pubs(k)).sum();
    if rss_before.len() == n_nodes {
        let sum = |v: &[u64]| Some(v.iter().sum::<u64>());
        Rss::record(
            &mut report,
            (sum(&rss_before), sum(&rss_connected), sum(&rss_end)),
            held,
        );
    }
    let per_delivery =
        |ns: u64, n: u64| (n > 0).then(|| (ns as f64 / n as f64 * 10.0).round() / 10.0);
    let ((cpu_start, redis_start), (cpu_end, redis_end)) = (cpu_start, cpu_end);
    let used: Vec<u64> = cpu_start
        .iter()
        .zip(&cpu_end)
        .map(|(start, end)| end.saturating_sub(*start))
        .collect();
    if !used.is_empty() {
        let used_ns: u64 = used.iter().sum();
        report.server_cpu_s = Some(round3(used_ns as f64 / 1e9));
        report.server_ns_per_delivery = per_delivery(used_ns, delivered);
    }
    if let (Some(start), Some(end)) = (redis_start, redis_end) {
        let used_ns = end.saturating_sub(start);
        report.redis_cpu_s = Some(round3(used_ns as f64 / 1e9));
        report.redis_cpu_ns_per_publish = per_delivery(used_ns, published);
    }
    if multi {
        report.nodes = (0..n_nodes)
            .map(|k| {
                let connections = node_subs(k) + node_pubs(k);
                NodeReport {
                    url: node_urls[k].clone(),
                    pid: pids.get(k).copied(),
                    subscribers: node_subs(k),
                    publishers: node_pubs(k),
                    deliveries: node_delivered[k],
                    cpu_s: used.get(k).map(|&ns| round3(ns as f64 / 1e9)),
                    cpu_ns_per_delivery: used
                        .get(k)
                        .and_then(|&ns| per_delivery(ns, node_delivered[k])),
                    rss_kib_per_connection: match (rss_before.get(k), rss_connected.get(k)) {
                        (Some(&before), Some(&connected)) => Rss {
                            before,
                            connected,
                            end: rss_end.get(k).copied().unwrap_or(connected),
                        }
                        .per_connection(connections),
                        _ => None,
                    },
                }
            })
            .collect();
    }
    let failure = if report.timed_out {
        Some(Error(format!(
            "timed out after {} s: {delivered} of {expected} messages delivered",
            c.timeout
        )))
    } else {
        publisher_failed.map(|e| e.context("a publisher failed"))
    };
    Outcome {
        report: Some(report),
        failure,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Connects (bounded by the handshake semaphore), says hello, subscribes to `room` when asked;
/// subscriber `index` connects to `--url` (its URL `index` mod n), a publisher to `--publish-url`.
async fn setup<C: Conn, A: Adapter>(
    shared: &Shared,
    index: usize,
    room: usize,
    subscribe: bool,
) -> Result<(C, A)> {
    let _permit = shared
        .handshakes
        .acquire()
        .await
        .map_err(|_| Error::from("handshake semaphore closed"))?;
    let url_room = A::CONNECTION_PER_ROOM.then_some(room);
    let ep = if subscribe {
        &shared.eps[index % shared.eps.len()]
    } else {
        &shared.publish_ep
    };
    let (mut c, mut a) = adapters::open::<C, A>(ep, &shared.opts, index, url_room).await?;
    if subscribe {
        adapters::subscribe(&mut c, &mut a, room)
            .await
            .map_err(|e| e.context(format!("connection {index}: subscribe to room-{room}")))?;
    }
    Ok((c, a))
}

/// A subscriber: on its own frame reader ([`RawWs`]) from the handshake on, so that a delivery
/// costs a header parse and the payload scan, with no copy or allocation.
async fn subscriber<A: Adapter>(
    shared: Arc<Shared>,
    index: usize,
    room: usize,
    slot: Arc<Slot>,
    ready: mpsc::UnboundedSender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut tracker = SeqTracker::new(shared.publishers, shared.messages, shared.accounting)
        .with_senders(shared.senders_to(room));
    let (mut raw, mut a) = match setup::<RawWs, A>(&shared, index, room, true).await {
        Ok(c) => c,
        Err(e) => {
            slot.done.store(true, Relaxed);
            let _ = ready.send(Err(e.clone()));
            return SubOutcome {
                tracker,
                unrecognised: 0,
                last_ns: 0,
                error: Some(e),
            };
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let scanner = A::scanner();
    let mut seen = 0u64;
    let mut unrecognised = 0u64;
    let mut last_ns = 0u64;
    let mut complete = false;
    // One wait for the stop signal for the whole loop: registered once, not once per wakeup.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    // When the bytes being handled arrived: the end of the read that brought them. Every
    // message a read completes arrived at once; stamping each as the loop reaches it would
    // add the bench's own work on the ones before it (and a clock read per delivery).
    let mut now = now_ns();
    let error = loop {
        // Messages already buffered (read with the subscription's ack) first, then a read: as
        // much as the buffer takes, every complete message in it handled before the next.
        let res = adapters::dispatch_buffered(&mut raw, &mut a, &mut |ev| {
            if let Event::Delivery(bytes) = ev {
                seen += 1;
                last_ns = now;
                match scanner.scan(bytes) {
                    Some(st) => {
                        record_latency(now.saturating_sub(st.t));
                        tracker.record(st.p, st.s);
                    }
                    None => unrecognised += 1,
                }
            }
        });
        slot.count.store(seen, Relaxed);
        if !complete && tracker.complete() {
            complete = true;
            slot.done.store(true, Relaxed);
        }
        if let Err(e) = res {
            break Some(e);
        }
        if let Err(e) = adapters::send_replies(&mut raw, &mut a).await {
            break Some(e);
        }
        if shared.stopping.load(Relaxed) {
            break None;
        }
        let read = tokio::select! {
            biased;
            r = raw.fill() => r,
            _ = &mut stopped => break None,
        };
        if let Err(e) = read {
            break Some(e);
        }
        now = now_ns();
    };
    slot.done.store(true, Relaxed);
    // A close frame (or the answer to the server's, queued with the error), best effort.
    raw.close().await;
    SubOutcome {
        tracker,
        unrecognised,
        last_ns,
        error,
    }
}

#[allow(clippy::too_many_arguments)]
async fn publisher<A: Adapter>(
    shared: Arc<Shared>,
    index: usize,
    p: u32,
    rooms: Vec<usize>,
    slot: Arc<Slot>,
    ready: mpsc::UnboundedSender<Result<()>>,
    mut go: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> PubOutcome {
    let room0 = rooms.first().copied().unwrap_or(0);
    let (mut ws, mut a) = match setup::<Ws, A>(&shared, index, room0, false).await {
        Ok(c) => c,
        Err(e) => {
            slot.done.store(true, Relaxed);
            let _ = ready.send(Err(e.clone()));
            return PubOutcome { error: Some(e) };
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let result = tokio::select! {
        biased;
        // The run ended (timeout) before this publisher finished: the report says so.
        _ = stop.changed() => return PubOutcome { error: None },
        r = async {
            wait_go(&mut ws, &mut a, &mut go).await?;
            publish_all(&mut ws, &mut a, &shared, p, &rooms, &slot).await?;
            if let Some(m) = a.barrier() {
                ws.send(m).await?;
                adapters::wait_ack(&mut ws, &mut a).await?;
            }
            Ok(())
        } => r,
    };
    slot.done_ns.store(now_ns(), Relaxed);
    slot.done.store(true, Relaxed);
    if result.is_err() {
        return PubOutcome {
            error: result.err(),
        };
    }
    // Keep reading (pings, and on the plain broadcast server the other publishers' messages)
    // until the run ends.
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = next(&mut ws) => {
                let ok = match m {
                    Ok(m) => dispatch(&mut a, m, &mut |_| {}).is_ok()
                        && send_replies(&mut ws, &mut a).await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    return PubOutcome { error: None };
                }
            }
        }
    }
    adapters::close(ws).await;
    PubOutcome { error: None }
}

/// Reads (answering pings) until publishing may start.
async fn wait_go<A: Adapter>(ws: &mut Ws, a: &mut A, go: &mut watch::Receiver<bool>) -> Result<()> {
    loop {
        if *go.borrow_and_update() {
            return Ok(());
        }
        tokio::select! {
            biased;
            r = go.changed() => r.map_err(|_| Error::from("the run was abandoned"))?,
            m = next(ws) => {
                dispatch(a, m?, &mut |_| {})?;
                send_replies(ws, a).await?;
            }
        }
    }
}

/// Publishes message 0..M to each of `rooms` in turn, paced, within the ack window.
async fn publish_all<A: Adapter>(
    ws: &mut Ws,
    a: &mut A,
    shared: &Shared,
    p: u32,
    rooms: &[usize],
    slot: &Slot,
) -> Result<()> {
    let per_round = rooms.len().max(1) as u64;
    let total = shared.messages * per_round;
    // `--window 0`: publishes without ids, which the hub does not answer.
    let acks = A::ACKS_PUBLISHES && shared.window > 0;
    let window = if acks { shared.window } else { u64::MAX };
    let pacer = Pacer::new(shared.rate);
    let mut scratch = Vec::with_capacity(shared.size + 64);
    let (mut sent, mut acked) = (0u64, 0u64);
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let allowed = pacer.allowed();
        let mut batch = 0;
        while sent < total && sent - acked < window && sent < allowed && batch < WRITE_BATCH {
            let room = rooms[(sent % per_round) as usize];
            let s = sent / per_round;
            scratch.clear();
            let t = now_ns();
            payload::write(&mut scratch, shared.size, p, s, t);
            if sent == 0 {
                slot.first_ns.store(t.max(1), Relaxed);
            }
            ws.feed(a.publish(room, &scratch)).await?;
            sent += 1;
            batch += 1;
        }
        if batch > 0 {
            ws.flush().await?;
            slot.count.store(sent, Relaxed);
        }
        // Take in whatever has arrived (acks, pings) without waiting.
        while let Some(m) = next_ready(ws)? {
            dispatch(a, m, &mut |e| acked += u64::from(e == Event::Ack))?;
        }
        send_replies(ws, a).await?;
        let all_acked = !acks || acked >= total;
        if sent >= total && all_acked {
            return Ok(());
        }
        let open = sent < total && sent - acked < window;
        if open && sent < pacer.allowed() {
            continue;
        }
        // Wait for a frame (an ack), or for the pacer to allow the next message.
        let wake = if open { pacer.due(sent) } else { None };
        tokio::select! {
            biased;
            m = next(ws) => {
                dispatch(a, m?, &mut |e| acked += u64::from(e == Event::Ack))?;
                send_replies(ws, a).await?;
            }
            _ = sleep_until(wake.unwrap_or(far)), if wake.is_some() => {}
        }
    }
}
