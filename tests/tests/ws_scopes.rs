//! Publish scopes, ordering and room membership across the workers of one real hub.
//!
//! A hub runs 2 workers; actix spreads connections over them, and each client learns its worker
//! from `welcome.worker`. Absence of a delivery is proven with a later marker publish whenever
//! the protocol's ordering guarantee (one publisher, one room) makes that sound.

#![allow(clippy::unwrap_used)]

use std::{collections::HashSet, time::Duration};

use serde_json::{json, Value};
use switchboard_tests::{covers_both_workers, spread_clients, Client, TestHub};

/// Subscribes every client to `room`.
async fn subscribe_all(clients: &mut [Client], room: &str) {
    for c in clients.iter_mut() {
        c.subscribe(room).await;
    }
}

/// The next frame, which must be a `message` in `room` from `from`; returns its data.
async fn recv_message(c: &mut Client, room: &str, from: &str) -> Value {
    let m = c.recv().await;
    assert_eq!(m["op"], "message", "{m}");
    assert_eq!(m["room"], room, "{m}");
    assert_eq!(m["from"], from, "{m}");
    m["data"].clone()
}

/// Publishes without a `scope` field, waiting for the ack.
async fn publish_without_scope(c: &mut Client, room: &str, data: Value) {
    let r = c
        .request(json!({"op":"publish","room":room,"data":data,"id":5}))
        .await;
    assert_eq!(r, json!({"op":"ack","id":5}));
}

#[tokio::test]
async fn worker_scope_reaches_only_the_publishers_worker() {
    let hub = TestHub::builder().set("workers", 2).start();
    let mut members = spread_clients(&hub, 12).await;
    subscribe_all(&mut members, "scoped").await;
    let mut publisher = Client::connect(&hub).await;
    let home = publisher.worker();
    let from = publisher.session().to_owned();
    assert!(members.iter().any(|m| m.worker() == home));
    assert!(members.iter().any(|m| m.worker() != home));

    publisher
        .publish("scoped", json!({"kind":"worker"}), "worker")
        .await;
    // Same publisher, same room: every member sees this after the worker message, if it got one.
    publisher
        .publish("scoped", json!({"kind":"node-marker"}), "node")
        .await;

    for m in &mut members {
        let first = recv_message(m, "scoped", &from).await;
        if m.worker() == home {
            assert_eq!(
                first,
                json!({"kind":"worker"}),
                "member on the publisher's worker {home}"
            );
            let second = recv_message(m, "scoped", &from).await;
            assert_eq!(second, json!({"kind":"node-marker"}));
        } else {
            assert_eq!(
                first,
                json!({"kind":"node-marker"}),
                "member on worker {} got the worker-scoped message of worker {home}",
                m.worker()
            );
        }
    }
}

#[tokio::test]
async fn node_scope_reaches_every_worker() {
    let hub = TestHub::start();
    let mut members = spread_clients(&hub, 6).await;
    subscribe_all(&mut members, "everywhere").await;
    let mut publisher = Client::connect(&hub).await;
    let from = publisher.session().to_owned();
    publisher
        .publish("everywhere", json!({"n":1}), "node")
        .await;
    for m in &mut members {
        assert_eq!(
            recv_message(m, "everywhere", &from).await,
            json!({"n":1}),
            "worker {}",
            m.worker()
        );
    }
}

#[tokio::test]
async fn cluster_scope_is_node_wide_without_a_cluster() {
    let hub = TestHub::start();
    let mut members = spread_clients(&hub, 6).await;
    subscribe_all(&mut members, "wide").await;
    let mut publisher = Client::connect(&hub).await;
    let from = publisher.session().to_owned();
    publisher.publish("wide", json!("cluster"), "cluster").await;
    // No scope at all means `cluster`.
    publish_without_scope(&mut publisher, "wide", json!("default")).await;
    for m in &mut members {
        assert_eq!(
            recv_message(m, "wide", &from).await,
            json!("cluster"),
            "worker {}",
            m.worker()
        );
        assert_eq!(
            recv_message(m, "wide", &from).await,
            json!("default"),
            "worker {}",
            m.worker()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_publisher_arrive_in_order() {
    const COUNT: u64 = 2_000;
    let hub = TestHub::start();
    let mut members = spread_clients(&hub, 4).await;
    subscribe_all(&mut members, "ordered").await;
    let mut publisher = Client::connect(&hub).await;
    let from = publisher.session().to_owned();

    // Members read while the burst is sent, as real clients do.
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            let from = from.clone();
            tokio::spawn(async move {
                for seq in 0..COUNT {
                    let data = recv_message(&mut m, "ordered", &from).await;
                    assert_eq!(data, json!({"seq":seq}), "member on worker {}", m.worker());
                }
                m
            })
        })
        .collect();

    // Pipelined: every publish is sent before any ack is read.
    for seq in 0..COUNT {
        publisher
            .send(
                json!({"op":"publish","room":"ordered","data":{"seq":seq},"scope":"node","id":seq}),
            )
            .await;
    }
    for seq in 0..COUNT {
        // Answers come in request order.
        assert_eq!(publisher.recv().await, json!({"op":"ack","id":seq}));
    }

    let mut workers = HashSet::new();
    for r in readers {
        let mut m = r.await.unwrap();
        workers.insert(m.worker());
        // Nothing beyond the burst, and the session is still open (not evicted).
        assert_eq!(
            m.request(json!({"op":"ping","id":1})).await,
            json!({"op":"pong","id":1})
        );
    }
    assert_eq!(workers, HashSet::from([0, 1]));
}

#[tokio::test]
async fn a_publisher_need_not_be_a_member() {
    let hub = TestHub::start();
    let mut members = spread_clients(&hub, 4).await;
    subscribe_all(&mut members, "open").await;
    let mut outsider = Client::connect(&hub).await;
    let from = outsider.session().to_owned();
    outsider
        .publish("open", json!({"hello":"from outside"}), "node")
        .await;
    for m in &mut members {
        assert_eq!(
            recv_message(m, "open", &from).await,
            json!({"hello":"from outside"})
        );
    }
    // Not a member, so it does not get its own message.
    outsider.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unsubscribed_session_stops_receiving() {
    let hub = TestHub::start();
    let mut members = spread_clients(&hub, 6).await;
    subscribe_all(&mut members, "leaving").await;
    let mut publisher = Client::connect(&hub).await;
    let from = publisher.session().to_owned();
    let (leaver, stayers) = members.split_first_mut().unwrap();

    assert_eq!(
        leaver
            .request(json!({"op":"unsubscribe","room":"leaving","id":2}))
            .await,
        json!({"op":"ack","id":2})
    );
    publisher
        .publish("leaving", json!("while away"), "node")
        .await;
    // Once every remaining member has it, no room on any worker still holds it: rejoining now
    // cannot pick it up, so the next frame the leaver sees after rejoining proves what it missed.
    for m in stayers.iter_mut() {
        assert_eq!(recv_message(m, "leaving", &from).await, json!("while away"));
    }
    leaver.subscribe("leaving").await;
    publisher.publish("leaving", json!("marker"), "node").await;
    assert_eq!(
        recv_message(leaver, "leaving", &from).await,
        json!("marker"),
        "the unsubscribed session received a message published while it was away"
    );
    for m in stayers.iter_mut() {
        assert_eq!(recv_message(m, "leaving", &from).await, json!("marker"));
    }
}

#[tokio::test]
async fn rooms_are_independent() {
    let hub = TestHub::start();
    let clients = spread_clients(&hub, 8).await;
    let (mut in_a, mut in_b): (Vec<Client>, Vec<Client>) = {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, c) in clients.into_iter().enumerate() {
            if i % 2 == 0 {
                a.push(c)
            } else {
                b.push(c)
            }
        }
        (a, b)
    };
    subscribe_all(&mut in_a, "a").await;
    subscribe_all(&mut in_b, "b").await;
    let mut publisher = Client::connect(&hub).await;
    let from = publisher.session().to_owned();

    publisher.publish("a", json!("only a"), "node").await;
    publisher.publish("b", json!("only b"), "node").await;
    for m in &mut in_a {
        assert_eq!(recv_message(m, "a", &from).await, json!("only a"));
    }
    for m in &mut in_b {
        assert_eq!(recv_message(m, "b", &from).await, json!("only b"));
    }

    // Every member of each room has its message, so no room queue still holds one: joining the
    // other room now cannot pick up the earlier message there. Markers in both rooms must be
    // the next two frames of everyone.
    subscribe_all(&mut in_a, "b").await;
    subscribe_all(&mut in_b, "a").await;
    publisher.publish("a", json!("marker a"), "node").await;
    publisher.publish("b", json!("marker b"), "node").await;
    for m in in_a.iter_mut().chain(in_b.iter_mut()) {
        let mut got = HashSet::new();
        for _ in 0..2 {
            let f = m.recv().await;
            assert_eq!(f["op"], "message", "{f}");
            got.insert((f["room"].as_str().unwrap().to_owned(), f["data"].clone()));
        }
        assert_eq!(
            got,
            HashSet::from([
                ("a".to_owned(), json!("marker a")),
                ("b".to_owned(), json!("marker b")),
            ]),
            "a session got a message for a room it was not in (worker {})",
            m.worker()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_emptied_and_rejoined_still_delivers() {
    let hub = TestHub::start();
    let members = spread_clients(&hub, 8).await;
    // Every client cycles concurrently, so the room is emptied and recreated on both workers
    // many times, with joins and leaves on the two workers racing each other.
    let cycling: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            tokio::spawn(async move {
                for _ in 0..10 {
                    m.subscribe("phoenix").await;
                    assert_eq!(
                        m.request(json!({"op":"unsubscribe","room":"phoenix","id":3}))
                            .await,
                        json!({"op":"ack","id":3})
                    );
                }
                m.subscribe("phoenix").await;
                m
            })
        })
        .collect();
    let mut members = Vec::new();
    for c in cycling {
        members.push(c.await.unwrap());
    }
    assert!(covers_both_workers(&members));

    let mut publisher = Client::connect(&hub).await;
    let from = publisher.session().to_owned();
    publisher.publish("phoenix", json!("risen"), "node").await;
    publisher.publish("phoenix", json!("marker"), "node").await;
    for m in &mut members {
        assert_eq!(
            recv_message(m, "phoenix", &from).await,
            json!("risen"),
            "worker {}",
            m.worker()
        );
        // Exactly once: the next frame is the marker, not a duplicate.
        assert_eq!(
            recv_message(m, "phoenix", &from).await,
            json!("marker"),
            "worker {}",
            m.worker()
        );
    }
}
