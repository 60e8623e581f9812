//! Abuse limits on one real hub: each session's inbound rate (messages and bytes per second),
//! sessions and handshakes per client IP (and who says what the client IP is), the handshake
//! timeout and the request head's limits.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_tests::{http_exchange, upgrade_request, Client, HttpReply, Target, TestHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Opens a session (the welcome read) with these extra header lines, or the refusal's reply.
async fn open_with(hub: &TestHub, extra: &[&str]) -> Result<Client, HttpReply> {
    let headers: Vec<(&str, &str)> = extra
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    match Client::open_json(&hub.ws_url(), &headers).await {
        Ok(c) => Ok(c),
        Err(_) => Err(http_exchange(hub, &upgrade_request(hub, "/ws", extra)).await),
    }
}

#[tokio::test]
async fn one_ip_may_hold_only_so_many_sessions_and_only_a_trusted_proxy_may_say_who_the_client_is()
{
    let hub = TestHub::builder().set("max_connections_per_ip", 2).start();
    let a = open_with(&hub, &[]).await.ok().unwrap();
    let _b = open_with(&hub, &[]).await.ok().unwrap();
    let refused = open_with(&hub, &[]).await.err().unwrap();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "too_many_requests");
    assert!(refused
        .header("retry-after")
        .is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // Without trusted proxies, X-Forwarded-For is anyone's to write: it changes nothing.
    let forged = open_with(&hub, &["X-Forwarded-For: 198.51.100.7"]).await;
    assert_eq!(forged.err().unwrap().status, 429);
    // A session that ends gives its place back.
    drop(a);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = open_with(&hub, &[]).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a place came free");

    // Behind a trusted proxy (this test's loopback), each forwarded-for client has its own count.
    let proxied = TestHub::builder()
        .set("max_connections_per_ip", 1)
        .set("trusted_proxies", "127.0.0.0/8, ::1")
        .start();
    let one = open_with(&proxied, &["X-Forwarded-For: 198.51.100.7"]).await;
    assert!(one.is_ok());
    let two = open_with(&proxied, &["X-Forwarded-For: 198.51.100.8"]).await;
    assert!(two.is_ok(), "another client behind the same proxy");
    let three = open_with(&proxied, &["X-Forwarded-For: 203.0.113.1, 198.51.100.7"]).await;
    assert_eq!(
        three.err().unwrap().status,
        429,
        "the proxy's own entry counts, not the first"
    );
    let metrics = hub.admin("GET", "/metrics", None).await;
    assert!(
        metrics.body.lines().any(|l| l
            .starts_with("switchboard_handshakes_total{result=\"ip_limit\"}")
            && !l.ends_with(" 0")),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn handshakes_over_an_ips_rate_get_429_with_retry_after() {
    let hub = TestHub::builder()
        .set("handshakes_per_ip_per_second", 5)
        .start();
    let mut refused = None;
    let mut accepted = 0;
    for _ in 0..30 {
        let reply = http_exchange(&hub, &upgrade_request(&hub, "/ws", &[])).await;
        match reply.status {
            101 => accepted += 1,
            429 => {
                refused = Some(reply);
                break;
            }
            other => panic!("status {other}"),
        }
    }
    // A burst of two seconds' worth (10), then refusals.
    assert!(
        (10..=12).contains(&accepted),
        "{accepted} accepted before a refusal"
    );
    let refused = refused.expect("a refusal");
    assert_eq!(refused.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = http_exchange(&hub, &upgrade_request(&hub, "/ws", &[])).await;
    assert_eq!(reply.status, 101, "allowed again after Retry-After");
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_request_is_closed_and_oversized_heads_are_refused() {
    let hub = TestHub::builder().set("handshake_timeout", 1).start();
    // Half a request head, then nothing.
    let mut stream = tokio::net::TcpStream::connect(hub.addr()).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("still open after 5 s"),
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // Too many header lines, or a head too large: refused, never a hang.
    let many: Vec<String> = (0..200).map(|i| format!("X-Filler-{i}: {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let reply = http_exchange(&hub, &upgrade_request(&hub, "/ws", &many)).await;
    assert!(matches!(reply.status, 400 | 431), "{}", reply.status);
    let huge = format!("X-Huge: {}", "y".repeat(64 * 1024));
    let reply = http_exchange(&hub, &upgrade_request(&hub, "/ws", &[&huge])).await;
    assert!(matches!(reply.status, 400 | 431), "{}", reply.status);
    // The node serves on.
    let mut c = Client::connect(&hub).await;
    assert_eq!(burst(&mut c, 1, 1).await.0, 1);
}

#[tokio::test]
async fn the_node_holds_at_most_max_rooms_and_says_so() {
    let hub = TestHub::builder().set("max_rooms", 3).start();
    let mut a = Client::connect(&hub).await;
    for room in ["r1", "r2", "r3"] {
        a.subscribe(room).await;
    }
    let refused = a
        .request(json!({"op":"subscribe","room":"r4","id":9}))
        .await;
    assert_eq!(refused["code"], "limit_exceeded", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("3 rooms"));
    // Rooms the node has take more members.
    let mut b = Client::connect(&hub).await;
    b.subscribe("r2").await;
    // A room that empties makes a place.
    let left = a
        .request(json!({"op":"unsubscribe","room":"r1","id":2}))
        .await;
    assert_eq!(left, json!({"op":"ack","id":2}));
    b.subscribe("r4").await;
}
