//! The soak: a two-node cluster and one Redis under clients that subscribe, unsubscribe,
//! publish, ask for history and presence, send junk and vanish, at random, for `SOAK_SECONDS`
//! (run by `scripts/soak`; ignored in a plain `cargo test`). Afterwards nothing of theirs may be
//! left: no panic, no room, no subscription, no connection, no Redis channel or presence entry,
//! memory back near where it stood after a warm-up; and a member that stayed all along got every
//! message published to its room, in order.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use switchboard_tests::{Client, RedisServer, TestHub};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

const ROOMS: &str = "[[rooms]]\npattern = \"soak:h*\"\nhistory_size = 100\n\n[[rooms]]\npattern = \"soak:p*\"\npresence = true\njoin_leave = true\nleave_debounce = 0.5\n";

fn node(redis: &RedisServer, id: &str) -> TestHub {
    TestHub::builder()
        .set("redis_url", redis.url())
        .set("node_id", id)
        .set("max_message_bytes", 16384)
        .config(ROOMS)
        .start()
}

/// A small fast generator, seeded per client: the soak is random but reproducible per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the churning clients did, for the report.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    frames: AtomicU64,
    refused: AtomicU64,
}

/// One churning client: sessions one after another until `deadline`, each a random run of
/// requests and junk, ended by a close or by dropping the socket.
async fn churn(urls: Vec<String>, seed: u64, deadline: Instant, tally: Arc<Tally>) {
    let mut rng = Rng(seed | 1);
    while Instant::now() < deadline {
        let url = &urls[rng.below(urls.len() as u64) as usize];
        let Ok(Ok((mut ws, _))) = timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await
        else {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        let steps = 1 + rng.below(40);
        for step in 0..steps {
            let room = match rng.below(3) {
                0 => format!("soak:h{}", rng.below(20)),
                1 => format!("soak:p{}", rng.below(20)),
                _ => format!("soak:r{}", rng.below(40)),
            };
            let id = step + 1;
            let frame = match rng.below(12) {
                0..=2 => Message::text(json!({"op":"subscribe","room":room,"id":id}).to_string()),
                3 => Message::text(json!({"op":"unsubscribe","room":room,"id":id}).to_string()),
                4..=6 => {
                    let scope = ["worker", "node", "cluster"][rng.below(3) as usize];
                    let data = "x".repeat(rng.below(300) as usize);
                    Message::text(
                        json!({"op":"publish","room":room,"scope":scope,"data":data,"id":id})
                            .to_string(),
                    )
                }
                7 => Message::text(json!({"op":"history","room":room,"id":id}).to_string()),
                8 => Message::text(json!({"op":"presence","room":room,"id":id}).to_string()),
                9 => Message::text(
                    json!({"op":"subscribe","room":room,"id":id,
                        "recover":{"epoch":"x","offset":rng.below(50)}})
                    .to_string(),
                ),
                10 => Message::text(
                    ["{", "null", "[1,2", "{\"op\":7}", "\u{0}"][rng.below(5) as usize],
                ),
                _ => Message::binary(vec![0u8; rng.below(64) as usize]),
            };
            if ws.send(frame).await.is_err() {
                break;
            }
            tally.frames.fetch_add(1, Ordering::Relaxed);
            // Read what has arrived, briefly; a client that reads little is realistic too.
            while let Ok(Some(Ok(_))) = timeout(Duration::from_millis(2), ws.next()).await {}
        }
        if rng.below(2) == 0 {
            let _ = ws.close(None).await;
        }
        // Else the socket is dropped as it is: an abrupt disconnect.
        drop(ws);
    }
}

/// A metric's value (summed over its label sets).
async fn metric(hub: &TestHub, name: &str) -> f64 {
    let body = hub.admin("GET", "/metrics", None).await.body;
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `churners` clients against the nodes for `seconds`.
async fn churn_for(urls: &[String], churners: u64, seconds: f64, salt: u64) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..churners)
        .map(|i| {
            let (urls, tally) = (urls.to_vec(), tally.clone());
            tokio::spawn(churn(
                urls,
                (salt << 32) ^ (i * 0x9e37_79b9 + 7),
                deadline,
                tally,
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: run by scripts/soak (SOAK_SECONDS, SOAK_CLIENTS)"]
async fn a_cluster_under_random_abuse_leaves_nothing_behind_and_loses_nothing() {
    let seconds: f64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let churners: u64 = std::env::var("SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    for n in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while n.admin("GET", "/readyz", None).await.status != 200 {
            assert!(Instant::now() < deadline, "a node did not become ready");
            sleep(Duration::from_millis(50)).await;
        }
    }
    let urls = vec![a.ws_url(), b.ws_url()];

    // Warm-up: the allocators' and tables' working size, the baseline for memory.
    churn_for(&urls, churners, (seconds / 4.0).clamp(3.0, 60.0), 1).await;
    sleep(Duration::from_secs(2)).await;
    let baseline = (a.rss_kib(), b.rss_kib());

    // A steady member on a, a steady publisher on b: every message must arrive, in order.
    let mut member = Client::connect(&a).await;
    member.subscribe("soak:steady").await;
    let mut publisher = Client::connect(&b).await;
    let steady_end = Instant::now() + Duration::from_secs_f64(seconds);
    let steady = tokio::spawn(async move {
        let mut n = 0u64;
        while Instant::now() < steady_end {
            n += 1;
            let ack = publisher
                .request(json!({"op":"publish","room":"soak:steady","data":n,"id":n}))
                .await;
            assert_eq!(
                ack,
                json!({"op":"ack","id":n}),
                "the steady publisher's publish {n}"
            );
            sleep(Duration::from_millis(5)).await;
        }
        let ack = publisher
            .request(json!({"op":"publish","room":"soak:steady","data":"end","id":0}))
            .await;
        assert_eq!(ack, json!({"op":"ack","id":0}));
        (publisher, n)
    });
    let reading = tokio::spawn(async move {
        let mut got = 0u64;
        loop {
            let m = member.recv().await;
            assert_eq!(m["op"], "message", "{m}");
            if m["data"] == "end" {
                return (member, got);
            }
            got += 1;
            assert_eq!(m["data"], got, "the steady member's message {got}");
        }
    });

    let started = Instant::now();
    let tally = churn_for(&urls, churners, seconds, 2).await;
    let (publisher, total) = steady.await.unwrap();
    let (member, got) = timeout(Duration::from_secs(30), reading)
        .await
        .expect("the steady member's messages in time")
        .unwrap();
    assert_eq!(got, total, "every steady message, in order");
    eprintln!(
        "soak: {:.0} s, {churners} clients, {} sessions, {} frames ({} handshakes refused); \
         steady room: {total} messages, all delivered in order",
        started.elapsed().as_secs_f64(),
        tally.sessions.load(Ordering::Relaxed),
        tally.frames.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    drop(member);
    drop(publisher);

    // Everything of theirs is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut left = Vec::new();
        for (n, hub) in [("a", &a), ("b", &b)] {
            for gauge in [
                "switchboard_connections",
                "switchboard_subscriptions",
                "switchboard_rooms",
            ] {
                let v = metric(hub, gauge).await;
                if v != 0.0 {
                    left.push(format!("{n}: {gauge} {v}"));
                }
            }
        }
        let channels = redis.command(&["PUBSUB", "CHANNELS", "switchboard:room:*"]);
        if !channels.trim().is_empty() {
            left.push(format!("Redis channels: {channels}"));
        }
        let presence = redis.command(&["KEYS", "switchboard:presence:*"]);
        for key in presence.lines().filter(|k| !k.is_empty()) {
            let n = redis.command(&["HLEN", key]);
            if n != "0" {
                left.push(format!("{key}: {n} members"));
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        sleep(Duration::from_millis(250)).await;
    }
    let rooms = a.admin("GET", "/admin/rooms", None).await.json();
    assert_eq!(rooms["items"], json!([]), "{rooms}");
    for (n, hub) in [("a", &a), ("b", &b)] {
        let logs = hub.logs().join("\n");
        assert!(!logs.contains("panicked"), "node {n} panicked:\n{logs}");
    }
    let after = (a.rss_kib(), b.rss_kib());
    eprintln!("soak: RSS after warm-up {baseline:?} KiB, after the soak {after:?} KiB");
    for (before, now) in [(baseline.0, after.0), (baseline.1, after.1)] {
        assert!(
            now <= before + before / 10 + 8 * 1024,
            "RSS {now} KiB against {before} KiB after the warm-up"
        );
    }
}
