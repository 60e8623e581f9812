//! Every client op and every error code of `switchboard.v1`, against a real hub.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use switchboard_tests::{frame, Client, RawClient, TestHub};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_names_session_node_worker_protocol_and_heartbeat() {
    let hub = TestHub::builder().set("node_id", "n1").start();
    let c = Client::connect(&hub).await;
    let w = &c.welcome;
    assert_eq!(w["op"], "welcome");
    assert_eq!(w["node"], "n1");
    assert_eq!(w["protocol"], "switchboard.v1");
    assert_eq!(w["heartbeat"], 25);
    assert!(w["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(w["worker"].as_u64().is_some_and(|w| w < 2));
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_and_ping_round_trip() {
    let hub = TestHub::start();
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    assert_eq!(
        a.request(json!({"op":"subscribe","room":"r","id":1})).await,
        json!({"op":"ack","id":1})
    );
    // Subscribing twice is not an error.
    assert_eq!(
        a.request(json!({"op":"subscribe","room":"r","id":2})).await,
        json!({"op":"ack","id":2})
    );
    assert_eq!(
        b.request(json!({"op":"publish","room":"r","data":{"x":[1,2,"three"]},"id":3}))
            .await,
        json!({"op":"ack","id":3})
    );
    let m = a.recv().await;
    assert_eq!(
        m,
        json!({"op":"message","room":"r","data":{"x":[1,2,"three"]},"from":b.session()})
    );
    assert_eq!(
        a.request(json!({"op":"unsubscribe","room":"r","id":4}))
            .await,
        json!({"op":"ack","id":4})
    );
    b.publish("r", json!("after"), "node").await;
    assert_eq!(
        a.request(json!({"op":"ping","id":5})).await,
        json!({"op":"pong","id":5})
    );
    // Without an id the reply has none.
    assert_eq!(a.request(json!({"op":"ping"})).await, json!({"op":"pong"}));
}

#[tokio::test]
async fn data_is_delivered_verbatim_and_publisher_member_gets_its_own_message() {
    let hub = TestHub::start();
    let mut a = Client::connect(&hub).await;
    a.subscribe("room/ü").await;
    a.send_text(r#"{"op":"publish","room":"room/ü","data": [ 1.50, null , {"k" : "v"} ],"id":9}"#)
        .await;
    let mut got = Vec::new();
    got.push(a.recv().await);
    got.push(a.recv().await);
    let ack = got.iter().find(|v| v["op"] == "ack").unwrap();
    assert_eq!(ack, &json!({"op":"ack","id":9}));
    let msg = got.iter().find(|v| v["op"] == "message").unwrap();
    assert_eq!(msg["from"], a.session());
    assert_eq!(msg["room"], "room/ü");
    assert_eq!(msg["data"], json!([1.5, null, {"k":"v"}]));
}

#[tokio::test]
async fn null_data_is_a_valid_payload() {
    let hub = TestHub::start();
    let mut a = Client::connect(&hub).await;
    a.subscribe("n").await;
    let mut b = Client::connect(&hub).await;
    b.publish("n", Value::Null, "node").await;
    assert_eq!(a.recv().await["data"], Value::Null);
}

async fn expect_error(c: &mut Client, text: &str, code: &str, id: Value) {
    c.send_text(text).await;
    let r = c.recv().await;
    let text: String = text.chars().take(120).collect();
    assert_eq!(r["op"], "error", "{text} -> {r}");
    assert_eq!(r["code"], code, "{text} -> {r}");
    assert_eq!(r["id"], id, "{text} -> {r}");
    assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn every_error_code_is_answered_and_the_session_stays_usable() {
    let hub = TestHub::builder().set("max_subscriptions", 3).start();
    let mut c = Client::connect(&hub).await;
    expect_error(&mut c, "not json", "bad_request", Value::Null).await;
    expect_error(&mut c, "[1,2]", "bad_request", Value::Null).await;
    expect_error(&mut c, r#"{"room":"r","id":1}"#, "bad_request", json!(1)).await;
    expect_error(&mut c, r#"{"op":7,"id":2}"#, "bad_request", json!(2)).await;
    expect_error(
        &mut c,
        r#"{"op":"subscribe","room":5,"id":3}"#,
        "bad_request",
        json!(3),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"op":"publish","room":"r","id":4}"#,
        "bad_request",
        json!(4),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"op":"publish","room":"r","data":1,"scope":"galaxy","id":5}"#,
        "bad_request",
        json!(5),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"op":"ping","id":"seven"}"#,
        "bad_request",
        Value::Null,
    )
    .await;
    expect_error(&mut c, r#"{"op":"dance","id":6}"#, "unknown_op", json!(6)).await;
    expect_error(
        &mut c,
        r#"{"op":"subscribe","room":"","id":7}"#,
        "invalid_room",
        json!(7),
    )
    .await;
    let long = "x".repeat(201);
    expect_error(
        &mut c,
        &json!({"op":"subscribe","room":long,"id":8}).to_string(),
        "invalid_room",
        json!(8),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"op":"subscribe","room":"a\nb","id":9}"#,
        "invalid_room",
        json!(9),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"op":"unsubscribe","room":"never","id":10}"#,
        "not_subscribed",
        json!(10),
    )
    .await;
    // The outgoing frame adds `from` to the data: within the 64 KiB limit in, over it out.
    let prefix = r#"{"op":"publish","room":"r","id":11,"data":""#;
    let big = "y".repeat(65536 - prefix.len() - 2);
    let text = format!("{prefix}{big}\"}}");
    assert_eq!(text.len(), 65536);
    expect_error(&mut c, &text, "too_large", json!(11)).await;
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    let r = c.recv().await;
    assert_eq!(
        (r["op"].as_str(), r["code"].as_str()),
        (Some("error"), Some("unsupported"))
    );
    for (i, room) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(
            c.request(json!({"op":"subscribe","room":room,"id":i}))
                .await["op"],
            "ack"
        );
    }
    expect_error(
        &mut c,
        r#"{"op":"subscribe","room":"d","id":12}"#,
        "limit_exceeded",
        json!(12),
    )
    .await;
    // Re-subscribing to a room already held does not count against the limit.
    assert_eq!(
        c.request(json!({"op":"subscribe","room":"a","id":13}))
            .await["op"],
        "ack"
    );
    // After all that, the session still works.
    assert_eq!(
        c.request(json!({"op":"ping","id":14})).await,
        json!({"op":"pong","id":14})
    );
}

#[tokio::test]
async fn room_of_200_bytes_is_accepted() {
    let hub = TestHub::start();
    let mut c = Client::connect(&hub).await;
    let room = "é".repeat(100);
    assert_eq!(
        c.request(json!({"op":"subscribe","room":room,"id":1}))
            .await,
        json!({"op":"ack","id":1})
    );
}

/// Requests without an `id` are fire and forget: no answer when they succeed, an error (with
/// `"id":null`) when they fail; `ping` is always answered; answers keep request order.
#[tokio::test]
async fn requests_without_an_id_are_answered_only_when_they_fail() {
    let hub = TestHub::start();
    let mut member = Client::connect(&hub).await;
    let mut publisher = Client::connect(&hub).await;
    // A subscribe without id takes effect without an ack: the next request's answer comes first.
    member
        .send(json!({"op":"subscribe","room":"ff","scope":"node"}))
        .await;
    assert_eq!(
        member.request(json!({"op":"ping","id":1})).await,
        json!({"op":"pong","id":1})
    );
    // Publishes without id: delivered, never acknowledged.
    for n in 0..3 {
        publisher
            .send(json!({"op":"publish","room":"ff","data":n,"scope":"node"}))
            .await;
    }
    for n in 0..3 {
        let m = member.recv().await;
        assert_eq!(
            (m["op"].as_str(), m["data"].as_u64()),
            (Some("message"), Some(n))
        );
    }
    // A failing request without id is answered, with a null id, in order.
    publisher
        .send(json!({"op":"publish","room":"","data":1}))
        .await;
    publisher.send(json!({"op":"ping"})).await;
    let error = publisher.recv().await;
    assert_eq!(
        (error["op"].as_str(), &error["id"]),
        (Some("error"), &Value::Null)
    );
    assert_eq!(publisher.recv().await, json!({"op":"pong"}));
    publisher
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
    // An unsubscribe without id: no answer, and the member gets nothing more.
    member.send(json!({"op":"unsubscribe","room":"ff"})).await;
    assert_eq!(
        member
            .request(json!({"op":"unsubscribe","room":"ff","id":2}))
            .await["code"],
        "not_subscribed"
    );
    publisher
        .send(json!({"op":"publish","room":"ff","data":9,"scope":"node"}))
        .await;
    member
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn invalid_utf8_closes_the_session_while_the_text_frame_is_still_arriving() {
    let hub = TestHub::start();
    let mut c = RawClient::connect(&hub).await;
    // A 64 KiB text frame, of which only the first bytes come, the third character invalid.
    let mut payload = b"ok \xff".to_vec();
    payload.resize(64 * 1024, b'a');
    let whole = frame(true, 0, 0x1, &payload);
    c.write(&whole[..whole.len() - 60_000]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(c.read_until_close().await, Some(1007));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
