//! History and presence in cluster mode: nodes joined through a real `redis-server`, offsets
//! assigned in Redis, recovery on another node, a lost subscription link filled from the
//! stream, a Redis that lost its data, presence and join/leave across nodes, and a node killed.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use switchboard_tests::{
    publish_numbered, recv_numbered, subscribe_recovering, Client, RedisServer, TestHub,
};
use tokio::time::{sleep, timeout};

const ROOMS: &str = "[[rooms]]\npattern = \"chat:*\"\nhistory_size = 1000\n\n[[rooms]]\npattern = \"lobby:*\"\npresence = true\njoin_leave = true\nleave_debounce = 1.5\n";

fn node(redis: &RedisServer, id: &str) -> TestHub {
    TestHub::builder()
        .set("redis_url", redis.url())
        .set("node_id", id)
        .config(ROOMS)
        .start()
}

/// Waits until every node is ready (its Redis link and canary are up).
async fn ready(nodes: &[&TestHub]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes {
        while n.admin("GET", "/readyz", None).await.status != 200 {
            assert!(Instant::now() < deadline, "a node did not become ready");
            sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_recovers_what_it_missed_on_another_node_exactly_once_in_order() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    ready(&[&a, &b, &c]).await;
    let mut member = Client::connect(&a).await;
    let ack = subscribe_recovering(&mut member, "chat:x", None).await;
    assert_eq!(ack["offset"], 0, "{ack}");
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    let mut publisher = Client::connect(&b).await;
    let (_, last) = publish_numbered(&mut publisher, "chat:x", 1, 5).await;
    assert_eq!(last, json!({"op":"ack","id":5,"offset":5,"epoch":epoch}));
    let got = recv_numbered(&mut member, "chat:x", 5).await;
    assert_eq!(got, (1..=5).map(|i| (i, i)).collect::<Vec<_>>());
    drop(member);

    publish_numbered(&mut publisher, "chat:x", 6, 500).await;
    let mut back = Client::connect(&c).await;
    let ack = subscribe_recovering(&mut back, "chat:x", Some((&epoch, 5))).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":1,"offset":505,"epoch":epoch,"recovered":true})
    );
    publisher
        .send(json!({"op":"publish","room":"chat:x","data":{"n":506}}))
        .await;
    let got = recv_numbered(&mut back, "chat:x", 501).await;
    assert_eq!(got, (6..=506).map(|i| (i, i)).collect::<Vec<_>>());
    back.expect_silence(Duration::from_millis(300)).await;

    // History reads the stream, from any node.
    let mut reader = Client::connect(&a).await;
    let h = reader
        .request(json!({"op":"history","room":"chat:x","limit":2,"id":3}))
        .await;
    assert_eq!(h["offset"], 506, "{h}");
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [505, 506]);

    // Too old (the stream keeps 1000): recovered:false, with the position.
    publish_numbered(&mut publisher, "chat:x", 507, 1200).await;
    let mut late = Client::connect(&b).await;
    let ack = subscribe_recovering(&mut late, "chat:x", Some((&epoch, 5))).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":1,"offset":1706,"epoch":epoch,"recovered":false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_link_is_filled_from_the_stream_in_order_without_a_gap() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    ready(&[&a, &b]).await;
    let mut member = Client::connect(&a).await;
    subscribe_recovering(&mut member, "chat:link", None).await;
    let mut publisher = Client::connect(&b).await;
    const N: u64 = 3000;
    let publishing = tokio::spawn(async move {
        for i in 1..=N {
            let ack = publisher
                .request(json!({"op":"publish","room":"chat:link","data":{"n":i},"id":i}))
                .await;
            assert_eq!(ack["op"], "ack", "{ack}");
            if i % 100 == 0 {
                sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // Node a's subscription link (named by the node) is cut, twice, while messages flow.
    for _ in 0..2 {
        sleep(Duration::from_millis(150)).await;
        let clients = redis.command(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        let id = clients
            .lines()
            .find(|l| l.contains("name=switchboard:a:subscriptions"))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .unwrap_or_else(|| panic!("node a's link in {clients}"))
            .to_owned();
        assert_eq!(redis.command(&["CLIENT", "KILL", "ID", &id]), "1");
    }
    let mut got = Vec::with_capacity(N as usize);
    while got.len() < N as usize {
        let m = timeout(Duration::from_secs(15), member.recv())
            .await
            .expect("every message in time");
        assert_eq!(m["op"], "message", "no gap frame in a history room: {m}");
        got.push(m["offset"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "every message, in order, once"
    );
    publishing.await.unwrap();
    member.expect_silence(Duration::from_millis(300)).await;
    let metrics = a.admin("GET", "/metrics", None).await;
    let refetched: u64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_history_refetched_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(refetched > 0, "the holes were filled from the stream");
    eprintln!("{refetched} messages fetched from the stream after the links were cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_data_gives_a_new_epoch_and_recovery_across_it_is_refused() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "a");
    ready(&[&a]).await;
    let mut member = Client::connect(&a).await;
    let ack = subscribe_recovering(&mut member, "chat:flush", None).await;
    let old = ack["epoch"].as_str().unwrap().to_owned();
    let mut publisher = Client::connect(&a).await;
    publish_numbered(&mut publisher, "chat:flush", 1, 3).await;
    assert_eq!(recv_numbered(&mut member, "chat:flush", 3).await.len(), 3);

    redis.restart();
    ready(&[&a]).await;
    // The first message after: a new epoch; the member is told its history is gone.
    let ack = publisher
        .request(json!({"op":"publish","room":"chat:flush","data":{"n":1},"id":9}))
        .await;
    let new = ack["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "{ack}");
    assert_eq!(ack["offset"], 1);
    let mut frames = Vec::new();
    while frames.last().is_none_or(|f: &Value| f["op"] != "message") {
        frames.push(
            timeout(Duration::from_secs(10), member.recv())
                .await
                .unwrap(),
        );
    }
    assert!(frames.iter().any(|f| f["op"] == "gap"), "{frames:?}");
    assert_eq!(frames.last().unwrap()["epoch"], new.as_str());

    let mut back = Client::connect(&a).await;
    let ack = subscribe_recovering(&mut back, "chat:flush", Some((&old, 3))).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":1,"offset":1,"epoch":new,"recovered":false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_join_leave_span_the_nodes_and_a_quick_return_is_not_announced() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    ready(&[&a, &b, &c]).await;
    let mut watcher = Client::connect(&a).await;
    subscribe_recovering(&mut watcher, "lobby:1", None).await;
    let me = watcher.session().to_owned();
    let join = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(join, json!({"op":"join","room":"lobby:1","session":me}));

    let mut other = Client::connect(&b).await;
    subscribe_recovering(&mut other, "lobby:1", None).await;
    let them = other.session().to_owned();
    let join = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(join, json!({"op":"join","room":"lobby:1","session":them}));

    let mut third = Client::connect(&c).await;
    subscribe_recovering(&mut third, "lobby:1", None).await;
    let join = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(join["session"], third.session());

    let list = watcher
        .request(json!({"op":"presence","room":"lobby:1","id":2}))
        .await;
    let mut members: Vec<(String, String)> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["session"].as_str().unwrap().to_owned(),
                m["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    let mut expected = vec![
        (me.clone(), "a".to_owned()),
        (them.clone(), "b".to_owned()),
        (third.session().to_owned(), "c".to_owned()),
    ];
    expected.sort();
    assert_eq!(members, expected, "{list}");
    let refused = watcher
        .request(json!({"op":"presence","room":"chat:1","id":3}))
        .await;
    assert_eq!(refused["code"], "unsupported");

    drop(other);
    let leave = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(leave, json!({"op":"leave","room":"lobby:1","session":them}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_back_within_the_debounce_produces_no_events_and_a_killed_nodes_members_leave() {
    let redis = RedisServer::start();
    let secret = "0123456789abcdef0123456789abcdef";
    let start = |id: &str| {
        TestHub::builder()
            .set("redis_url", redis.url())
            .set("node_id", id)
            .set("token_secret", secret)
            .config(ROOMS)
            .start()
    };
    let (a, b) = (start("a"), start("b"));
    ready(&[&a, &b]).await;
    let url = |hub: &TestHub, user: &str| {
        let token = switchboard_tests::sign_token(
            secret.as_bytes(),
            &json!({"sub":user,"exp":switchboard_tests::unix_now() + 600,"subscribe":["*"],"publish":["*"]}),
        );
        format!("{}?token={token}", hub.ws_url())
    };
    let mut watcher = Client::open_json(&url(&a, "watcher"), &[]).await.unwrap();
    subscribe_recovering(&mut watcher, "lobby:2", None).await;
    let own = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(own["op"], "join");

    let mut bob = Client::open_json(&url(&b, "bob"), &[]).await.unwrap();
    subscribe_recovering(&mut bob, "lobby:2", None).await;
    let join = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(join["op"], "join");
    assert_eq!(join["user"], "bob");

    // Bob's connection drops and he is back within the debounce, on the other node.
    drop(bob);
    sleep(Duration::from_millis(300)).await;
    let mut bob = Client::open_json(&url(&a, "bob"), &[]).await.unwrap();
    subscribe_recovering(&mut bob, "lobby:2", None).await;
    watcher.expect_silence(Duration::from_millis(2500)).await;

    // A node killed outright: its members leave within a minute, announced by the survivors.
    let mut carol = Client::open_json(&url(&b, "carol"), &[]).await.unwrap();
    subscribe_recovering(&mut carol, "lobby:2", None).await;
    let join = timeout(Duration::from_secs(5), watcher.recv())
        .await
        .unwrap();
    assert_eq!(join["user"], "carol");
    let killed_at = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &b.pid().to_string()])
        .status()
        .unwrap()
        .success());
    // Asked with pings, so that each read waits a moment only.
    let mut leave = Value::Null;
    for k in 0..40 {
        watcher.send(json!({"op":"ping","id":k})).await;
        loop {
            let f = watcher.recv().await;
            if f["op"] == "pong" {
                break;
            }
            leave = f;
        }
        if !leave.is_null() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no leave within a minute"
        );
        sleep(Duration::from_millis(1500)).await;
    }
    assert_eq!(leave["op"], "leave", "{leave}");
    assert_eq!(leave["user"], "carol");
    eprintln!(
        "a killed node's member left after {:?}",
        killed_at.elapsed()
    );
    let list = watcher
        .request(json!({"op":"presence","room":"lobby:2","id":4}))
        .await;
    let users: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert!(!users.contains(&"carol"), "{list}");
    assert!(
        users.contains(&"bob") && users.contains(&"watcher"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_recover_200_messages_each_across_three_nodes_at_once() {
    let redis = RedisServer::start();
    let nodes = [node(&redis, "a"), node(&redis, "b"), node(&redis, "c")];
    ready(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let mut publisher = Client::connect(&nodes[0]).await;
    let (_, first) = publish_numbered(&mut publisher, "chat:mass", 1, 200).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(first["offset"], 200);

    const CLIENTS: usize = 2000;
    let mut clients = Vec::with_capacity(CLIENTS);
    for batch in 0..CLIENTS / 100 {
        let hub = &nodes[batch % 3];
        clients.extend(join_all((0..100).map(|_| Client::connect(hub))).await);
    }
    let started = Instant::now();
    join_all(clients.iter_mut().map(|c| {
        let epoch = epoch.clone();
        async move {
            let ack = subscribe_recovering(c, "chat:mass", Some((&epoch, 0))).await;
            assert_eq!(ack["recovered"], true, "{ack}");
            let got = recv_numbered(c, "chat:mass", 200).await;
            assert_eq!(got, (1..=200).map(|i| (i, i)).collect::<Vec<_>>());
        }
    }))
    .await;
    eprintln!(
        "{CLIENTS} clients on 3 nodes recovered 200 messages each in {:?}",
        started.elapsed()
    );
    for n in &nodes {
        let metrics = n.admin("GET", "/metrics", None).await;
        let evicted = metrics
            .body
            .lines()
            .find(|l| l.starts_with("switchboard_disconnects_total{reason=\"slow_consumer\"}"))
            .unwrap_or_default()
            .to_owned();
        assert!(evicted.is_empty() || evicted.ends_with(" 0"), "{evicted}");
    }
}

/// A history read whose sessions all went away while it waited for Redis still ends (and
/// frees its place among the node's reads in flight): clients that vanish in the middle of a
/// recovering subscribe, more of them than reads may be in flight, do not leave the node unable
/// to read a room's history for everyone after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_whose_sessions_vanished_still_end_and_later_subscribes_are_answered() {
    let redis = RedisServer::start();
    let a = TestHub::builder()
        .set("redis_url", redis.url())
        .set("node_id", "a")
        // Sessions silent for two heartbeats (1 s, well within a read's 5 s) are timed out.
        .set("heartbeat", 0.5)
        .config(ROOMS)
        .start();
    ready(&[&a]).await;
    // The room is subscribed in Redis before it freezes: the subscribes below go straight to
    // their reads.
    let mut stays = Client::connect(&a).await;
    let ack = subscribe_recovering(&mut stays, "chat:v", None).await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();

    redis.pause();
    // More than the node's reads in flight (32), each a read of its own (a different offset).
    let mut gone = Vec::new();
    for i in 0..48u64 {
        let mut c = Client::connect(&a).await;
        c.send(json!({"op":"subscribe","room":"chat:v","id":1,
            "recover":{"epoch":epoch,"offset":i + 1000}}))
            .await;
        gone.push(c);
    }
    // Their reads wait for Redis; the clients vanish, and the node's heartbeat finds it out.
    sleep(Duration::from_millis(300)).await;
    drop(gone);
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let body = a.admin("GET", "/metrics", None).await.body;
        if switchboard_tests::metric_value(&body, "switchboard_connections") <= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the vanished clients' sessions did not end"
        );
        sleep(Duration::from_millis(100)).await;
    }
    redis.resume();

    // Redis answers the reads started above (none is left unpolled), and a new one is answered.
    let mut later = Client::connect(&a).await;
    later
        .send(json!({"op":"subscribe","room":"chat:v","id":7,
            "recover":{"epoch":epoch,"offset":0}}))
        .await;
    // Answered at once, or else the session, waiting, misses two heartbeats and is closed.
    let answer = timeout(Duration::from_secs(8), later.recv_message())
        .await
        .expect("an answer or a close in time");
    let tokio_tungstenite::tungstenite::Message::Text(text) = answer else {
        panic!("a recovering subscribe after the vanished ones was not answered: {answer:?}");
    };
    let ack: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(ack["id"], 7, "{ack}");
    drop(stays);
}
