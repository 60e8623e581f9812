//! permessage-deflate on a real hub, with raw clients that compress and inflate with their own
//! deflate: negotiation (accepted, declined, per endpoint), one compressed frame shared by every
//! member that negotiated it, compressed client messages, and the limit on what they inflate to.

#![allow(clippy::unwrap_used)]

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use switchboard_tests::{frame, metric_value, Client, RawClient, RawFrame, TestHub};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";

/// A hub on one worker whose default endpoint accepts compression for messages of 200 bytes
/// and more, with an endpoint `/plain` that does not.
fn hub() -> TestHub {
    TestHub::builder()
        .set("workers", 1)
        .config(
            "[[endpoints]]\nname = \"default\"\ncompression = true\ncompression_min_bytes = 200\n\n\
             [[endpoints]]\nname = \"plain\"\npath = \"/plain\"\n",
        )
        .start()
}

/// The response's `Sec-WebSocket-Extensions` value, if any.
fn extensions(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    })
}

/// A raw `switchboard.v1` client that offered `offer`; its welcome read.
async fn deflate_client(hub: &TestHub, path: &str, offer: &str) -> (RawClient, Option<String>) {
    let (mut c, head) = RawClient::connect_with(hub, path, &[offer]).await.unwrap();
    let welcome = c.read_frame().await.unwrap();
    assert_eq!((welcome.opcode, welcome.rsv), (0x1, 0), "{welcome:?}");
    (c, extensions(&head))
}

/// A message's payload as the client reads it: inflated when RSV1 says it is compressed.
fn payload(f: &RawFrame) -> Vec<u8> {
    if f.rsv & 4 == 0 {
        return f.payload.clone();
    }
    let mut input = f.payload.clone();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A client's compressed text frame (RSV1), deflated with its own compressor.
fn compressed_frame(opcode: u8, data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    frame(true, 4, opcode, &out)
}

async fn subscribe(c: &mut RawClient, room: &str) {
    c.send_text(&json!({"op":"subscribe","room":room,"id":1}).to_string())
        .await;
    let ack = c.recv_json().await;
    assert_eq!(ack["op"], "ack", "{ack}");
}

async fn deflated_so_far(hub: &TestHub) -> f64 {
    let text = hub.admin_as(None, "GET", "/metrics", None).await.body;
    metric_value(
        &text,
        "switchboard_deflate_messages_total{direction=\"out\"}",
    )
}

/// A dashboard-like payload of about 2 KB.
fn dashboard() -> Value {
    let series: Vec<Value> = (0..40)
        .map(|i| json!({"host": format!("web-{i}"), "cpu_pct": 25 + i, "mem_mb": 512 + i}))
        .collect();
    json!({"kind":"metrics","series":series})
}

#[tokio::test]
async fn members_that_negotiated_compression_share_one_compressed_frame_others_get_it_plain() {
    let hub = hub();
    let mut zipped = Vec::new();
    for _ in 0..3 {
        let (mut c, agreed) = deflate_client(&hub, "/ws", OFFER).await;
        assert_eq!(
            agreed.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        subscribe(&mut c, "dash").await;
        zipped.push(c);
    }
    let mut plain = RawClient::connect(&hub).await;
    subscribe(&mut plain, "dash").await;
    let mut publisher = Client::connect(&hub).await;
    let before = deflated_so_far(&hub).await;

    publisher.publish("dash", dashboard(), "node").await;
    let reference = plain.read_frame().await.unwrap();
    assert_eq!((reference.opcode, reference.rsv), (0x1, 0));
    let message: Value = serde_json::from_slice(&reference.payload).unwrap();
    assert_eq!(message["data"], dashboard());
    for c in &mut zipped {
        let f = c.read_frame().await.unwrap();
        assert_eq!((f.opcode, f.rsv, f.fin), (0x1, 4, true), "compressed");
        assert!(
            f.payload.len() * 3 < reference.payload.len(),
            "{} vs {} bytes",
            f.payload.len(),
            reference.payload.len()
        );
        assert_eq!(payload(&f), reference.payload);
    }
    // One compression for the three members.
    assert_eq!(deflated_so_far(&hub).await - before, 1.0);

    // A message under `compression_min_bytes`, and replies, go out plain.
    publisher.publish("dash", json!("short"), "node").await;
    for c in &mut zipped {
        let f = c.read_frame().await.unwrap();
        assert_eq!(f.rsv, 0, "{f:?}");
        assert_eq!(
            serde_json::from_slice::<Value>(&f.payload).unwrap()["data"],
            "short"
        );
    }
    assert_eq!(deflated_so_far(&hub).await - before, 1.0);
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_and_a_deflate_bomb_is_closed_with_1009() {
    let hub = hub();
    let (mut sender, _) = deflate_client(&hub, "/ws", OFFER).await;
    let mut member = Client::connect(&hub).await;
    member.subscribe("chat").await;

    // A compressed publish, then a compressed one in two fragments with a ping between them.
    let publish = json!({"op":"publish","room":"chat","data":"x".repeat(500),"id":7});
    sender
        .write(&compressed_frame(0x1, publish.to_string().as_bytes()))
        .await
        .unwrap();
    assert_eq!(sender.recv_json().await, json!({"op":"ack","id":7}));
    let got = member.recv().await;
    assert_eq!(got["data"], "x".repeat(500));

    let second = json!({"op":"publish","room":"chat","data":"second","id":8});
    let whole = compressed_frame(0x1, second.to_string().as_bytes());
    let data = &whole[6..]; // the masked payload: re-frame it in two fragments
    let unmasked: Vec<u8> = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ [0x37, 0xfa, 0x21, 0x3d][i % 4])
        .collect();
    let (a, b) = unmasked.split_at(unmasked.len() / 2);
    let mut bytes = frame(false, 4, 0x1, a);
    bytes.extend(frame(true, 0, 0x9, b"hi"));
    bytes.extend(frame(true, 0, 0x0, b));
    sender.write(&bytes).await.unwrap();
    let pong = sender.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"hi"[..]));
    assert_eq!(sender.recv_json().await, json!({"op":"ack","id":8}));
    assert_eq!(member.recv().await["data"], "second");

    // 4 MiB of spaces inside a publish, a few KiB compressed: over the 64 KiB message limit
    // once inflated, so the session is closed with 1009 before it is held in memory.
    let (mut bomber, _) = deflate_client(&hub, "/ws", OFFER).await;
    let bomb = format!(
        "{{\"op\":\"publish\",\"room\":\"chat\",\"data\":\"{}\"}}",
        " ".repeat(4 << 20)
    );
    let frame = compressed_frame(0x1, bomb.as_bytes());
    assert!(frame.len() < 65_536, "{}", frame.len());
    bomber.write(&frame).await.unwrap();
    assert_eq!(bomber.read_until_close().await, Some(1009));

    // Compressed data that is not deflate: 1007. RSV1 from a client that did not negotiate
    // compression: 1002.
    let (mut junk, _) = deflate_client(&hub, "/ws", OFFER).await;
    junk.write(&frame_with_rsv1(&[0xff; 16])).await.unwrap();
    assert_eq!(junk.read_until_close().await, Some(1007));
    let mut stranger = RawClient::connect(&hub).await;
    stranger
        .write(&compressed_frame(0x1, b"{\"op\":\"ping\"}"))
        .await
        .unwrap();
    assert_eq!(stranger.read_until_close().await, Some(1002));

    // The others go on.
    sender
        .write(&compressed_frame(0x1, publish.to_string().as_bytes()))
        .await
        .unwrap();
    assert_eq!(sender.recv_json().await, json!({"op":"ack","id":7}));
    assert_eq!(member.recv().await["data"], "x".repeat(500));
}

fn frame_with_rsv1(payload: &[u8]) -> Vec<u8> {
    frame(true, 4, 0x1, payload)
}

#[tokio::test]
async fn offers_are_declined_per_endpoint_and_per_parameter_and_a_small_window_gets_plain_frames() {
    let hub = hub();
    // An endpoint without compression, and offers the hub declines: no extension, plain frames.
    for (path, offer) in [
        ("/plain", OFFER),
        (
            "/ws",
            "Sec-WebSocket-Extensions: permessage-deflate; mystery=1",
        ),
        (
            "/ws",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16",
        ),
        ("/ws", "Sec-WebSocket-Extensions: x-webkit-deflate-frame"),
    ] {
        let (_, agreed) = deflate_client(&hub, path, offer).await;
        assert_eq!(agreed, None, "{path} {offer}");
    }
    // The first acceptable offer wins.
    let (_, agreed) = deflate_client(
        &hub,
        "/ws",
        "Sec-WebSocket-Extensions: permessage-deflate; bogus, permessage-deflate; server_no_context_takeover",
    )
    .await;
    assert!(agreed.is_some());

    // A client asking for a 1 KiB window is accepted (the answer names the window) and sent
    // every message plain: the shared compressor uses a 32 KiB one.
    let (mut small, agreed) = deflate_client(
        &hub,
        "/ws",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10",
    )
    .await;
    assert_eq!(
        agreed.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    subscribe(&mut small, "dash").await;
    let mut publisher = Client::connect(&hub).await;
    publisher.publish("dash", dashboard(), "node").await;
    let f = small.read_frame().await.unwrap();
    assert_eq!(f.rsv, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&f.payload).unwrap()["data"],
        dashboard()
    );
    // It may still send compressed messages.
    small
        .write(&compressed_frame(
            0x1,
            json!({"op":"ping","id":3}).to_string().as_bytes(),
        ))
        .await
        .unwrap();
    assert_eq!(small.recv_json().await["op"], "pong");
}
