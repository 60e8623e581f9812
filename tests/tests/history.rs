//! History rooms on one node: offsets and epochs, `history`, recovery after a reconnect with no
//! gap and no duplicate (or a plain `recovered:false`), one order across workers, and the
//! memory bound.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use switchboard_tests::{
    publish_numbered, recv_numbered, spread_clients, subscribe_recovering, Client, TestHub,
};

/// A hub whose rooms `chat:*` keep `size` messages.
fn hub_with_history(size: usize) -> TestHub {
    TestHub::builder()
        .config(&format!(
            "[[rooms]]\npattern = \"chat:*\"\nhistory_size = {size}\n"
        ))
        .start()
}

#[tokio::test]
async fn messages_and_acks_of_a_history_room_carry_offset_and_epoch_and_history_returns_the_last() {
    let hub = hub_with_history(5);
    let mut member = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut member, "chat:a", None).await;
    assert_eq!(ack["op"], "ack");
    assert_eq!(ack["offset"], 0, "a new room starts at 0: {ack}");
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());

    let mut publisher = Client::connect(&hub).await;
    let ack = publisher
        .request(json!({"op":"publish","room":"chat:a","data":{"n":1},"id":9}))
        .await;
    assert_eq!(ack, json!({"op":"ack","id":9,"offset":1,"epoch":epoch}));
    let m = member.recv().await;
    assert_eq!(m["offset"], 1);
    assert_eq!(m["epoch"], epoch.as_str());
    assert_eq!(m["data"], json!({"n":1}));

    // A room that matches no table keeps none and numbers nothing.
    let plain = publisher
        .request(json!({"op":"publish","room":"plain","data":1,"id":3}))
        .await;
    assert_eq!(plain, json!({"op":"ack","id":3}));
    let refused = publisher
        .request(json!({"op":"history","room":"plain","id":4}))
        .await;
    assert_eq!(refused["code"], "unsupported", "{refused}");

    publish_numbered(&mut publisher, "chat:a", 2, 7).await;
    let h = publisher
        .request(json!({"op":"history","room":"chat:a","limit":3,"id":5}))
        .await;
    assert_eq!(h["op"], "history", "{h}");
    assert_eq!(h["id"], 5);
    assert_eq!(h["offset"], 8);
    assert_eq!(h["epoch"], epoch.as_str());
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [6, 7, 8], "the last 3, oldest first");
    assert_eq!(h["messages"][2]["data"], json!({"n":8}));
    assert_eq!(h["messages"][2]["op"], "message");
    // The cap is the history size (5 here).
    let all = publisher
        .request(json!({"op":"history","room":"chat:a","id":6}))
        .await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 5);
    let bad = publisher
        .request(json!({"op":"history","room":"chat:a","limit":-1,"id":7}))
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    let bad = publisher
        .request(json!({"op":"subscribe","room":"chat:a","recover":{"epoch":3},"id":8}))
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
}

#[tokio::test]
async fn a_subscriber_that_reconnects_with_recover_gets_exactly_what_it_missed_then_live_ones() {
    let hub = hub_with_history(1000);
    let mut member = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut member, "chat:r", None).await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    let mut publisher = Client::connect(&hub).await;
    publish_numbered(&mut publisher, "chat:r", 1, 10).await;
    let got = recv_numbered(&mut member, "chat:r", 10).await;
    let last = got.last().unwrap().0;
    assert_eq!(last, 10);
    drop(member);

    publish_numbered(&mut publisher, "chat:r", 11, 500).await;
    let mut back = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut back, "chat:r", Some((&epoch, last))).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":1,"offset":510,"epoch":epoch,"recovered":true})
    );
    publisher
        .send(json!({"op":"publish","room":"chat:r","data":{"n":511}}))
        .await;
    let got = recv_numbered(&mut back, "chat:r", 501).await;
    let expected: Vec<(u64, u64)> = (11..=511).map(|i| (i, i)).collect();
    assert_eq!(got, expected, "the 500 missed, in order, then the live one");
    back.expect_silence(Duration::from_millis(300)).await;

    // Recovering from the latest offset: recovered, nothing to replay.
    let mut up_to_date = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut up_to_date, "chat:r", Some((&epoch, 511))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    up_to_date.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn recovering_from_beyond_the_history_or_from_another_epoch_is_refused_plainly() {
    let hub = hub_with_history(100);
    let mut publisher = Client::connect(&hub).await;
    let first = subscribe_recovering(&mut publisher, "chat:old", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let (seen, _) = publish_numbered(&mut publisher, "chat:old", 1, 300).await;
    let _ = recv_numbered(&mut publisher, "chat:old", 300 - seen.len()).await;

    let mut late = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut late, "chat:old", Some((&epoch, 10))).await;
    assert_eq!(
        ack,
        json!({"op":"ack","id":1,"offset":300,"epoch":epoch,"recovered":false})
    );
    // It gets live messages from the position of its ack on.
    publisher
        .send(json!({"op":"publish","room":"chat:old","data":{"n":301}}))
        .await;
    assert_eq!(recv_numbered(&mut late, "chat:old", 1).await, [(301, 301)]);

    // The oldest offset still held (300 - 100 + 1 = 201) recovers from 200.
    let mut edge = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut edge, "chat:old", Some((&epoch, 201))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(recv_numbered(&mut edge, "chat:old", 100).await.len(), 100);

    let mut stranger = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut stranger, "chat:old", Some(("another", 5))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(ack["epoch"], epoch.as_str());
    let mut ahead = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut ahead, "chat:old", Some((&epoch, 5000))).await;
    assert_eq!(ack["recovered"], false, "an offset from the future: {ack}");
}

#[tokio::test]
async fn a_restarted_standalone_node_has_a_new_epoch_and_recovery_across_it_is_refused() {
    let config = "[[rooms]]\npattern = \"chat:*\"\nhistory_size = 50\n";
    let hub = TestHub::builder().config(config).start();
    let mut c = Client::connect(&hub).await;
    let before = subscribe_recovering(&mut c, "chat:e", None).await;
    let (seen, _) = publish_numbered(&mut c, "chat:e", 1, 3).await;
    let _ = recv_numbered(&mut c, "chat:e", 3 - seen.len()).await;
    drop(c);
    drop(hub);

    let hub = TestHub::builder().config(config).start();
    let mut c = Client::connect(&hub).await;
    let epoch = before["epoch"].as_str().unwrap();
    let ack = subscribe_recovering(&mut c, "chat:e", Some((epoch, 3))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], epoch, "a new epoch after the restart");
    assert_eq!(ack["offset"], 0);
}

#[tokio::test]
async fn members_on_every_worker_see_one_order_of_a_history_room_with_publishers_on_both() {
    let hub = TestHub::builder()
        .set("workers", 2)
        .config("[[rooms]]\npattern = \"chat:*\"\nhistory_size = 10000\n")
        .start();
    let mut members = spread_clients(&hub, 6).await;
    for m in &mut members {
        let ack = subscribe_recovering(m, "chat:order", None).await;
        assert_eq!(ack["op"], "ack");
    }
    let mut publishers = spread_clients(&hub, 2).await;
    const EACH: u64 = 400;
    let sends = publishers.iter_mut().enumerate().map(|(p, c)| async move {
        for i in 0..EACH {
            c.send(json!({"op":"publish","room":"chat:order","data":{"n":p as u64 * 10_000 + i}}))
                .await;
        }
    });
    join_all(sends).await;
    let mut sequences = Vec::new();
    for m in &mut members {
        let got = recv_numbered(m, "chat:order", 2 * EACH as usize).await;
        let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(offsets, (1..=2 * EACH).collect::<Vec<_>>(), "contiguous");
        sequences.push(got);
    }
    for s in &sequences[1..] {
        assert_eq!(s, &sequences[0], "every member sees the same order");
    }
    // Each publisher's own order holds within it.
    for p in 0..2u64 {
        let mine: Vec<u64> = sequences[0]
            .iter()
            .map(|g| g.1)
            .filter(|n| n / 10_000 == p)
            .collect();
        assert_eq!(mine, (0..EACH).map(|i| p * 10_000 + i).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn two_thousand_clients_recovering_200_messages_at_once_all_recover_and_none_is_evicted() {
    let hub = TestHub::builder()
        .config("[[rooms]]\npattern = \"chat:*\"\nhistory_size = 500\n")
        .start();
    let mut publisher = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut publisher, "chat:many", None).await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    let (seen, _) = publish_numbered(&mut publisher, "chat:many", 1, 50).await;
    let _ = recv_numbered(&mut publisher, "chat:many", 50 - seen.len()).await;
    let mut sender = Client::connect(&hub).await;
    publish_numbered(&mut sender, "chat:many", 51, 200).await;

    const CLIENTS: usize = 2000;
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 100 {
        let batch = join_all((0..100).map(|_| Client::connect(&hub))).await;
        clients.extend(batch);
        let _ = chunk;
    }
    let started = std::time::Instant::now();
    let recovered = join_all(clients.iter_mut().map(|c| {
        let epoch = epoch.clone();
        async move {
            let ack = subscribe_recovering(c, "chat:many", Some((&epoch, 50))).await;
            assert_eq!(ack["recovered"], true, "{ack}");
            let got = recv_numbered(c, "chat:many", 200).await;
            assert_eq!(got.first(), Some(&(51, 51)));
            assert_eq!(got.last(), Some(&(250, 250)));
        }
    }))
    .await;
    assert_eq!(recovered.len(), CLIENTS);
    eprintln!(
        "{CLIENTS} clients recovered 200 messages each in {:?}",
        started.elapsed()
    );
    let metrics = hub.admin("GET", "/metrics", None).await;
    assert!(
        metrics
            .body
            .contains("switchboard_recoveries_total{result=\"recovered\"} 2000"),
        "{}",
        metrics.body
    );
    assert!(
        !metrics.body.lines().any(|l| l
            .starts_with("switchboard_disconnects_total{reason=\"slow_consumer\"}")
            && !l.ends_with(" 0")),
        "nobody was evicted"
    );
}

#[tokio::test]
async fn ten_thousand_history_rooms_stay_under_the_memory_budget() {
    let hub = TestHub::builder()
        .set("history_memory_bytes", 4 << 20)
        .config("[[rooms]]\npattern = \"chat:*\"\nhistory_size = 100\n")
        .start();
    let mut c = Client::connect(&hub).await;
    let payload = "x".repeat(200);
    // 10,000 rooms x 5 messages of ~330 bytes each: about 16 MiB of history asked for.
    for round in 0..5 {
        for room in 0..10_000 {
            c.send(json!({"op":"publish","room":format!("chat:{room}"),"data":{"p":payload,"r":round}}))
                .await;
        }
        c.send(json!({"op":"ping","id":round})).await;
        loop {
            let f = c.recv().await;
            if f["op"] == "pong" {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = hub.admin("GET", "/metrics", None).await;
    let value = |name: &str| -> f64 {
        metrics
            .body
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {}", metrics.body))
    };
    let bytes = value("switchboard_history_bytes ");
    assert!(bytes <= f64::from(4u32 << 20), "{bytes} bytes held");
    assert!(
        bytes > 1_000_000.0,
        "history is kept up to the budget: {bytes}"
    );
    assert!(value("switchboard_history_evicted_total ") > 0.0);
    eprintln!(
        "10,000 rooms: {bytes} bytes of history, {} messages, RSS {} KiB",
        value("switchboard_history_messages "),
        hub.rss_kib()
    );
    // The newest message of the room published to last is still there (older rooms' history
    // made room for it, and went with a new epoch when their log was forgotten).
    let h = c
        .request(json!({"op":"history","room":"chat:9999","id":1}))
        .await;
    let messages = h["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["data"]["r"], 4, "{h}");
}

#[tokio::test]
async fn presence_lists_members_and_join_leave_are_debounced_on_one_node() {
    let secret = "0123456789abcdef0123456789abcdef";
    let hub = TestHub::builder()
        .set("token_secret", secret)
        .config("[[rooms]]\npattern = \"lobby\"\npresence = true\njoin_leave = true\nleave_debounce = 1\n")
        .start();
    let url = |user: &str| {
        let token = switchboard_tests::sign_token(
            secret.as_bytes(),
            &json!({"sub":user,"exp":switchboard_tests::unix_now() + 600,"subscribe":["*"]}),
        );
        format!("{}?token={token}", hub.ws_url())
    };
    let mut watcher = Client::open_json(&url("watcher"), &[]).await.unwrap();
    subscribe_recovering(&mut watcher, "lobby", None).await;
    let me = watcher.session().to_owned();
    let own = watcher.recv().await;
    assert_eq!(
        own,
        json!({"op":"join","room":"lobby","session":me,"user":"watcher"})
    );

    let mut ann = Client::open_json(&url("ann"), &[]).await.unwrap();
    subscribe_recovering(&mut ann, "lobby", None).await;
    let join = watcher.recv().await;
    assert_eq!(join["user"], "ann");
    // A second session of the same user is no second join.
    let mut ann2 = Client::open_json(&url("ann"), &[]).await.unwrap();
    subscribe_recovering(&mut ann2, "lobby", None).await;
    let list = watcher
        .request(json!({"op":"presence","room":"lobby","id":2}))
        .await;
    let users: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 3, "{list}");
    assert_eq!(users.iter().filter(|u| **u == "ann").count(), 2);
    assert!(list["members"][0]["node"].is_string());

    // Both of ann's sessions drop; she is back within the debounce: nothing is announced.
    drop(ann);
    drop(ann2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ann = Client::open_json(&url("ann"), &[]).await.unwrap();
    subscribe_recovering(&mut ann, "lobby", None).await;
    watcher.expect_silence(Duration::from_millis(1500)).await;

    // Gone for good: one leave, after the debounce.
    let left_at = std::time::Instant::now();
    drop(ann);
    let leave = watcher.recv().await;
    assert_eq!(leave["op"], "leave", "{leave}");
    assert_eq!(leave["user"], "ann");
    assert!(
        left_at.elapsed() >= Duration::from_millis(900),
        "{:?}",
        left_at.elapsed()
    );

    let refused = watcher
        .request(json!({"op":"presence","room":"elsewhere","id":3}))
        .await;
    assert_eq!(refused["code"], "unsupported");

    // Presence needs the token's subscribe grant for the room, like history.
    let narrow = switchboard_tests::sign_token(
        secret.as_bytes(),
        &json!({"sub":"eve","exp":switchboard_tests::unix_now() + 600,"subscribe":["other"]}),
    );
    let mut eve = Client::open_json(&format!("{}?token={narrow}", hub.ws_url()), &[])
        .await
        .unwrap();
    let refused = eve
        .request(json!({"op":"presence","room":"lobby","id":4}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
}

#[tokio::test]
async fn messages_older_than_the_history_ttl_are_gone_and_cannot_be_recovered() {
    let hub = TestHub::builder()
        .config("[[rooms]]\npattern = \"chat:*\"\nhistory_size = 100\nhistory_ttl = 1\n")
        .start();
    let mut c = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut c, "chat:ttl", None).await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    let (seen, _) = publish_numbered(&mut c, "chat:ttl", 1, 3).await;
    let _ = recv_numbered(&mut c, "chat:ttl", 3 - seen.len()).await;
    let h = c
        .request(json!({"op":"history","room":"chat:ttl","id":2}))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 3);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let h = c
        .request(json!({"op":"history","room":"chat:ttl","id":3}))
        .await;
    assert_eq!(h["messages"], json!([]), "{h}");
    assert_eq!(
        h["offset"], 3,
        "offsets go on while the room has members: {h}"
    );
    let mut late = Client::connect(&hub).await;
    let ack = subscribe_recovering(&mut late, "chat:ttl", Some((&epoch, 1))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
}
