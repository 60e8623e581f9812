//! Abuse limits on one real hub: each session's inbound rate (messages and bytes per second).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_tests::{Client, TestHub};

/// Sends `n` pings with ids `first..` at once and returns how many were answered with `pong`
/// and the ids answered `rate_limited`.
async fn burst(c: &mut Client, first: u64, n: u64) -> (u64, Vec<u64>) {
    for i in first..first + n {
        c.send(json!({"op":"ping","id":i})).await;
    }
    let (mut pongs, mut limited) = (0, Vec::new());
    // Every request is answered, one way or the other, in order.
    for i in first..first + n {
        let f = c.recv().await;
        assert_eq!(f["id"], i, "{f}");
        match f["op"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                limited.push(i);
            }
            _ => panic!("unexpected {f}"),
        }
    }
    (pongs, limited)
}

#[tokio::test]
async fn a_session_over_its_message_rate_gets_rate_limited_and_recovers_when_it_slows_down() {
    let hub = TestHub::builder()
        .set("session_messages_per_second", 20)
        .set("session_burst", 1)
        .start();
    let mut c = Client::connect(&hub).await;
    // A burst of 20 is allowed; the rest of 30 at once is refused, frame by frame.
    let (pongs, limited) = burst(&mut c, 1, 30).await;
    assert!((20..=22).contains(&pongs), "{pongs} answered");
    assert_eq!(limited.len() as u64, 30 - pongs);
    assert!(
        limited.iter().all(|i| *i > 20),
        "the first ones are within: {limited:?}"
    );
    // Refused frames were not handled: a refused publish reached nobody.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (pongs, limited) = burst(&mut c, 100, 5).await;
    assert_eq!((pongs, limited.len()), (5, 0), "within the rate again");
    // Other sessions have their own buckets.
    let mut other = Client::connect(&hub).await;
    assert_eq!(burst(&mut other, 1, 10).await.0, 10);
    let metrics = hub.admin("GET", "/metrics", None).await;
    assert!(
        metrics.body.lines().any(|l| l
            .starts_with("switchboard_rate_limited_total{action=\"refused\"}")
            && !l.ends_with(" 0")),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn a_session_that_stays_far_over_its_rate_is_closed_with_1008() {
    let hub = TestHub::builder()
        .set("session_messages_per_second", 10)
        .set("session_burst", 1)
        .start();
    let mut c = Client::connect(&hub).await;
    for i in 0..200 {
        c.send(json!({"op":"publish","room":"r","data":i})).await;
    }
    // Some answers (rate_limited errors), then the close.
    assert_eq!(c.recv_close().await, Some(1008));
    let metrics = hub.admin("GET", "/metrics", None).await;
    assert!(metrics
        .body
        .contains("switchboard_rate_limited_total{action=\"closed\"} 1"));
    // The node is fine: a new session works.
    let mut fresh = Client::connect(&hub).await;
    assert_eq!(burst(&mut fresh, 1, 3).await.0, 3);
}

#[tokio::test]
async fn the_byte_rate_counts_message_sizes() {
    let hub = TestHub::builder()
        .set("session_bytes_per_second", 4096)
        .set("session_burst", 1)
        .start();
    let mut c = Client::connect(&hub).await;
    let big = "x".repeat(3000);
    let first = c
        .request(json!({"op":"publish","room":"r","data":big,"id":1}))
        .await;
    assert_eq!(first, json!({"op":"ack","id":1}));
    let second = c
        .request(json!({"op":"publish","room":"r","data":big,"id":2}))
        .await;
    assert_eq!(second["code"], "rate_limited", "{second}");
    // Small messages still fit in what is left of the second.
    let small = c.request(json!({"op":"ping","id":3})).await;
    assert_eq!(
        small["op"], "error",
        "the debt of the refused one counts too: {small}"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let again = c
        .request(json!({"op":"publish","room":"r","data":big,"id":4}))
        .await;
    assert_eq!(again, json!({"op":"ack","id":4}));
}
