//! `connect`: open N connections (at most `--concurrency` handshakes in flight), each up when
//! the server's greeting has arrived (Switchboard `welcome`, NATS `INFO`, Socket.IO `40{…}`,
//! plain WebSocket: the 101); report handshakes per second and the server's memory per idle
//! connection; hold them `--hold` seconds (answering pings), then close them.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch, Semaphore},
    time::Instant,
};

use crate::{
    adapters::{self, dispatch, next, send_replies, Adapter, AdapterOpts},
    control::{join_all, wait_ready, ErrorTally},
    error::{Error, Result},
    net::{Endpoint, Ws},
    progress::Progress,
    report::{Report, Rss},
    stats::{new_histogram, percentiles},
    sys, ConnectArgs, Outcome, PublishScope,
};

/// Runs the scenario with adapter `A`.
pub(crate) async fn run<A: Adapter>(args: &ConnectArgs, ep: Endpoint) -> Outcome {
    let c = &args.common;
    let deadline = Instant::now() + Duration::from_secs_f64(c.timeout);
    let mut progress = Progress::new();
    let mut report = Report::new("connect", c.target, &c.url);
    report.connections = args.connections;
    report.threads = c.threads;
    report.source_ips = c.source_ips;
    report.hold_s = Some(args.hold);

    let rss = |pid: Option<u32>| pid.map(sys::rss_kib).transpose();
    let rss_before = match rss(c.server_pid()) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };

    let ep = Arc::new(ep);
    let handshakes = Arc::new(Semaphore::new(c.concurrency));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            tokio::spawn(connection::<A>(
                ep.clone(),
                handshakes.clone(),
                i,
                ready_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let times = match wait_ready(
        &mut ready_rx,
        args.connections,
        deadline,
        &mut progress,
        "connections",
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return Outcome::failed(e),
    };
    let up = started.elapsed().as_secs_f64();
    let rss_connected = match rss(c.server_pid()) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };
    report.elapsed_s = (up * 1000.0).round() / 1000.0;
    if up > 0.0 {
        report.handshakes_per_sec = Some((args.connections as f64 / up).round());
    }
    let mut h = new_histogram();
    for ns in times {
        h.saturating_record(ns.max(1));
    }
    report.handshake_us = percentiles(&h);

    // Hold.
    let hold_until = Instant::now() + Duration::from_secs_f64(args.hold);
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= hold_until {
            break;
        }
        if now >= deadline {
            timed_out = true;
            break;
        }
        progress.update(|| {
            format!(
                "holding {} connections: {:.1} s left",
                args.connections,
                hold_until.duration_since(now).as_secs_f64()
            )
        });
        tokio::time::sleep_until(
            hold_until
                .min(deadline)
                .min(now + Duration::from_millis(200)),
        )
        .await;
    }
    progress.clear();
    let rss_end = match rss(c.server_pid()) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };
    let _ = stop_tx.send(true);
    let ended = join_all(tasks, Instant::now() + Duration::from_secs(10)).await;
    let mut errors = ErrorTally::default();
    for e in ended.iter().flatten().flatten() {
        errors.add("connection", e);
    }
    report.disconnected = errors.total();
    report.errors = errors.top(5);
    Rss::record(
        &mut report,
        (rss_before, rss_connected, rss_end),
        args.connections,
    );
    report.timed_out = timed_out;
    let failure = timed_out.then(|| {
        Error(format!(
            "timed out after {} s while holding the connections",
            c.timeout
        ))
    });
    Outcome {
        report: Some(report),
        failure,
    }
}

/// One connection: up, then held until `stop`; returns the error that ended it early, if any.
async fn connection<A: Adapter>(
    ep: Arc<Endpoint>,
    handshakes: Arc<Semaphore>,
    index: usize,
    ready: mpsc::UnboundedSender<Result<u64>>,
    mut stop: watch::Receiver<bool>,
) -> Option<Error> {
    let opts = AdapterOpts {
        scope: PublishScope::Node,
        fire_and_forget: false,
    };
    let opened = async {
        let _permit = handshakes
            .acquire()
            .await
            .map_err(|_| Error::from("handshake semaphore closed"))?;
        let t0 = Instant::now();
        let (ws, a) = adapters::open::<Ws, A>(&ep, &opts, index, None).await?;
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Ok::<_, Error>((ws, a, ns))
    }
    .await;
    let (mut ws, mut a) = match opened {
        Ok((ws, a, ns)) => {
            let _ = ready.send(Ok(ns));
            (ws, a)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return None;
        }
    };
    drop(ready);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = next(&mut ws) => {
                let r = match m {
                    Ok(m) => dispatch(&mut a, m, &mut |_| {}),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    return Some(e);
                }
                if let Err(e) = send_replies(&mut ws, &mut a).await {
                    return Some(e);
                }
            }
        }
    }
    adapters::close(ws).await;
    None
}
