//! Hostile and malformed input: every protocol error closes with the right code and frees the
//! connection; malformed JSON leaves the session usable; nothing a peer sends makes the hub buffer
//! without bound or spin.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_tests::{frame, frame_header, Client, RawClient, TestHub};

async fn closes_with(hub: &TestHub, bytes: &[u8], code: u16) -> RawClient {
    let mut c = RawClient::connect(hub).await;
    c.write(bytes).await.unwrap();
    assert_eq!(
        c.read_until_close().await,
        Some(code),
        "for bytes {:02x?}",
        &bytes[..bytes.len().min(16)]
    );
    assert!(
        c.closed_within(Duration::from_secs(3)).await,
        "TCP connection left open"
    );
    c
}

#[tokio::test]
async fn reserved_bit_closes_1002_and_the_cpu_stays_idle() {
    let hub = TestHub::start();
    let _c = closes_with(&hub, &frame(true, 0b100, 0x1, b"{}"), 1002).await;
    // An ignored protocol error would be returned on every poll and spin a core.
    let before = hub.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = hub.cpu_ticks() - before;
    assert!(
        used <= 10,
        "hub used {used} ticks (1/100 s) of CPU in 1 s while idle"
    );
}

#[tokio::test]
async fn other_protocol_violations_close_1002() {
    let hub = TestHub::start();
    // Unknown opcode 0x3.
    closes_with(&hub, &frame(true, 0, 0x3, b"x"), 1002).await;
    // Unmasked frame from a client.
    closes_with(&hub, &[0x81, 0x02, b'{', b'}'], 1002).await;
    // Control frame with more than 125 bytes.
    closes_with(&hub, &frame(true, 0, 0x9, &[0u8; 126]), 1002).await;
    // Fragmented control frame.
    closes_with(&hub, &frame(false, 0, 0x9, b"p"), 1002).await;
    // Continuation with nothing to continue.
    closes_with(&hub, &frame(true, 0, 0x0, b"x"), 1002).await;
    // Close frame with a reserved close code.
    closes_with(&hub, &frame(true, 0, 0x8, &1005u16.to_be_bytes()), 1002).await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let hub = TestHub::start();
    closes_with(&hub, &frame(true, 0, 0x1, &[b'{', 0xff, b'}']), 1007).await;
    // Split across fragments: refused without waiting for the end of the message.
    let mut bytes = frame(false, 0, 0x1, b"{\"op\":");
    bytes.extend(frame(false, 0, 0x0, &[0xc3, 0x28]));
    closes_with(&hub, &bytes, 1007).await;
}

#[tokio::test]
async fn frame_over_the_limit_closes_1009() {
    let hub = TestHub::start();
    let big = vec![b'a'; 64 * 1024 + 1];
    closes_with(&hub, &frame(true, 0, 0x1, &big), 1009).await;
}

#[tokio::test]
async fn reassembled_message_over_the_limit_closes_1009() {
    let hub = TestHub::start();
    let mut bytes = Vec::new();
    bytes.extend(frame(false, 0, 0x1, &[b' '; 40_000]));
    bytes.extend(frame(true, 0, 0x0, &[b' '; 40_000]));
    closes_with(&hub, &bytes, 1009).await;
}

#[tokio::test]
async fn a_1_gib_frame_header_closes_1009_at_once_without_buffering() {
    let hub = TestHub::start();
    let rss_before = hub.rss_kib();
    let mut c = RawClient::connect(&hub).await;
    c.write(&frame_header(true, 0, 0x2, 1 << 30)).await.unwrap();
    // Keep streaming payload as a hostile client would; the hub must refuse on the header alone.
    let chunk = vec![0u8; 1 << 20];
    let writer = async {
        for _ in 0..64 {
            if c.stream.try_write(&chunk).is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    writer.await;
    assert_eq!(c.read_until_close().await, Some(1009));
    assert!(c.closed_within(Duration::from_secs(3)).await);
    let grown = hub.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "hub RSS grew by {grown} KiB");
}

#[tokio::test]
async fn fragmented_messages_arrive_whole() {
    let hub = TestHub::start();
    let mut member = Client::connect(&hub).await;
    member.subscribe("frag").await;
    let mut c = RawClient::connect(&hub).await;
    let text = json!({"op":"publish","room":"frag","data":"héllo wörld","id":5}).to_string();
    let bytes = text.as_bytes();
    // Split inside a multi-byte character, with a ping between fragments.
    let cut1 = text.find('é').unwrap() + 1;
    let cut2 = text.find('ö').unwrap() + 1;
    let mut wire = frame(false, 0, 0x1, &bytes[..cut1]);
    wire.extend(frame(true, 0, 0x9, b"mid"));
    wire.extend(frame(false, 0, 0x0, &bytes[cut1..cut2]));
    wire.extend(frame(true, 0, 0x0, &bytes[cut2..]));
    c.write(&wire).await.unwrap();
    let pong = c.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"mid"[..]));
    assert_eq!(c.recv_json().await, json!({"op":"ack","id":5}));
    assert_eq!(member.recv().await["data"], "héllo wörld");
    // A fragmented binary message is refused whole, and the session stays open.
    let mut wire = frame(false, 0, 0x2, b"ab");
    wire.extend(frame(true, 0, 0x0, b"cd"));
    c.write(&wire).await.unwrap();
    assert_eq!(c.recv_json().await["code"], "unsupported");
    c.send_text(r#"{"op":"ping","id":6}"#).await;
    assert_eq!(c.recv_json().await, json!({"op":"pong","id":6}));
}

#[tokio::test]
async fn malformed_json_of_every_kind_leaves_the_session_usable() {
    let hub = TestHub::start();
    let mut c = Client::connect(&hub).await;
    let nasty = [
        "",
        " ",
        "{",
        "}",
        "{\"op\":}",
        "{\"op\":\"ping\"",
        "{\"op\":\"ping\"}}",
        "{\"op\":\"ping\"} trailing",
        "nul",
        "[]",
        "[{\"op\":\"ping\"}]",
        "\"ping\"",
        "42",
        "true",
        "null",
        "{\"op\":\"ping\",\"op\":\"ping\"}",
        "{\"op\":\"ping\",\"id\":-1}",
        "{\"op\":\"ping\",\"id\":1.5}",
        "{\"op\":\"ping\",\"id\":18446744073709551616}",
        "{\"op\":\"\\ud800\"}",
        "{\"op\":\"subscribe\",\"room\":[\"a\"]}",
        "{\"op\":\"publish\",\"room\":\"r\",\"data\":}",
        "{\"op\":\"publish\",\"room\":\"r\",\"data\":NaN}",
        &"[".repeat(10_000),
        &format!("{{\"op\":\"ping\",\"x\":{}}}", "[".repeat(5_000)),
    ];
    for text in nasty {
        c.send_text(text).await;
        let r = c.recv().await;
        assert_eq!(r["op"], "error", "{}", &text[..text.len().min(60)]);
        assert_eq!(r["code"], "bad_request", "{}", &text[..text.len().min(60)]);
    }
    assert_eq!(
        c.request(json!({"op":"ping","id":1})).await,
        json!({"op":"pong","id":1})
    );
}

#[tokio::test]
async fn a_session_closed_for_a_protocol_error_frees_its_connection_slot() {
    // One slot: each round can only connect once the previous session has let go of it.
    let hub = TestHub::builder().set("max_connections", 1).start();
    for _ in 0..5 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut c = loop {
            match RawClient::try_connect(&hub, None).await {
                Ok(c) => break c,
                Err(head) => {
                    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the slot was never freed"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        c.write(&frame(true, 0b010, 0x1, b"{}")).await.unwrap();
        assert_eq!(c.read_until_close().await, Some(1002));
        assert!(c.closed_within(Duration::from_secs(3)).await);
    }
}
