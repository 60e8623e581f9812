//! The drain: refuse new sessions, then close every session with 1001 "going away", spread evenly
//! over `shutdown_window` so that thousands of clients do not all reconnect in the same
//! millisecond.
//!
//! The listener keeps accepting during the drain so that a reconnecting client is answered 503 at
//! once (by the WebSocket route, which checks the draining flag) instead of waiting in the kernel's
//! backlog until the listener closes.

use std::{collections::HashSet, sync::Arc, time::Duration};

use actix_web::dev::ServerHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::{messages::Command, node::Node};

/// How long closed sessions get to flush their close frames before the server stops.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn drain(node: &Arc<Node>, handle: &ServerHandle) {
    node.start_draining();
    // A node that is going away leaves the cluster's registry now rather than at its expiry.
    if let Some(cluster) = &node.cluster {
        if let Err(e) = cluster.deregister().await {
            tracing::warn!(error = %e, "leaving the cluster's registry failed");
        }
    }
    let sessions: Vec<_> = node
        .sessions
        .iter()
        .map(|e| (*e.key(), e.value().commands.clone()))
        .collect();
    let window = node.config.shutdown_window;
    tracing::info!(
        sessions = sessions.len(),
        window_secs = window.as_secs_f64(),
        "draining"
    );
    let start = Instant::now();
    let n = sessions.len().max(1) as f64;
    let mut told = HashSet::with_capacity(sessions.len());
    for (i, (id, addr)) in sessions.iter().enumerate() {
        sleep_until(start + window.mul_f64(i as f64 / n)).await;
        // Bounded: one per session, once (the `told` set).
        addr.do_send(Command::GoAway);
        told.insert(*id);
    }
    // Sessions whose handshake passed just before the flag was set.
    let late: Vec<_> = node
        .sessions
        .iter()
        .filter(|e| !told.contains(e.key()))
        .map(|e| e.value().commands.clone())
        .collect();
    for addr in late {
        addr.do_send(Command::GoAway);
    }
    let deadline = Instant::now() + FLUSH_GRACE;
    while !node.sessions.is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    if !node.sessions.is_empty() {
        tracing::warn!(
            left = node.sessions.len(),
            "sessions still open after the drain; closing"
        );
    }
    handle.stop(true).await;
    tracing::info!("stopped");
}
