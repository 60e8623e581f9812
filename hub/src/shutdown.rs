//! The drain: stop accepting, then close every session with 1001 "going away", spread evenly over
//! `shutdown_window` so that thousands of clients do not all reconnect in the same millisecond.

use std::{sync::Arc, time::Duration};

use actix_web::dev::ServerHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::{messages::GoAway, node::Node};

/// How long closed sessions get to flush their close frames before the server stops.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn drain(node: &Arc<Node>, handle: &ServerHandle) {
    node.start_draining();
    handle.pause().await;
    let sessions: Vec<_> = node.sessions.iter().map(|e| e.value().clone()).collect();
    let window = node.config.shutdown_window;
    tracing::info!(
        sessions = sessions.len(),
        window_secs = window.as_secs_f64(),
        "draining"
    );
    let start = Instant::now();
    let n = sessions.len().max(1) as f64;
    for (i, addr) in sessions.iter().enumerate() {
        sleep_until(start + window.mul_f64(i as f64 / n)).await;
        // Bounded: one per session, once.
        addr.do_send(GoAway);
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
