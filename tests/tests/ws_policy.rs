//! The handshake policy: endpoints by path and their modes, Origin allowlists, subprotocol
//! negotiation, plain-HTTP answers, and what a bad handshake gets (an HTTP error, never an
//! upgrade). Token auth is in `ws_tokens.rs`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_tests::{http_exchange, upgrade_request, Client, RawClient, TestHub};
use tokio_tungstenite::tungstenite::Message;

/// Endpoints used by most tests: the default one with an Origin allowlist and extra
/// subprotocols, a relay, an echo and one that requires a subprotocol.
const POLICY: &str = r#"
[[endpoints]]
name = "default"
origins = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]
subprotocols = ["switchboard.v1", { name = "chat.v2", mode = "json" }, { name = "echo.v1", mode = "echo" }]

[[endpoints]]
name = "relay"
path = "/relay"
mode = "relay"

[[endpoints]]
name = "relay-b"
path = "/relay/b"
mode = "relay"

[[endpoints]]
name = "echo"
path = "/echo"
mode = "echo"

[[endpoints]]
name = "strict"
path = "/strict"
subprotocols = ["switchboard.v1"]
require_subprotocol = true
"#;

fn hub() -> TestHub {
    TestHub::builder().config(POLICY).start()
}

fn url(hub: &TestHub, path: &str) -> String {
    format!("ws://{}{path}", hub.addr)
}

/// The upgrade must be refused with `status` and a JSON error body whose code is `code`; the
/// connection is closed after the answer and never upgraded.
async fn refused(
    hub: &TestHub,
    path: &str,
    headers: &[&str],
    status: u16,
    code: &str,
) -> serde_json::Value {
    let reply = http_exchange(hub, &upgrade_request(hub, path, headers)).await;
    assert_eq!(reply.status, status, "{path} {headers:?}: {reply:?}");
    assert!(
        reply.closed,
        "connection left open after a refusal: {reply:?}"
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

async fn upgraded(hub: &TestHub, path: &str, headers: &[&str]) {
    let reply = http_exchange(hub, &upgrade_request(hub, path, headers)).await;
    assert_eq!(reply.status, 101, "{path} {headers:?}: {reply:?}");
}

#[actix_rt::test]
async fn exact_origin_is_accepted_with_host_case_and_default_port_ignored() {
    let hub = hub();
    for origin in [
        "https://app.example.com",
        "https://APP.Example.com",
        "https://app.example.com:443",
        "http://localhost:3000",
    ] {
        upgraded(&hub, "/ws", &[&format!("Origin: {origin}")]).await;
    }
}

#[actix_rt::test]
async fn wildcard_origin_matches_one_or_more_subdomain_labels_only() {
    let hub = hub();
    for origin in ["https://a.example.org", "https://a.b.example.org"] {
        upgraded(&hub, "/ws", &[&format!("Origin: {origin}")]).await;
    }
    for origin in [
        "https://example.org",
        "https://badexample.org",
        "http://a.example.org",
        "https://a.example.org.evil.com",
    ] {
        let body = refused(
            &hub,
            "/ws",
            &[&format!("Origin: {origin}")],
            403,
            "origin_not_allowed",
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(origin), "{message}");
    }
}

#[actix_rt::test]
async fn missing_or_mismatched_origin_is_403_naming_the_reason() {
    let hub = hub();
    let body = refused(&hub, "/ws", &[], 403, "origin_not_allowed").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no Origin"),
        "{body}"
    );
    for origin in [
        "https://evil.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        "https://app.example.com/path",
    ] {
        refused(
            &hub,
            "/ws",
            &[&format!("Origin: {origin}")],
            403,
            "origin_not_allowed",
        )
        .await;
    }
    refused(
        &hub,
        "/ws",
        &[
            "Origin: https://app.example.com",
            "Origin: https://evil.com",
        ],
        403,
        "origin_not_allowed",
    )
    .await;
}

#[actix_rt::test]
async fn an_endpoint_without_origins_accepts_any_origin_or_none() {
    let hub = hub();
    upgraded(&hub, "/echo", &[]).await;
    upgraded(&hub, "/echo", &["Origin: https://anything.test"]).await;
    upgraded(&hub, "/relay/room", &["Origin: null"]).await;
}

#[actix_rt::test]
async fn the_first_offered_accepted_subprotocol_wins_and_is_echoed() {
    let hub = hub();
    for (offer, chosen) in [
        ("chat.v2, switchboard.v1", "chat.v2"),
        ("switchboard.v1, chat.v2", "switchboard.v1"),
        ("nope, chat.v2", "chat.v2"),
        ("x.v9,switchboard.v1", "switchboard.v1"),
    ] {
        let header = format!("Sec-WebSocket-Protocol: {offer}");
        let reply = http_exchange(
            &hub,
            &upgrade_request(&hub, "/ws", &["Origin: https://app.example.com", &header]),
        )
        .await;
        assert_eq!(reply.status, 101, "{offer}: {reply:?}");
        assert_eq!(
            reply.header("sec-websocket-protocol"),
            Some(chosen),
            "{offer}"
        );
    }
    // Offers split over several header lines count in order too.
    let reply = http_exchange(
        &hub,
        &upgrade_request(
            &hub,
            "/ws",
            &[
                "Origin: https://app.example.com",
                "Sec-WebSocket-Protocol: other",
                "Sec-WebSocket-Protocol: chat.v2, switchboard.v1",
            ],
        ),
    )
    .await;
    assert_eq!(reply.header("sec-websocket-protocol"), Some("chat.v2"));
    // A real client in the chosen protocol gets the switchboard.v1 welcome.
    let client = Client::open_json(
        &url(&hub, "/ws"),
        &[
            ("Origin", "https://app.example.com"),
            ("Sec-WebSocket-Protocol", "chat.v2, switchboard.v1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("chat.v2"));
    assert_eq!(client.welcome["protocol"], "switchboard.v1");
}

#[actix_rt::test]
async fn without_an_offer_the_endpoint_mode_applies_and_no_protocol_is_echoed() {
    let hub = hub();
    let client = Client::open_json(&url(&hub, "/ws"), &[("Origin", "https://app.example.com")])
        .await
        .unwrap();
    assert_eq!(client.protocol, None);
}

#[actix_rt::test]
async fn a_subprotocol_selects_its_mode() {
    let hub = hub();
    let mut client = Client::open(
        &url(&hub, "/ws"),
        &[
            ("Origin", "https://app.example.com"),
            ("Sec-WebSocket-Protocol", "echo.v1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("echo.v1"));
    // Echo mode: no welcome, the message comes straight back.
    client.send_text("not json at all").await;
    assert_eq!(
        client.recv_message().await,
        Message::text("not json at all")
    );
}

#[actix_rt::test]
async fn no_accepted_subprotocol_is_400_listing_the_accepted_names() {
    let hub = hub();
    let body = refused(
        &hub,
        "/ws",
        &[
            "Origin: https://app.example.com",
            "Sec-WebSocket-Protocol: mqtt, graphql-ws",
        ],
        400,
        "subprotocol_not_accepted",
    )
    .await;
    assert_eq!(
        body["error"]["accepted"],
        json!(["switchboard.v1", "chat.v2", "echo.v1"]),
        "{body}"
    );
    // Names are compared exactly.
    refused(
        &hub,
        "/ws",
        &[
            "Origin: https://app.example.com",
            "Sec-WebSocket-Protocol: Switchboard.V1",
        ],
        400,
        "subprotocol_not_accepted",
    )
    .await;
}

#[actix_rt::test]
async fn require_subprotocol_refuses_a_client_that_offers_none() {
    let hub = hub();
    let body = refused(&hub, "/strict", &[], 400, "subprotocol_not_accepted").await;
    assert_eq!(body["error"]["accepted"], json!(["switchboard.v1"]));
    let client = Client::open_json(
        &url(&hub, "/strict"),
        &[("Sec-WebSocket-Protocol", "switchboard.v1")],
    )
    .await
    .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("switchboard.v1"));
}

#[actix_rt::test]
async fn plain_http_to_an_endpoint_is_426_with_a_text_body() {
    let hub = hub();
    for path in ["/ws", "/relay/room", "/echo", "/strict"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            hub.addr
        );
        let reply = http_exchange(&hub, request.as_bytes()).await;
        assert_eq!(reply.status, 426, "{path}: {reply:?}");
        assert_eq!(reply.header("upgrade"), Some("websocket"), "{reply:?}");
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{reply:?}"
        );
        assert!(reply.body.contains("Upgrade Required"), "{reply:?}");
    }
    let request = format!(
        "GET /nothing HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    let reply = http_exchange(&hub, request.as_bytes()).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "not_found");
    // An upgrade to a path no endpoint serves is 404 too, and not upgraded.
    refused(&hub, "/nothing", &[], 404, "not_found").await;
    // Prefixes match whole segments: `/wsx` is not `/ws`.
    refused(&hub, "/wsx", &[], 404, "not_found").await;
}

#[actix_rt::test]
async fn relay_forwards_text_and_binary_verbatim_to_the_other_members_only() {
    let hub = hub();
    // Enough members that both workers hold some (connections alternate between workers).
    let mut members = Vec::new();
    for _ in 0..4 {
        members.push(Client::open(&url(&hub, "/relay/lobby"), &[]).await.unwrap());
    }
    let mut elsewhere = Client::open(&url(&hub, "/relay/other"), &[]).await.unwrap();
    // A switchboard.v1 session in the same-named room must not see relay traffic.
    let mut json_client = Client::open_json(
        &url(&hub, "/strict"),
        &[("Sec-WebSocket-Protocol", "switchboard.v1")],
    )
    .await
    .unwrap();
    json_client.subscribe("lobby").await;
    // Nor a member of the same room name on another relay endpoint.
    let mut other_endpoint = Client::open(&url(&hub, "/relay/b/lobby"), &[])
        .await
        .unwrap();

    let binary = vec![0u8, 159, 146, 150, 255, 1, 2];
    members[0].send_raw(Message::text("{not: json}")).await;
    members[0].send_raw(Message::binary(binary.clone())).await;
    for member in &mut members[1..] {
        assert_eq!(member.recv_message().await, Message::text("{not: json}"));
        assert_eq!(member.recv_message().await, Message::binary(binary.clone()));
    }
    // Another member answers: the first one gets it, and nothing of its own.
    members[2].send_raw(Message::text("reply")).await;
    assert_eq!(members[0].recv_message().await, Message::text("reply"));
    assert_eq!(members[1].recv_message().await, Message::text("reply"));
    members[0].expect_silence(Duration::from_millis(300)).await;
    members[2].expect_silence(Duration::from_millis(100)).await;
    elsewhere.expect_silence(Duration::from_millis(100)).await;
    json_client.expect_silence(Duration::from_millis(100)).await;
    other_endpoint
        .expect_silence(Duration::from_millis(100))
        .await;
}

#[actix_rt::test]
async fn relay_forwards_a_fragmented_message_whole() {
    let hub = hub();
    let mut receiver = Client::open(&url(&hub, "/relay/frag"), &[]).await.unwrap();
    let mut sender = RawClient::connect_path(&hub, "/relay/frag").await;
    sender
        .write(&switchboard_tests::frame(false, 0, 0x2, &[1, 2]))
        .await
        .unwrap();
    sender
        .write(&switchboard_tests::frame(false, 0, 0x0, &[3]))
        .await
        .unwrap();
    sender
        .write(&switchboard_tests::frame(true, 0, 0x0, &[4, 5]))
        .await
        .unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Message::binary(vec![1, 2, 3, 4, 5])
    );
}

#[actix_rt::test]
async fn a_relay_path_must_name_a_valid_room() {
    let hub = hub();
    refused(&hub, "/relay", &[], 400, "invalid_room").await;
    refused(&hub, "/relay/", &[], 400, "invalid_room").await;
    refused(&hub, "/relay/a%00b", &[], 400, "invalid_room").await;
    refused(&hub, "/relay/%ff", &[], 400, "invalid_room").await;
    let long = "r".repeat(300);
    refused(&hub, &format!("/relay/{long}"), &[], 400, "invalid_room").await;
    // Percent-escapes name the room they decode to.
    let mut a = Client::open(&url(&hub, "/relay/chat%3Alobby"), &[])
        .await
        .unwrap();
    let mut b = Client::open(&url(&hub, "/relay/chat:lobby"), &[])
        .await
        .unwrap();
    a.send_raw(Message::text("hi")).await;
    assert_eq!(b.recv_message().await, Message::text("hi"));
}

#[actix_rt::test]
async fn echo_sends_every_message_back_to_its_sender() {
    let hub = hub();
    let mut client = Client::open(&url(&hub, "/echo"), &[]).await.unwrap();
    let mut other = Client::open(&url(&hub, "/echo"), &[]).await.unwrap();
    client.send_raw(Message::text("héllo")).await;
    assert_eq!(client.recv_message().await, Message::text("héllo"));
    client.send_raw(Message::binary(vec![0, 255])).await;
    assert_eq!(client.recv_message().await, Message::binary(vec![0, 255]));
    other.expect_silence(Duration::from_millis(200)).await;
}

#[actix_rt::test]
async fn garbage_in_sec_websocket_protocol_is_400_and_the_hub_keeps_serving() {
    let hub = hub();
    let many = vec!["p"; 40].join(",");
    for value in ["a b c", ",,,,", "\"quoted\"", "x/y", &many] {
        let header = format!("Sec-WebSocket-Protocol: {value}");
        let reply = http_exchange(
            &hub,
            &upgrade_request(&hub, "/ws", &["Origin: https://app.example.com", &header]),
        )
        .await;
        // `,,,,` offers nothing, which the default endpoint accepts; everything else is refused.
        if value == ",,,," {
            assert_eq!(reply.status, 101, "{value}: {reply:?}");
        } else {
            assert_eq!(reply.status, 400, "{value}: {reply:?}");
            assert!(reply.closed);
        }
    }
    // Bytes that are not text.
    let mut request = upgrade_request(&hub, "/ws", &["Origin: https://app.example.com"]);
    let at = request.len() - 2;
    request.splice(
        at..at,
        b"Sec-WebSocket-Protocol: \xff\xfe\x01\r\n".iter().copied(),
    );
    let reply = http_exchange(&hub, &request).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    Client::open_json(&url(&hub, "/ws"), &[("Origin", "https://app.example.com")])
        .await
        .unwrap();
}

#[actix_rt::test]
async fn malformed_and_oversized_headers_get_a_4xx_never_an_upgrade() {
    let hub = hub();
    let huge_origin = format!("Origin: https://{}.example.org", "a".repeat(100_000));
    let many_headers: Vec<String> = (0..200).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let cases: Vec<Vec<u8>> = vec![
        upgrade_request(&hub, "/ws", &[&huge_origin]),
        upgrade_request(&hub, "/ws", &many),
        upgrade_request(&hub, "/ws", &["Origin https://app.example.com"]),
        upgrade_request(&hub, "/ws", &["Origin: https://app.example.com\x01"]),
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(),
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nOrigin: https://app.example.com\r\n\r\n".to_vec(),
    ];
    for request in cases {
        let reply = http_exchange(&hub, &request).await;
        assert!(
            (400..500).contains(&reply.status),
            "{:?}: {reply:?}",
            String::from_utf8_lossy(&request[..request.len().min(120)])
        );
    }
    Client::open_json(&url(&hub, "/ws"), &[("Origin", "https://app.example.com")])
        .await
        .unwrap();
}
