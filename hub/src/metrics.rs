//! Prometheus metrics of the hub process.
//!
//! Every labelled series the hot paths touch is resolved once, here, into a plain counter (an
//! `Arc` around an atomic): counting a publish, a frame or a write is one relaxed atomic add, with
//! no label lookup, no lock and no allocation. Deliveries are counted once per room per publish
//! (the room adds its member count), never per recipient. Gauges that describe state the node
//! already holds (rooms) are read when scraped rather than kept in step.
//!
//! The metrics are process-wide, like the process metrics beside them: one hub per process.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use switchboard_admin::HttpRoute;
use switchboard_protocol::{close, Scope};

/// How a handshake ended, as the `result` label of `switchboard_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Accepted,
    NotFound,
    Malformed,
    Origin,
    Subprotocol,
    Auth,
    InvalidRoom,
    Forbidden,
    Draining,
    Limit,
    IpLimit,
}

impl Handshake {
    const ALL: [Handshake; 11] = [
        Handshake::Accepted,
        Handshake::NotFound,
        Handshake::Malformed,
        Handshake::Origin,
        Handshake::Subprotocol,
        Handshake::Auth,
        Handshake::InvalidRoom,
        Handshake::Forbidden,
        Handshake::Draining,
        Handshake::Limit,
        Handshake::IpLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Handshake::Accepted => "accepted",
            Handshake::NotFound => "not_found",
            Handshake::Malformed => "bad_handshake",
            Handshake::Origin => "origin",
            Handshake::Subprotocol => "subprotocol",
            Handshake::Auth => "auth",
            Handshake::InvalidRoom => "invalid_room",
            Handshake::Forbidden => "forbidden",
            Handshake::Draining => "draining",
            Handshake::Limit => "limit",
            Handshake::IpLimit => "ip_limit",
        }
    }
}

/// Where a publish came from, as the `source` label of `switchboard_messages_published_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A `switchboard.v1` client.
    Client,
    /// A relay member's message.
    Relay,
    /// The admin API.
    Admin,
    /// The HTTP publishing API.
    Http,
}

const SOURCES: [(Source, &str); 4] = [
    (Source::Client, "client"),
    (Source::Relay, "relay"),
    (Source::Admin, "admin"),
    (Source::Http, "http"),
];
const SCOPES: [Scope; 3] = [Scope::Worker, Scope::Node, Scope::Cluster];

/// Why a connection ended, as the `reason` label of `switchboard_disconnects_total`: the close
/// code the hub sent, or how the client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// The client sent a close frame.
    ClientClose,
    /// The connection ended without a close handshake (reset, EOF, write failure).
    ConnectionLost,
    /// The hub closed it with this code.
    Code(u16),
}

const DISCONNECT_REASONS: [&str; 13] = [
    "client_close",
    "connection_lost",
    "going_away",
    "protocol_error",
    "invalid_payload",
    "policy_violation",
    "too_big",
    "internal",
    "slow_consumer",
    "kicked",
    "token_expired",
    "heartbeat_timeout",
    "other",
];

impl Disconnect {
    fn label(self) -> &'static str {
        match self {
            Disconnect::ClientClose => "client_close",
            Disconnect::ConnectionLost => "connection_lost",
            Disconnect::Code(code) => match code {
                close::GOING_AWAY => "going_away",
                close::PROTOCOL_ERROR => "protocol_error",
                close::INVALID_PAYLOAD => "invalid_payload",
                close::POLICY_VIOLATION => "policy_violation",
                close::MESSAGE_TOO_BIG => "too_big",
                close::INTERNAL_ERROR => "internal",
                close::SLOW_CONSUMER => "slow_consumer",
                close::KICKED => "kicked",
                close::TOKEN_EXPIRED => "token_expired",
                close::HEARTBEAT_TIMEOUT => "heartbeat_timeout",
                _ => "other",
            },
        }
    }
}

/// Kinds of WebSocket frames received, as the `kind` label of `switchboard_frames_received_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Text,
    Binary,
    Continuation,
    Ping,
    Pong,
    Close,
}

const FRAME_KINDS: [(FrameKind, &str); 6] = [
    (FrameKind::Text, "text"),
    (FrameKind::Binary, "binary"),
    (FrameKind::Continuation, "continuation"),
    (FrameKind::Ping, "ping"),
    (FrameKind::Pong, "pong"),
    (FrameKind::Close, "close"),
];

/// Why a message did not reach a recipient, as the `reason` label of
/// `switchboard_messages_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drop {
    /// The delivery found the member's outbox full: the member is evicted (close 4000).
    SlowConsumer,
    /// Frames still queued for a session when it was evicted, discarded with it.
    Evicted,
    /// A relay message the cluster could not carry (Redis out of reach).
    Unavailable,
}

/// The hub's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: IntGaugeVec,
    handshakes: Vec<IntCounter>,
    rooms: IntGauge,
    ready: IntGauge,
    pub(crate) subscriptions: IntGauge,
    /// Indexed by `[scope][source]`.
    published: Vec<Vec<IntCounter>>,
    pub(crate) delivered: IntCounter,
    dropped_slow: IntCounter,
    dropped_evicted: IntCounter,
    dropped_unavailable: IntCounter,
    disconnects: Vec<IntCounter>,
    frames: Vec<IntCounter>,
    pub(crate) bytes_in: IntCounter,
    /// permessage-deflate: messages compressed (once per message, whatever the number of
    /// recipients) and client messages inflated.
    pub(crate) deflate_out: IntCounter,
    pub(crate) deflate_in: IntCounter,
    pub(crate) bytes_out: IntCounter,
    fanout_seconds: Histogram,
    /// The HTTP publishing API: request durations by route (in `HttpRoute::ALL` order) and
    /// refusals by route and reason (reasons are few and fixed, so the family is bounded).
    http_seconds: Vec<Histogram>,
    http_rejected: IntCounterVec,
    /// Cluster mode (all zero on a standalone node).
    pub(crate) cluster: ClusterMetrics,
    /// History rooms.
    pub(crate) history: HistoryMetrics,
    /// Abuse limits.
    pub(crate) limits: LimitMetrics,
}

/// What the abuse limits refused.
#[derive(Debug)]
pub(crate) struct LimitMetrics {
    /// Client messages refused for being over the session's rate limit, and sessions closed
    /// (1008) for staying far over it.
    pub(crate) rate_refused: IntCounter,
    pub(crate) rate_closed: IntCounter,
}

impl LimitMetrics {
    fn new(registry: &Registry) -> LimitMetrics {
        let rate = counter_family(
            registry,
            "switchboard_rate_limited_total",
            "Client messages over their session's rate limit, by action: refused (error \
             rate_limited, or dropped on relay and echo endpoints) or closed (the session, 1008).",
            "action",
        );
        LimitMetrics {
            rate_refused: rate.with_label_values(&["refused"]),
            rate_closed: rate.with_label_values(&["closed"]),
        }
    }
}

/// History rooms' metrics.
#[derive(Debug)]
pub(crate) struct HistoryMetrics {
    /// Rooms whose history was dropped to keep the node under `history_memory_bytes`.
    pub(crate) evicted: IntCounter,
    /// Bytes and messages of history held (standalone), read at scrape time.
    pub(crate) bytes: IntGauge,
    pub(crate) messages: IntGauge,
    /// Subscribes with `recover`, by whether every missed message could be replayed.
    pub(crate) recovered: IntCounter,
    pub(crate) not_recovered: IntCounter,
    /// Messages fetched from a Redis stream to fill a hole in a room's offsets.
    pub(crate) refetched: IntCounter,
}

impl HistoryMetrics {
    fn new(registry: &Registry) -> HistoryMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("{e}"));
            register(registry, Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("{e}"));
            register(registry, Box::new(g.clone()));
            g
        };
        let recoveries = counter_family(
            registry,
            "switchboard_recoveries_total",
            "Subscribes with recover, by result: recovered (every missed message replayed) or \
             lost (recovered:false).",
            "result",
        );
        HistoryMetrics {
            evicted: counter(
                "switchboard_history_evicted_total",
                "Rooms whose history was dropped to keep the node under history_memory_bytes.",
            ),
            bytes: gauge(
                "switchboard_history_bytes",
                "Bytes of room history held in memory (standalone), entries' overhead included.",
            ),
            messages: gauge(
                "switchboard_history_messages",
                "Messages of room history held in memory (standalone).",
            ),
            recovered: recoveries.with_label_values(&["recovered"]),
            not_recovered: recoveries.with_label_values(&["lost"]),
            refetched: counter(
                "switchboard_history_refetched_total",
                "Messages fetched from a room's Redis stream to fill a hole in its offsets.",
            ),
        }
    }
}

/// The cluster bridge's metrics.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    /// 1 while the link to a Redis instance (label `redis`: its index in `redis_url`) is up.
    pub(crate) connected: IntGaugeVec,
    pub(crate) messages_in: IntCounter,
    pub(crate) messages_out: IntCounter,
    pub(crate) publish_seconds: Histogram,
    pub(crate) lag_seconds: prometheus::Gauge,
    pub(crate) reconnects: IntCounter,
    pub(crate) gaps: IntCounter,
    /// Publishes waiting to be sent to a Redis instance (its queue holds 8192 at most).
    pub(crate) queued: IntGaugeVec,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> ClusterMetrics {
        let connected = IntGaugeVec::new(
            Opts::new(
                "switchboard_cluster_connected",
                "1 while this node's links to a Redis instance (by its index in redis_url) are up.",
            ),
            &["redis"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(registry, Box::new(connected.clone()));
        let messages = counter_family(
            registry,
            "switchboard_cluster_messages_total",
            "Cluster messages published to Redis (out) and received from it (in).",
            "direction",
        );
        let publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_cluster_publish_seconds",
                "Time from a cluster publish to Redis's reply.",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5,
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(registry, Box::new(publish_seconds.clone()));
        let lag_seconds = prometheus::Gauge::with_opts(Opts::new(
            "switchboard_cluster_lag_seconds",
            "Round trip of the node's last canary through Redis; while one is overdue, its age.",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        register(registry, Box::new(lag_seconds.clone()));
        let reconnects = IntCounter::new(
            "switchboard_cluster_reconnects_total",
            "Links to Redis lost and made again.",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(registry, Box::new(reconnects.clone()));
        let gaps = IntCounter::new(
            "switchboard_cluster_gaps_total",
            "gap frames sent: rooms whose subscription was lost and is back.",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(registry, Box::new(gaps.clone()));
        let queued = IntGaugeVec::new(
            Opts::new(
                "switchboard_cluster_queued",
                "Publishes waiting to be sent to a Redis instance, by its index in redis_url \
                 (at most 8192; a publish finding the queue full waits, 2 s at most).",
            ),
            &["redis"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(registry, Box::new(queued.clone()));
        ClusterMetrics {
            queued,
            connected,
            messages_in: messages.with_label_values(&["in"]),
            messages_out: messages.with_label_values(&["out"]),
            publish_seconds,
            lag_seconds,
            reconnects,
            gaps,
        }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn counter_family(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, Box::new(family.clone()));
    family
}

fn register(registry: &Registry, collector: Box<dyn prometheus::core::Collector>) {
    // Names and labels are constants of this file; a failure is a bug caught by its tests.
    if let Err(e) = registry.register(collector) {
        panic!("metric registration: {e}");
    }
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let connections = IntGaugeVec::new(
            Opts::new(
                "switchboard_connections",
                "Open WebSocket sessions, by endpoint.",
            ),
            &["endpoint"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(connections.clone()));
        let handshakes = counter_family(
            &registry,
            "switchboard_handshakes_total",
            "WebSocket handshakes, by result (accepted, or why they were refused).",
            "result",
        );
        let handshakes = Handshake::ALL
            .iter()
            .map(|h| handshakes.with_label_values(&[h.label()]))
            .collect();
        let rooms = IntGauge::new(
            "switchboard_rooms",
            "Rooms with at least one member on this node.",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(rooms.clone()));
        let ready = IntGauge::new(
            "switchboard_ready",
            "1 while this node is ready (what /readyz answers with 200), 0 while it drains or, \
             in cluster mode, its Redis link is down.",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(ready.clone()));
        let subscriptions = IntGauge::new(
            "switchboard_subscriptions",
            "Room memberships of sessions on this node (relay members included).",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(subscriptions.clone()));
        let published_family = IntCounterVec::new(
            Opts::new(
                "switchboard_messages_published_total",
                "Messages accepted for delivery, by scope and source (client, relay, admin).",
            ),
            &["scope", "source"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(published_family.clone()));
        let published = SCOPES
            .iter()
            .map(|scope| {
                SOURCES
                    .iter()
                    .map(|(_, source)| {
                        published_family.with_label_values(&[scope.as_str(), source])
                    })
                    .collect()
            })
            .collect();
        let delivered = IntCounter::new(
            "switchboard_messages_delivered_total",
            "Messages queued for a recipient session (one per recipient).",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(delivered.clone()));
        let dropped = counter_family(
            &registry,
            "switchboard_messages_dropped_total",
            "Messages that did not reach a recipient, by reason.",
            "reason",
        );
        let dropped_slow = dropped.with_label_values(&["slow_consumer"]);
        let dropped_evicted = dropped.with_label_values(&["evicted"]);
        let dropped_unavailable = dropped.with_label_values(&["unavailable"]);
        let disconnects_family = counter_family(
            &registry,
            "switchboard_disconnects_total",
            "Ended sessions, by reason (the close code the hub sent, or how the client left).",
            "reason",
        );
        let disconnects = DISCONNECT_REASONS
            .iter()
            .map(|r| disconnects_family.with_label_values(&[r]))
            .collect();
        let frames_family = counter_family(
            &registry,
            "switchboard_frames_received_total",
            "WebSocket frames received from clients, by kind.",
            "kind",
        );
        let frames = FRAME_KINDS
            .iter()
            .map(|(_, kind)| frames_family.with_label_values(&[kind]))
            .collect();
        let bytes = counter_family(
            &registry,
            "switchboard_bytes_total",
            "Bytes read from and written to WebSocket connections, by direction.",
            "direction",
        );
        let bytes_in = bytes.with_label_values(&["in"]);
        let deflate = counter_family(
            &registry,
            "switchboard_deflate_messages_total",
            "permessage-deflate, by direction: out, messages compressed (once per published \
             message and worker, shared by every member that negotiated compression); in, client \
             messages inflated.",
            "direction",
        );
        let deflate_out = deflate.with_label_values(&["out"]);
        let deflate_in = deflate.with_label_values(&["in"]);
        let bytes_out = bytes.with_label_values(&["out"]);
        let fanout_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_fanout_seconds",
                "Time from a publish being accepted to its last enqueue on this node.",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(fanout_seconds.clone()));
        let http_family = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "switchboard_http_request_seconds",
                "Duration of HTTP publishing requests, by route (a stream lasts as long as its body).",
            )
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
            ]),
            &["route"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(http_family.clone()));
        let http_seconds = HttpRoute::ALL
            .iter()
            .map(|r| http_family.with_label_values(&[r.label()]))
            .collect();
        let http_rejected = IntCounterVec::new(
            Opts::new(
                "switchboard_http_rejected_total",
                "Messages, lines, parts and requests the HTTP publishing API refused, by route and reason.",
            ),
            &["route", "reason"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        register(&registry, Box::new(http_rejected.clone()));
        let cluster = ClusterMetrics::new(&registry);
        let history = HistoryMetrics::new(&registry);
        let limits = LimitMetrics::new(&registry);
        #[cfg(target_os = "linux")]
        register(
            &registry,
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        );
        Metrics {
            registry,
            connections,
            handshakes,
            rooms,
            ready,
            subscriptions,
            published,
            delivered,
            dropped_slow,
            dropped_evicted,
            dropped_unavailable,
            disconnects,
            frames,
            bytes_in,
            bytes_out,
            deflate_out,
            deflate_in,
            fanout_seconds,
            http_seconds,
            http_rejected,
            cluster,
            history,
            limits,
        }
    }

    pub(crate) fn http_request_done(&self, route: HttpRoute, seconds: f64) {
        if let Some(i) = HttpRoute::ALL.iter().position(|r| *r == route) {
            self.http_seconds[i].observe(seconds);
        }
    }

    pub(crate) fn http_rejected(&self, route: HttpRoute, reason: &'static str) {
        self.http_rejected
            .with_label_values(&[route.label(), reason])
            .inc();
    }

    pub(crate) fn handshake(&self, result: Handshake) {
        if let Some(c) = Handshake::ALL.iter().position(|h| *h == result) {
            self.handshakes[c].inc();
        }
    }

    /// The gauge of open sessions on `endpoint`, for a session to hold for its whole life.
    pub(crate) fn connections(&self, endpoint: &str) -> IntGauge {
        self.connections.with_label_values(&[endpoint])
    }

    pub(crate) fn published(&self, scope: Scope, source: Source) {
        let s = SCOPES.iter().position(|x| *x == scope).unwrap_or(0);
        let o = SOURCES.iter().position(|(x, _)| *x == source).unwrap_or(0);
        self.published[s][o].inc();
    }

    pub(crate) fn dropped(&self, reason: Drop, n: u64) {
        match reason {
            Drop::SlowConsumer => self.dropped_slow.inc_by(n),
            Drop::Evicted => self.dropped_evicted.inc_by(n),
            Drop::Unavailable => self.dropped_unavailable.inc_by(n),
        }
    }

    pub(crate) fn disconnect(&self, reason: Disconnect) {
        let label = reason.label();
        if let Some(i) = DISCONNECT_REASONS.iter().position(|r| *r == label) {
            self.disconnects[i].inc();
        }
    }

    pub(crate) fn frame_received(&self, kind: FrameKind) {
        if let Some(i) = FRAME_KINDS.iter().position(|(k, _)| *k == kind) {
            self.frames[i].inc();
        }
    }

    /// The Prometheus text exposition, with `rooms` and `ready` read from the node at this moment.
    pub fn render(&self, rooms: usize, ready: bool) -> String {
        self.rooms.set(i64::try_from(rooms).unwrap_or(i64::MAX));
        self.ready.set(i64::from(ready));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Times one publish from acceptance to its last enqueue: every room it was handed to holds a
/// reference, and the last one to let go records the elapsed time. One allocation per publish.
#[derive(Debug)]
pub(crate) struct FanoutTimer {
    started: Instant,
}

impl FanoutTimer {
    /// A timer for a publish accepted at `started`, shared by the rooms it is handed to.
    pub(crate) fn since(started: Instant) -> Arc<FanoutTimer> {
        Arc::new(FanoutTimer { started })
    }

    /// Records a fan-out that is complete now (no room left to wait for): no allocation.
    pub(crate) fn observe(started: Instant) {
        metrics()
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

impl std::ops::Drop for FanoutTimer {
    fn drop(&mut self) {
        metrics()
            .fanout_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_family_is_exposed_with_its_labels() {
        let m = metrics();
        m.handshake(Handshake::Origin);
        m.published(Scope::Node, Source::Admin);
        m.disconnect(Disconnect::Code(close::TOKEN_EXPIRED));
        m.frame_received(FrameKind::Binary);
        m.dropped(Drop::SlowConsumer, 2);
        let _gauge = m.connections("default");
        drop(FanoutTimer::since(Instant::now()));
        let text = m.render(7, true);
        for needle in [
            "switchboard_connections{endpoint=\"default\"}",
            "switchboard_handshakes_total{result=\"origin\"} 1",
            "switchboard_rooms 7",
            "switchboard_ready 1",
            "switchboard_subscriptions",
            "switchboard_messages_published_total{scope=\"node\",source=\"admin\"} 1",
            "switchboard_messages_delivered_total",
            // Other unit tests (rooms evicting members) count drops too: no exact value here.
            "switchboard_messages_dropped_total{reason=\"slow_consumer\"}",
            "switchboard_disconnects_total{reason=\"token_expired\"} 1",
            "switchboard_frames_received_total{kind=\"binary\"} 1",
            "switchboard_bytes_total{direction=\"in\"}",
            "switchboard_fanout_seconds_count 1",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn every_close_code_the_hub_sends_has_its_own_reason() {
        for code in [
            close::GOING_AWAY,
            close::PROTOCOL_ERROR,
            close::INVALID_PAYLOAD,
            close::POLICY_VIOLATION,
            close::MESSAGE_TOO_BIG,
            close::INTERNAL_ERROR,
            close::SLOW_CONSUMER,
            close::KICKED,
            close::TOKEN_EXPIRED,
            close::HEARTBEAT_TIMEOUT,
        ] {
            let label = Disconnect::Code(code).label();
            assert_ne!(label, "other", "{code}");
            assert!(DISCONNECT_REASONS.contains(&label));
        }
    }
}
