//! Node-wide counters. Plain atomics with relaxed ordering: they are read for logs and metrics,
//! never to make decisions, and they are bumped once per publish or per room, never per recipient.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one node.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions accepted since start.
    pub sessions_opened: AtomicU64,
    /// Sessions ended since start.
    pub sessions_closed: AtomicU64,
    /// Handshakes refused because the node was at `max_connections`.
    pub refused_at_limit: AtomicU64,
    /// Publishes accepted from clients.
    pub published: AtomicU64,
    /// Frames handed to session queues.
    pub delivered: AtomicU64,
    /// Sessions closed because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Frames not delivered because the recipient had already been evicted as slow.
    pub dropped_slow: AtomicU64,
    /// Sessions closed for breaking the WebSocket protocol.
    pub protocol_errors: AtomicU64,
    /// Sessions closed for silence.
    pub heartbeat_timeouts: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
