//! Cluster mode: hub processes joined through real `redis-server` processes.
//!
//! Every test starts its own Redis and its own nodes (2 workers each), so tests run in parallel
//! and may kill, pause or restart the Redis they use. Room `R` travels on channel
//! `<redis_prefix>:room:R`; a node subscribes to it while it has a member of `R`.

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde_json::{json, Value};
use switchboard_tests::{spread_clients, Client, HttpReply, RedisServer, TestHub};
use tokio::time::{sleep, timeout};

/// How long a member must then receive nothing for a delivery to count as exactly once.
const SILENCE: Duration = Duration::from_millis(300);

/// A node of the cluster behind `redis_url` (one URL or several, comma-separated).
fn node(redis_url: &str, id: &str) -> TestHub {
    TestHub::builder()
        .set("redis_url", redis_url)
        .set("node_id", id)
        .start()
}

/// A node with its own channel prefix.
fn node_with_prefix(redis_url: &str, id: &str, prefix: &str) -> TestHub {
    TestHub::builder()
        .set("redis_url", redis_url)
        .set("redis_prefix", prefix)
        .set("node_id", id)
        .start()
}

/// The next frame, which must be a `message` in `room`; returns its data.
async fn recv_data(c: &mut Client, room: &str) -> Value {
    let m = c.recv().await;
    assert_eq!(m["op"], "message", "{m}");
    assert_eq!(m["room"], room, "{m}");
    m["data"].clone()
}

/// [`recv_data`] that fails after `within` rather than the harness's longer step.
async fn recv_data_within(c: &mut Client, room: &str, within: Duration) -> Value {
    timeout(within, recv_data(c, room))
        .await
        .unwrap_or_else(|_| panic!("no message in {room} within {within:?}"))
}

/// Publishes with this scope (none: the field is left out) and returns the reply frame. The
/// client must not be a member of `room`, or a delivery could come before the reply.
async fn publish_reply(
    c: &mut Client,
    room: &str,
    data: Value,
    scope: Option<&str>,
    id: u64,
) -> Value {
    let mut frame = json!({"op":"publish","room":room,"data":data,"id":id});
    if let Some(scope) = scope {
        frame["scope"] = json!(scope);
    }
    c.request(frame).await
}

fn assert_unavailable(reply: &Value, id: u64) {
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    assert!(reply["message"].is_string(), "{reply}");
}

/// Subscribers of `channel` on `redis`, as `PUBSUB NUMSUB` counts them.
fn numsub(redis: &RedisServer, channel: &str) -> u64 {
    let reply = redis.command(&["PUBSUB", "NUMSUB", channel]);
    let (name, count) = reply
        .split_once('\n')
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {reply:?}"));
    assert_eq!(name, channel);
    count.parse().unwrap()
}

/// Polls until `channel` has `want` subscribers on `redis`.
async fn wait_numsub(redis: &RedisServer, channel: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n = numsub(redis, channel);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} still has {n} subscribers after {within:?}, not {want}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/readyz` every 200 ms until it answers `status`; returns that reply.
async fn wait_readyz(hub: &TestHub, status: u16, within: Duration) -> HttpReply {
    let deadline = Instant::now() + within;
    loop {
        let reply = hub.admin_as(None, "GET", "/readyz", None).await;
        if reply.status == status {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {} {} after {within:?}, not {status}",
            reply.status,
            reply.body
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// A 503 of `/readyz` must say why, in a form other than the ready one.
fn assert_unready_body(reply: &HttpReply) {
    let body = reply.json();
    assert!(body["status"].is_string(), "{body}");
    assert_ne!(body["status"], "ready", "{body}");
    assert!(body["reason"].is_string(), "{body}");
}

/// The data of the next `message` in `room` whose data is not a probe of the outage (which
/// may or may not be delivered, depending on when the node noticed), counting the `gap` frames
/// for `room` read on the way. `None` when nothing of the kind comes within `within`.
async fn next_after_outage(
    c: &mut Client,
    room: &str,
    within: Duration,
    gaps: &mut u32,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let f = tokio::time::timeout_at(deadline, c.recv()).await.ok()?;
        match f["op"].as_str() {
            Some("gap") => {
                assert_eq!(f["room"], room, "{f}");
                *gaps += 1;
            }
            Some("message") => {
                assert_eq!(f["room"], room, "{f}");
                if f["data"].get("probe").is_none() {
                    return Some(f["data"].clone());
                }
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_publish_reaches_a_member_on_another_node_exactly_once() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut member = Client::connect(&a).await;
    member.subscribe("r").await;
    let mut publisher = Client::connect(&b).await;

    publisher.publish("r", json!({"n":1}), "cluster").await;
    assert_eq!(recv_data(&mut member, "r").await, json!({"n":1}));
    member.expect_silence(SILENCE).await;

    // No scope at all means `cluster`, in a cluster too.
    let r = publish_reply(&mut publisher, "r", json!({"n":2}), None, 2).await;
    assert_eq!(r, json!({"op":"ack","id":2}));
    assert_eq!(recv_data(&mut member, "r").await, json!({"n":2}));
    member.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_worker_scopes_stay_on_the_publishers_node() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut remote = Client::connect(&a).await;
    remote.subscribe("r").await;
    let mut locals = spread_clients(&b, 2).await;
    for m in &mut locals {
        m.subscribe("r").await;
    }
    let mut publisher = Client::connect(&b).await;
    let home = publisher.worker();

    publisher.publish("r", json!("node"), "node").await;
    publisher.publish("r", json!("worker"), "worker").await;
    for m in &mut locals {
        assert_eq!(recv_data(m, "r").await, json!("node"));
        if m.worker() == home {
            assert_eq!(recv_data(m, "r").await, json!("worker"));
        }
    }
    remote.expect_silence(SILENCE).await;

    // The remote member is subscribed and reachable: a cluster publish after the other two is
    // the first thing it gets.
    publisher.publish("r", json!("marker"), "cluster").await;
    assert_eq!(recv_data(&mut remote, "r").await, json!("marker"));
    for m in &mut locals {
        assert_eq!(
            recv_data(m, "r").await,
            json!("marker"),
            "worker {}",
            m.worker()
        );
    }
    remote.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_the_publishing_node_get_its_cluster_publish_exactly_once() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    // Members on both workers of the publishing node, the publisher itself among them: a node
    // that delivered locally and again when Redis echoes the publish back would show here.
    let mut locals = spread_clients(&b, 2).await;
    for m in &mut locals {
        m.subscribe("r").await;
    }
    let mut remote = Client::connect(&a).await;
    remote.subscribe("r").await;
    let mut publisher = Client::connect(&b).await;
    publisher.subscribe("r").await;

    publisher
        .publish("r", json!({"once":true}), "cluster")
        .await;
    for m in locals
        .iter_mut()
        .chain([&mut remote, &mut publisher].into_iter())
    {
        assert_eq!(recv_data(m, "r").await, json!({"once":true}));
        m.expect_silence(SILENCE).await;
    }
}

/// Publishes `n` messages with cluster scope, the `seq`-th with data `data(seq)` and id `seq`,
/// keeping at most `window` unacked; the acks must come in publish order.
async fn publish_pipelined(
    publisher: &mut Client,
    room: &str,
    n: u64,
    window: u64,
    data: impl Fn(u64) -> Value,
) {
    let mut acked = 0;
    for seq in 0..n {
        publisher
            .send(json!({"op":"publish","room":room,"data":data(seq),"scope":"cluster","id":seq}))
            .await;
        while seq + 1 - acked > window {
            assert_eq!(publisher.recv().await, json!({"op":"ack","id":acked}));
            acked += 1;
        }
    }
    while acked < n {
        assert_eq!(publisher.recv().await, json!({"op":"ack","id":acked}));
        acked += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_sees_the_same_order_of_two_publishers_on_two_nodes() {
    const EACH: u64 = 5_000;
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let c = node(&redis.url(), "c");
    // Members on the publishing nodes too: a node that delivered its own publishes before they
    // went round through Redis would give its members another order.
    let mut members = vec![
        Client::connect(&a).await,
        Client::connect(&a).await,
        Client::connect(&b).await,
        Client::connect(&c).await,
    ];
    for m in &mut members {
        m.subscribe("order").await;
    }
    let mut pb = Client::connect(&b).await;
    let mut pc = Client::connect(&c).await;

    let run = async {
        // Members read while the publishers send, as real clients do.
        let readers: Vec<_> = members
            .into_iter()
            .map(|mut m| {
                tokio::spawn(async move {
                    let mut seen = Vec::with_capacity(2 * EACH as usize);
                    while seen.len() < 2 * EACH as usize {
                        let data = recv_data(&mut m, "order").await;
                        seen.push((
                            data["p"].as_str().unwrap().to_owned(),
                            data["seq"].as_u64().unwrap(),
                        ));
                    }
                    m.expect_silence(SILENCE).await;
                    seen
                })
            })
            .collect();
        let publishers = [
            tokio::spawn(async move {
                publish_pipelined(
                    &mut pb,
                    "order",
                    EACH,
                    256,
                    |seq| json!({"p":"b","seq":seq}),
                )
                .await
            }),
            tokio::spawn(async move {
                publish_pipelined(
                    &mut pc,
                    "order",
                    EACH,
                    256,
                    |seq| json!({"p":"c","seq":seq}),
                )
                .await
            }),
        ];
        for p in join_all(publishers).await {
            p.unwrap();
        }
        join_all(readers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let seen = timeout(Duration::from_secs(60), run)
        .await
        .expect("10,000 messages did not reach every member within 60 s");

    let expected: Vec<u64> = (0..EACH).collect();
    for (i, list) in seen.iter().enumerate() {
        for p in ["b", "c"] {
            let seqs: Vec<u64> = list
                .iter()
                .filter(|(q, _)| q == p)
                .map(|(_, s)| *s)
                .collect();
            assert!(
                seqs == expected,
                "member {i}: publisher {p}'s messages lost or reordered"
            );
        }
    }
    for (i, list) in seen.iter().enumerate().skip(1) {
        let first_difference = list.iter().zip(&seen[0]).position(|(x, y)| x != y);
        assert_eq!(
            first_difference, None,
            "member {i} and member 0 saw different orders"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_ack_means_publishes_from_other_nodes_arrive() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut member = Client::connect(&a).await;
    let mut publisher = Client::connect(&b).await;
    // A new room each time, so that the node's subscription is always the one just made.
    for i in 0..200u64 {
        let room = format!("fresh-{i}");
        member.subscribe(&room).await;
        publisher.publish(&room, json!(i), "cluster").await;
        assert_eq!(
            recv_data_within(&mut member, &room, Duration::from_secs(5)).await,
            json!(i),
            "room {room}"
        );
    }
    member.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_local_member_unsubscribing_unsubscribes_the_node() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let channel = "switchboard:room:lobby";
    assert_eq!(numsub(&redis, channel), 0);
    let mut first = Client::connect(&a).await;
    first.subscribe("lobby").await;
    assert_eq!(numsub(&redis, channel), 1);
    let mut second = Client::connect(&a).await;
    second.subscribe("lobby").await;

    let r = first
        .request(json!({"op":"unsubscribe","room":"lobby","id":2}))
        .await;
    assert_eq!(r, json!({"op":"ack","id":2}));
    // One member is left: the node stays subscribed and still receives.
    sleep(SILENCE).await;
    assert!(numsub(&redis, channel) >= 1);
    let mut publisher = Client::connect(&b).await;
    publisher.publish("lobby", json!("still"), "cluster").await;
    assert_eq!(recv_data(&mut second, "lobby").await, json!("still"));

    let r = second
        .request(json!({"op":"unsubscribe","room":"lobby","id":3}))
        .await;
    assert_eq!(r, json!({"op":"ack","id":3}));
    wait_numsub(&redis, channel, 0, Duration::from_secs(2)).await;
    first.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_local_member_disconnecting_unsubscribes_the_node() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let channel = "switchboard:room:lobby";
    let mut first = Client::connect(&a).await;
    first.subscribe("lobby").await;
    assert_eq!(numsub(&redis, channel), 1);
    let mut second = Client::connect(&a).await;
    second.subscribe("lobby").await;

    drop(first);
    sleep(SILENCE).await;
    assert!(numsub(&redis, channel) >= 1);
    let mut publisher = Client::connect(&b).await;
    publisher.publish("lobby", json!("still"), "cluster").await;
    assert_eq!(recv_data(&mut second, "lobby").await, json!("still"));

    drop(second);
    wait_numsub(&redis, channel, 0, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_carry_the_configured_prefix() {
    let redis = RedisServer::start();
    let a = node_with_prefix(&redis.url(), "a", "t1");
    let b = node_with_prefix(&redis.url(), "b", "t1");
    let mut member = Client::connect(&a).await;
    member.subscribe("lobby").await;
    assert_eq!(numsub(&redis, "t1:room:lobby"), 1);
    assert_eq!(numsub(&redis, "switchboard:room:lobby"), 0);

    let mut publisher = Client::connect(&b).await;
    publisher.publish("lobby", json!("hello"), "cluster").await;
    assert_eq!(recv_data(&mut member, "lobby").await, json!("hello"));

    let r = member
        .request(json!({"op":"unsubscribe","room":"lobby","id":2}))
        .await;
    assert_eq!(r, json!({"op":"ack","id":2}));
    wait_numsub(&redis, "t1:room:lobby", 0, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_cluster_publishes_are_unavailable_until_it_returns() {
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut remote = Client::connect(&a).await;
    remote.subscribe("r").await;
    let mut local = Client::connect(&b).await;
    local.subscribe("r").await;
    let mut publisher = Client::connect(&b).await;
    publisher.publish("r", json!("before"), "cluster").await;
    assert_eq!(recv_data(&mut remote, "r").await, json!("before"));
    assert_eq!(recv_data(&mut local, "r").await, json!("before"));
    for hub in [&a, &b] {
        wait_readyz(hub, 200, Duration::from_secs(5)).await;
    }

    redis.kill();
    // The node may take a moment to notice; until then a publish may still be acked.
    let noticed_by = Instant::now() + Duration::from_secs(5);
    let mut id = 100;
    loop {
        id += 1;
        let r = publish_reply(
            &mut publisher,
            "r",
            json!({"probe":id}),
            Some("cluster"),
            id,
        )
        .await;
        if r["op"] == "error" {
            assert_unavailable(&r, id);
            break;
        }
        assert_eq!(r, json!({"op":"ack","id":id}));
        assert!(
            Instant::now() < noticed_by,
            "cluster publishes still acked 5 s after Redis was killed"
        );
        sleep(Duration::from_millis(100)).await;
    }
    // Once noticed, a cluster publish is refused, never acked and lost; the default scope too.
    for scope in [Some("cluster"), None, Some("cluster")] {
        id += 1;
        let r = publish_reply(&mut publisher, "r", json!({"probe":id}), scope, id).await;
        assert_unavailable(&r, id);
    }
    // The node itself needs no Redis.
    publisher.publish("r", json!("local"), "node").await;
    let mut local_gaps = 0;
    assert_eq!(
        next_after_outage(&mut local, "r", Duration::from_secs(5), &mut local_gaps).await,
        Some(json!("local"))
    );
    for hub in [&a, &b] {
        let reply = wait_readyz(hub, 503, Duration::from_secs(6)).await;
        assert_unready_body(&reply);
    }

    redis.restart();
    // No client acts: the nodes reconnect and resubscribe on their own, and the member, which
    // may have missed messages meanwhile, is told so with a gap before deliveries resume.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gaps = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "no cross-node delivery 10 s after Redis restarted"
        );
        id += 1;
        let r = publish_reply(
            &mut publisher,
            "r",
            json!({"after":id}),
            Some("cluster"),
            id,
        )
        .await;
        if r["op"] == "error" {
            assert_unavailable(&r, id);
            sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(r, json!({"op":"ack","id":id}));
        let got = next_after_outage(&mut remote, "r", Duration::from_millis(500), &mut gaps).await;
        if let Some(data) = got {
            // Anything else (the node-scope "local") should never have left node b.
            assert!(data["after"].is_u64(), "the member on a got {data}");
            break;
        }
    }
    assert!(
        gaps >= 1,
        "the member on a got no gap for r before deliveries resumed"
    );
    for hub in [&a, &b] {
        wait_readyz(hub, 200, Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_makes_the_node_unready_until_it_resumes() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    wait_readyz(&a, 200, Duration::from_secs(5)).await;
    redis.pause();
    let reply = wait_readyz(&a, 503, Duration::from_secs(6)).await;
    assert_unready_body(&reply);
    redis.resume();
    wait_readyz(&a, 200, Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_spread_over_two_redis_instances() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let urls = format!("{},{}", first.url(), second.url());
    let a = node(&urls, "a");
    let b = node(&urls, "b");
    let rooms: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    let mut member = Client::connect(&a).await;
    for (i, room) in rooms.iter().enumerate() {
        let r = member
            .request(json!({"op":"subscribe","room":room,"id":i}))
            .await;
        assert_eq!(r, json!({"op":"ack","id":i}));
    }

    let mut held = [0, 0];
    for room in &rooms {
        let channel = format!("switchboard:room:{room}");
        match (numsub(&first, &channel), numsub(&second, &channel)) {
            (1, 0) => held[0] += 1,
            (0, 1) => held[1] += 1,
            counts => panic!("{channel} has {counts:?} subscribers on the two instances"),
        }
    }
    assert!(
        held[0] > 0 && held[1] > 0,
        "all 20 rooms on one instance: {held:?}"
    );

    let mut publisher = Client::connect(&b).await;
    for room in &rooms {
        publisher.publish(room, json!(room), "cluster").await;
    }
    // Rooms on different instances need not arrive in publish order.
    let mut got = HashSet::new();
    for _ in &rooms {
        let m = member.recv().await;
        assert_eq!(m["op"], "message", "{m}");
        assert_eq!(m["data"], m["room"], "{m}");
        assert!(
            got.insert(m["room"].as_str().unwrap().to_owned()),
            "{m} twice"
        );
    }
    assert_eq!(got, rooms.into_iter().collect::<HashSet<_>>());
    member.expect_silence(SILENCE).await;
}

/// Every sample of metric `name`: its label text (`{...}`, or empty) and value.
fn samples(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.trim().to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_show_the_connection_and_both_directions_of_traffic() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut member = Client::connect(&a).await;
    member.subscribe("m").await;
    let mut pa = Client::connect(&a).await;
    let mut pb = Client::connect(&b).await;
    // Node a both sends publishes into the cluster and receives b's.
    for i in 0..3 {
        pa.publish("m", json!(i), "cluster").await;
    }
    for i in 3..8 {
        pb.publish("m", json!(i), "cluster").await;
    }
    let mut got = HashSet::new();
    for _ in 0..8 {
        got.insert(recv_data(&mut member, "m").await.as_u64().unwrap());
    }
    assert_eq!(got, (0..8).collect::<HashSet<_>>());

    let text = a.admin_as(None, "GET", "/metrics", None).await.body;
    let connected = samples(&text, "switchboard_cluster_connected");
    assert!(
        connected.iter().any(|(_, v)| *v == 1.0),
        "no switchboard_cluster_connected sample of 1:\n{text}"
    );
    let directions: HashSet<String> = samples(&text, "switchboard_cluster_messages_total")
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .filter_map(|(labels, _)| {
            let start = labels.find("direction=\"")? + "direction=\"".len();
            let len = labels[start..].find('"')?;
            Some(labels[start..start + len].to_owned())
        })
        .collect();
    assert!(
        directions.len() >= 2,
        "switchboard_cluster_messages_total counts no traffic both ways by direction \
         ({directions:?}):\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_cluster_publish_reaches_members_of_the_node() {
    let hub = TestHub::builder().set("node_id", "solo").start();
    let mut member = Client::connect(&hub).await;
    member.subscribe("r").await;
    let mut publisher = Client::connect(&hub).await;
    publisher.publish("r", json!("cluster"), "cluster").await;
    assert_eq!(recv_data(&mut member, "r").await, json!("cluster"));
    let r = publish_reply(&mut publisher, "r", json!("default"), None, 2).await;
    assert_eq!(r, json!({"op":"ack","id":2}));
    assert_eq!(recv_data(&mut member, "r").await, json!("default"));
    member.expect_silence(SILENCE).await;
    let reply = wait_readyz(&hub, 200, Duration::from_secs(5)).await;
    assert_eq!(reply.json()["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_while_redis_is_down_is_subscribed_when_it_returns() {
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut publisher = Client::connect(&b).await;
    wait_readyz(&a, 200, Duration::from_secs(5)).await;
    redis.kill();
    let reply = wait_readyz(&a, 503, Duration::from_secs(6)).await;
    assert_unready_body(&reply);
    // Redis is out of reach: the subscribe still succeeds here, at once.
    let mut member = Client::connect(&a).await;
    let ack = timeout(
        Duration::from_secs(3),
        member.request(json!({"op":"subscribe","room":"fresh","id":1})),
    )
    .await
    .expect("a subscribe while Redis is down was not answered");
    assert_eq!(ack, json!({"op":"ack","id":1}));
    redis.restart();
    // The node subscribes the room it gained meanwhile, without any client action.
    wait_numsub(&redis, "switchboard:room:fresh", 1, Duration::from_secs(10)).await;
    wait_readyz(&b, 200, Duration::from_secs(10)).await;
    let r = publish_reply(&mut publisher, "fresh", json!("back"), Some("cluster"), 2).await;
    assert_eq!(r, json!({"op":"ack","id":2}));
    let mut gaps = 0;
    assert_eq!(
        next_after_outage(&mut member, "fresh", Duration::from_secs(5), &mut gaps).await,
        Some(json!("back"))
    );
}

/// Polls `GET /admin/nodes` on `hub` until it lists exactly `ids`; returns the list.
async fn wait_nodes(hub: &TestHub, ids: &[&str], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let reply = hub.admin("GET", "/admin/nodes", None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let nodes = reply.json().as_array().cloned().unwrap_or_default();
        let listed: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
        if listed == ids {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "/admin/nodes lists {listed:?}, not {ids:?}, after {within:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_the_nodes_and_counts_a_room_on_each() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = TestHub::builder()
        .set("redis_url", redis.url())
        .set("node_id", "b")
        .set("advertise_address", "hub-b.example:8080")
        .start();
    let mut c = node(&redis.url(), "c");
    let nodes = wait_nodes(&a, &["a", "b", "c"], Duration::from_secs(10)).await;
    for n in &nodes {
        assert!(n["version"].is_string() && n["address"].is_string(), "{n}");
        assert!(n["last_seen"].as_u64().unwrap() > 0, "{n}");
    }
    // The bound address, or the one the node was told to advertise.
    let address = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap()["address"].clone();
    assert_eq!(address("a"), json!(a.addr.to_string()));
    assert_eq!(address("b"), json!("hub-b.example:8080"));
    let mut on_a = Client::connect(&a).await;
    on_a.subscribe("counted").await;
    let mut on_b = spread_clients(&b, 2).await;
    for m in &mut on_b {
        m.subscribe("counted").await;
    }
    let mut on_c = Client::connect(&c).await;
    on_c.subscribe("counted").await;
    let reply = a.admin("GET", "/admin/rooms/counted", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let room = reply.json();
    assert_eq!(room["members"].as_array().unwrap().len(), 1, "{room}");
    assert_eq!(
        room["nodes"],
        json!([{"node":"a","members":1},{"node":"b","members":2},{"node":"c","members":1}]),
        "{room}"
    );
    assert_eq!(room["missing"], json!([]), "{room}");
    // A room with members only elsewhere is still shown, with none here.
    let reply = b.admin("GET", "/admin/rooms/counted", None).await;
    assert_eq!(reply.json()["nodes"][0], json!({"node":"a","members":1}));

    // A node that does not answer (frozen; its registry entry is still there) is listed as
    // missing, and the others' counts still come back, within a bounded time.
    let pid = c.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let reply = a.admin("GET", "/admin/rooms/counted", None).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the answer took {:?}",
        started.elapsed()
    );
    let room = reply.json();
    assert_eq!(
        room["nodes"],
        json!([{"node":"a","members":1},{"node":"b","members":2}]),
        "{room}"
    );
    assert_eq!(room["missing"], json!(["c"]), "{room}");
    // A node that shuts down leaves the registry at once, not at its entry's expiry.
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    c.terminate();
    wait_nodes(&a, &["a", "b"], Duration::from_secs(5)).await;
    c.wait_exit(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_kick_and_send_reach_a_session_on_another_node() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    wait_nodes(&a, &["a", "b"], Duration::from_secs(10)).await;
    let mut target = Client::connect(&b).await;
    let id = target.session().to_owned();
    let reply = a
        .admin(
            "POST",
            &format!("/admin/sessions/{id}/send"),
            Some(&json!({"data":{"hello":"from a"}})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        target.recv().await,
        json!({"op":"direct","data":{"hello":"from a"},"from":"admin"})
    );
    let reply = a
        .admin(
            "POST",
            "/admin/sessions/nobody-1/send",
            Some(&json!({"data":1})),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = a
        .admin("DELETE", &format!("/admin/sessions/{id}"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(target.recv_close().await, Some(4001));
    let reply = a.admin("DELETE", "/admin/sessions/nobody-1", None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

/// Whether a handshake to `hub`'s default endpoint with this `Origin` is admitted.
async fn admits(hub: &TestHub, origin: &str) -> bool {
    Client::open_json(&hub.ws_url(), &[("Origin", origin)])
        .await
        .is_ok()
}

/// Polls until `hub` admits (or refuses) `origin`, within `within`.
async fn wait_admits(hub: &TestHub, origin: &str, want: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while admits(hub, origin).await != want {
        assert!(
            Instant::now() < deadline,
            "{origin} still {} after {within:?}",
            if want { "refused" } else { "admitted" }
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_added_on_one_node_applies_on_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    for hub in [&a, &b] {
        wait_readyz(hub, 200, Duration::from_secs(5)).await;
        assert!(
            admits(hub, "https://evil.example").await,
            "no allowlist yet"
        );
    }
    let reply = a
        .admin(
            "POST",
            "/admin/endpoints/default/origins",
            Some(&json!({"origin": "https://app.example.com"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    // Within a second on the other node.
    wait_admits(&b, "https://evil.example", false, Duration::from_secs(1)).await;
    assert!(admits(&b, "https://app.example.com").await);
    let reply = b
        .admin(
            "POST",
            "/admin/endpoints/default/origins",
            Some(&json!({"origin": "https://other.example.com"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    wait_admits(
        &a,
        "https://other.example.com",
        true,
        Duration::from_secs(1),
    )
    .await;
    assert!(!admits(&a, "https://evil.example").await);
    // A node that starts later loads the cluster's policy.
    let c = node(&redis.url(), "c");
    wait_readyz(&c, 200, Duration::from_secs(5)).await;
    wait_admits(&c, "https://evil.example", false, Duration::from_secs(1)).await;
    assert!(admits(&c, "https://app.example.com").await);
    assert!(admits(&c, "https://other.example.com").await);
}

/// A node with a relay endpoint at `/relay/<room>`.
fn relay_node(redis_url: &str, id: &str) -> TestHub {
    TestHub::builder()
        .set("redis_url", redis_url)
        .set("node_id", id)
        .config("[[endpoints]]\nname = \"relay\"\npath = \"/relay\"\nmode = \"relay\"\n")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rooms_span_the_nodes_and_skip_the_sender() {
    use tokio_tungstenite::tungstenite::Message;
    let redis = RedisServer::start();
    let a = relay_node(&redis.url(), "a");
    let b = relay_node(&redis.url(), "b");
    let url = |hub: &TestHub, room: &str| format!("ws://{}/relay/{room}", hub.addr);
    let mut sender = Client::open(&url(&a, "lobby"), &[]).await.unwrap();
    let mut same_node = Client::open(&url(&a, "lobby"), &[]).await.unwrap();
    let mut other_node = Client::open(&url(&b, "lobby"), &[]).await.unwrap();
    let mut other_room = Client::open(&url(&b, "elsewhere"), &[]).await.unwrap();
    // The relay members join as they connect, with no ack: wait for both nodes' subscriptions.
    wait_numsub(
        &redis,
        "switchboard:relay:relay:lobby",
        2,
        Duration::from_secs(5),
    )
    .await;
    let binary = vec![0u8, 159, 146, 150, 255];
    sender.send_raw(Message::text("{not: json}")).await;
    sender.send_raw(Message::binary(binary.clone())).await;
    for member in [&mut same_node, &mut other_node] {
        assert_eq!(member.recv_message().await, Message::text("{not: json}"));
        assert_eq!(member.recv_message().await, Message::binary(binary.clone()));
    }
    sender.expect_silence(SILENCE).await;
    other_room.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_members_messages_cross_nodes_in_order() {
    use tokio_tungstenite::tungstenite::Message;
    const MESSAGES: usize = 5000;
    let redis = RedisServer::start();
    let a = relay_node(&redis.url(), "a");
    let b = relay_node(&redis.url(), "b");
    let url = |hub: &TestHub| format!("ws://{}/relay/feed", hub.addr);
    let mut sender = Client::open(&url(&a), &[]).await.unwrap();
    let mut far = Client::open(&url(&b), &[]).await.unwrap();
    wait_numsub(
        &redis,
        "switchboard:relay:relay:feed",
        2,
        Duration::from_secs(5),
    )
    .await;
    let started = std::time::Instant::now();
    let send = tokio::spawn(async move {
        for i in 0..MESSAGES {
            sender.send_raw(Message::text(i.to_string())).await;
        }
        sender
    });
    for i in 0..MESSAGES {
        assert_eq!(far.recv_message().await, Message::text(i.to_string()));
    }
    eprintln!(
        "{MESSAGES} relay messages across two nodes in {:?}",
        started.elapsed()
    );
    let mut sender = send.await.unwrap();
    sender.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_bad_redis_url_starts_serves_local_scopes_and_is_not_ready() {
    let hub = node("not a url", "a");
    let reply = wait_readyz(&hub, 503, Duration::from_secs(5)).await;
    assert_unready_body(&reply);
    let mut member = Client::connect(&hub).await;
    member.subscribe("r").await;
    let mut publisher = Client::connect(&hub).await;
    publisher.publish("r", json!("local"), "node").await;
    assert_eq!(recv_data(&mut member, "r").await, json!("local"));
    let r = publish_reply(&mut publisher, "r", json!("far"), Some("cluster"), 7).await;
    assert_unavailable(&r, 7);
    assert!(hub.logs().iter().any(|l| l.contains("redis link failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keep_request_order_while_cluster_publishes_are_in_flight() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    wait_readyz(&a, 200, Duration::from_secs(5)).await;
    let mut c = Client::connect(&a).await;
    for round in 0..20u64 {
        let base = round * 100;
        for i in 0..50 {
            c.send(json!({"op":"publish","room":"o","data":i,"scope":"cluster","id":base + i}))
                .await;
        }
        // A ping and a node-scope publish behind them are answered after them.
        c.send(json!({"op":"ping","id":base + 50})).await;
        c.send(json!({"op":"publish","room":"o","data":0,"scope":"node","id":base + 51}))
            .await;
        c.send(json!({"op":"publish","room":"o","data":0,"id":base + 52}))
            .await;
        for i in 0..50 {
            assert_eq!(c.recv().await, json!({"op":"ack","id":base + i}));
        }
        assert_eq!(c.recv().await, json!({"op":"pong","id":base + 50}));
        assert_eq!(c.recv().await, json!({"op":"ack","id":base + 51}));
        assert_eq!(c.recv().await, json!({"op":"ack","id":base + 52}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_cut_off_by_redis_and_tells_its_members_of_the_gap() {
    let redis = RedisServer::start();
    // Redis cuts a subscriber whose unread output passes 256 KiB.
    assert_eq!(
        redis.command(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 262144 131072 1"
        ]),
        "OK"
    );
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut on_a = Client::connect(&a).await;
    on_a.subscribe("r").await;
    let mut on_b = Client::connect(&b).await;
    on_b.subscribe("r").await;
    let mut publisher = Client::connect(&b).await;
    wait_readyz(&a, 200, Duration::from_secs(5)).await;

    // Node a stops reading anything (as if frozen): the others must not notice.
    let pid = a.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let pad = "x".repeat(1000);
    let n = 20_000u64;
    let started = Instant::now();
    // Node b's member reads as the messages come (it is not the slow one).
    let reader = tokio::spawn(async move {
        for seq in 0..n {
            assert_eq!(recv_data(&mut on_b, "r").await["seq"], seq);
        }
    });
    publish_pipelined(
        &mut publisher,
        "r",
        n,
        256,
        |seq| json!({"seq":seq,"pad":pad}),
    )
    .await;
    reader.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "node b's traffic took {:?} with node a stalled",
        started.elapsed()
    );
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());

    // Node a finds its link cut, reconnects, and its member is told of the gap; after that,
    // deliveries resume. Whatever it got before the gap is in order.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "no gap on node a (last message {last:?})"
        );
        let f = timeout(Duration::from_secs(20), on_a.recv()).await.unwrap();
        match f["op"].as_str() {
            Some("gap") => break,
            Some("message") => {
                let seq = f["data"]["seq"].as_u64().unwrap();
                assert!(last.is_none_or(|l| seq == l + 1), "{seq} after {last:?}");
                last = Some(seq);
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert!(
        last.is_none_or(|l| l + 1 < n),
        "node a got everything: no cut happened"
    );
    wait_readyz(&a, 200, Duration::from_secs(10)).await;
    publisher
        .publish("r", json!({"seq":"after"}), "cluster")
        .await;
    loop {
        let f = timeout(Duration::from_secs(10), on_a.recv()).await.unwrap();
        if f["op"] == "message" && f["data"]["seq"] == "after" {
            break;
        }
    }
}
