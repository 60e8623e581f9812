//! Slow consumers: a member that cannot keep up is closed with 4000 and the other members keep
//! receiving every message; one that stops reading altogether is dropped.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::json;
use switchboard_tests::{spread_clients, Client, RawClient, TestHub};
use tokio::sync::Semaphore;

const MESSAGES: u64 = 50_000;

/// Publishes `n` messages of about 1 KiB with sequence numbers, keeping at most `window` unacked
/// and, for each of `credits`, at most its initial permits ahead of that reader.
async fn publish_all(
    publisher: &mut Client,
    room: &str,
    n: u64,
    window: u64,
    credits: &[Arc<Semaphore>],
) {
    let pad = "p".repeat(1000);
    let mut acked = 0;
    for seq in 0..n {
        for credit in credits {
            credit.acquire().await.unwrap().forget();
        }
        publisher
            .send(json!({"op":"publish","room":room,"data":{"seq":seq,"pad":pad},"scope":"node","id":seq}))
            .await;
        while seq + 1 - acked > window {
            // Acks come back in the order of the publishes, waits or not.
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
async fn a_stalled_member_is_closed_with_4000_while_the_others_get_every_message() {
    let hub = TestHub::start();
    // A tiny receive buffer so the stall shows after kilobytes, not megabytes of kernel buffers.
    let (mut stalled, _) = stalled_member(&hub, "feed").await;

    // Members that keep up: the publisher never runs more than 128 messages ahead of any of them
    // (half the default queue of 256), however the machine schedules the test.
    let mut readers = Vec::new();
    let mut credits = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&hub).await;
        c.subscribe("feed").await;
        let credit = Arc::new(Semaphore::new(128));
        credits.push(credit.clone());
        readers.push(tokio::spawn(async move {
            for expected in 0..MESSAGES {
                let m = c.recv().await;
                assert_eq!(
                    m["data"]["seq"], expected,
                    "a fast member lost or reordered a message"
                );
                credit.add_permits(1);
            }
            c
        }));
    }
    let mut publisher = Client::connect(&hub).await;
    publish_all(&mut publisher, "feed", MESSAGES, 64, &credits).await;
    for reader in join_all(readers).await {
        reader.unwrap();
    }

    // The stalled member now reads what was queued for it, then the close.
    let mut received = 0u64;
    let code = loop {
        let f = stalled
            .read_frame()
            .await
            .expect("connection ended without a close frame");
        match f.opcode {
            0x1 => received += 1,
            0x8 => break f.close_code(),
            _ => {}
        }
    };
    assert_eq!(code, Some(4000));
    assert!(
        received < MESSAGES,
        "the stalled member was not cut off ({received} delivered)"
    );
    assert!(hub
        .logs()
        .iter()
        .any(|l| l.contains("slow consumer closed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_again_is_dropped() {
    // heartbeat 0.5 s: once evicted, a member whose socket takes not even the close frame for 1 s
    // (one heartbeat, at least 1 s) is dropped.
    let hub = TestHub::builder().set("heartbeat", 0.5).start();
    // Held open, never read, until the end of the test.
    let (_stalled, stalled_port) = stalled_member(&hub, "feed").await;
    let mut publisher = Client::connect(&hub).await;
    publish_all(&mut publisher, "feed", 5_000, 64, &[]).await;
    assert!(hub.has_connection_from(stalled_port));
    wait_until_dropped(&hub, stalled_port, &mut publisher).await;
    assert_eq!(
        publisher.request(json!({"op":"ping","id":3})).await,
        json!({"op":"pong","id":3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_queue_makes_the_publisher_wait_and_loses_nothing() {
    // One slot per room queue: nearly every publish finds it full and takes the waiting path,
    // most of them in the middle of a batch of pipelined frames, whose rest is handled after
    // the wait (the session's backlog): acks and deliveries must still come in order.
    let hub = TestHub::builder()
        .set("room_queue_capacity", 1)
        .set("outbox_capacity", 100_000)
        .start();
    let mut members = spread_clients(&hub, 4).await;
    for m in &mut members {
        m.subscribe("busy").await;
    }
    let mut publisher = Client::connect(&hub).await;
    let n = 3_000;
    publish_all(&mut publisher, "busy", n, 1_000, &[]).await;
    for mut m in members {
        for expected in 0..n {
            assert_eq!(m.recv().await["data"]["seq"], expected);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_session_whose_socket_is_full_is_dropped_after_the_grace_period() {
    // Outbox bounds far above what is sent, so the member is never evicted: its socket fills,
    // the rest waits in its outbox, and then it goes silent and times out. Its close frame can
    // never be written; the connection must still go.
    let hub = TestHub::builder()
        .set("heartbeat", 0.3)
        .set("outbox_capacity", 1_000_000)
        .set("outbox_max_bytes", 256 << 20)
        .start();
    // Held open, never read, until the end of the test.
    let (_stalled, stalled_port) = stalled_member(&hub, "feed").await;
    let mut publisher = Client::connect(&hub).await;
    publish_all(&mut publisher, "feed", 20_000, 64, &[]).await;
    wait_until_dropped(&hub, stalled_port, &mut publisher).await;
}

/// Waits (10 s at most) until the hub holds no connection from `port`; pinging meanwhile keeps
/// `other`'s own session alive and proves it unaffected.
async fn wait_until_dropped(hub: &TestHub, port: u16, other: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.has_connection_from(port) {
        assert!(
            Instant::now() < deadline,
            "the connection from port {port} is still open"
        );
        assert_eq!(
            other.request(json!({"op":"ping","id":2})).await,
            json!({"op":"pong","id":2})
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member of `room` that will never read: a tiny receive buffer so that it stalls after
/// kilobytes, not megabytes of kernel buffers. Returns it and its local port.
async fn stalled_member(hub: &TestHub, room: &str) -> (RawClient, u16) {
    let mut stalled = RawClient::connect_with_rcvbuf(hub, Some(4096)).await;
    let port = stalled.stream.local_addr().unwrap().port();
    stalled
        .send_text(&json!({"op":"subscribe","room":room,"id":1}).to_string())
        .await;
    assert_eq!(stalled.recv_json().await, json!({"op":"ack","id":1}));
    (stalled, port)
}

/// A client that sends but never reads fills its outbox with its own frames (here, echoes) and
/// is evicted like a slow reader of deliveries, with the outbox never past its byte bound: the
/// frames discarded at the eviction fit in `outbox_max_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_client_that_never_reads_is_evicted_within_the_outbox_bound() {
    const BUDGET: usize = 256 * 1024;
    const FRAME: usize = 16 * 1024;
    let hub = TestHub::builder()
        .config(&format!(
            "outbox_max_bytes = {BUDGET}\nheartbeat = 2\n\n[[endpoints]]\nname = \"echo\"\npath = \"/echo\"\nmode = \"echo\"\n"
        ))
        .start();
    let mut c = RawClient::connect_path_with_rcvbuf(&hub, "/echo", Some(4096)).await;
    let message = switchboard_tests::frame(true, 0, 0x2, &[7u8; FRAME]);
    // Far more than the kernel buffers and the outbox hold together; the hub cuts the client
    // off long before the end.
    let mut sent = 0;
    for _ in 0..2_000 {
        if c.write(&message).await.is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        c.closed_within(Duration::from_secs(10)).await,
        "sent {sent}"
    );
    let text = hub.admin_as(None, "GET", "/metrics", None).await.body;
    let value = |needle: &str| switchboard_tests::metric_value(&text, needle);
    assert_eq!(
        value("switchboard_disconnects_total{reason=\"slow_consumer\"}"),
        1.0
    );
    // The frames still queued when the client was cut off: at most what the bound holds.
    let discarded = value("switchboard_messages_dropped_total{reason=\"evicted\"}");
    assert!(
        discarded <= (BUDGET / (FRAME + 4)) as f64,
        "{discarded} echo frames of {FRAME} bytes were queued past a {BUDGET}-byte outbox"
    );
    assert!(
        discarded >= 1.0,
        "the outbox was full when the client was cut off"
    );
}

/// Many publishers pouring into one room at once must not make the hub evict members whose
/// sockets take everything: each member's writer gets its turn before its outbox fills, however
/// many publishers are ready on its worker. (Small messages, so that the kernel's socket buffers
/// hold all of them and only the hub's own turns decide.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_unpaced_publishers_into_one_room_evict_no_reader() {
    const PUBLISHERS: u64 = 40;
    const EACH: u64 = 500;
    let hub = TestHub::builder().set("workers", 1).start();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&hub).await;
        c.subscribe("crowd").await;
        readers.push(c);
    }
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(Client::connect(&hub).await);
    }
    let readers = tokio::spawn(async move {
        join_all(readers.into_iter().map(|mut c| async move {
            let mut got = 0;
            while got < PUBLISHERS * EACH {
                let m = c.recv().await;
                assert_eq!(m["op"], "message", "{m}");
                got += 1;
            }
            got
        }))
        .await
    });
    join_all(publishers.iter_mut().map(|p| async move {
        let mut acked = 0;
        for seq in 0..EACH {
            p.send(json!({"op":"publish","room":"crowd","data":seq,"scope":"node","id":seq}))
                .await;
            // A full window of 256 in flight per publisher, as the bench's publishers keep.
            while seq + 1 - acked > 256 {
                assert_eq!(p.recv().await["op"], "ack");
                acked += 1;
            }
        }
        while acked < EACH {
            assert_eq!(p.recv().await["op"], "ack");
            acked += 1;
        }
    }))
    .await;
    let got = readers.await.unwrap();
    assert_eq!(got, vec![PUBLISHERS * EACH; 3]);
}
