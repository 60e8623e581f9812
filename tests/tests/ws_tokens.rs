//! Token auth: HS256 JWTs checked before the upgrade (header or `token` query parameter), room
//! grants (`forbidden`), the user shown to others, `refresh`, and expiry (close 4002).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::{
    http_exchange, sign_token, unix_now, upgrade_request, Client, TestHub, STEP,
};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-test-secret-of-32-bytes-length";

const RELAY: &str = r#"
[[endpoints]]
name = "relay"
path = "/relay"
mode = "relay"
"#;

fn hub() -> TestHub {
    TestHub::builder()
        .set("token_secret", SECRET)
        .config(RELAY)
        .start()
}

fn token(sub: &str, exp_in: i64, subscribe: &[&str], publish: &[&str]) -> String {
    sign_token(
        SECRET.as_bytes(),
        &json!({
            "sub": sub,
            "exp": unix_now() as i64 + exp_in,
            "subscribe": subscribe,
            "publish": publish,
        }),
    )
}

fn url(hub: &TestHub, path: &str) -> String {
    format!("ws://{}{path}", hub.addr)
}

async fn connect(hub: &TestHub, token: &str) -> Client {
    let bearer = format!("Bearer {token}");
    Client::open_json(&url(hub, "/ws"), &[("Authorization", &bearer)])
        .await
        .unwrap()
}

/// Expects a 401 JSON refusal, without an upgrade, and returns the error message.
async fn unauthorized(hub: &TestHub, path: &str, headers: &[&str]) -> String {
    let reply = http_exchange(hub, &upgrade_request(hub, path, headers)).await;
    assert_eq!(reply.status, 401, "{headers:?}: {reply:?}");
    assert!(reply.closed, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let body = reply.json();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn a_missing_bad_or_expired_token_is_401_before_the_upgrade() {
    let hub = hub();
    assert!(unauthorized(&hub, "/ws", &[]).await.contains("missing"));
    let wrong_key = sign_token(
        b"another-secret-entirely-00000000",
        &json!({"sub": "u", "exp": unix_now() + 60}),
    );
    let message = unauthorized(
        &hub,
        "/ws",
        &[&format!("Authorization: Bearer {wrong_key}")],
    )
    .await;
    assert!(message.contains("signature"), "{message}");
    let expired = token("u", -5, &["*"], &["*"]);
    let message = unauthorized(&hub, "/ws", &[&format!("Authorization: Bearer {expired}")]).await;
    assert!(message.contains("expired"), "{message}");
    // The payload changed after signing.
    let good = token("u", 60, &["*"], &["*"]);
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_claims = sign_token(
        SECRET.as_bytes(),
        &json!({"sub": "admin", "exp": unix_now() + 60}),
    );
    let forged_payload = forged_claims.split('.').nth(1).unwrap().to_owned();
    parts[1] = &forged_payload;
    unauthorized(
        &hub,
        "/ws",
        &[&format!("Authorization: Bearer {}", parts.join("."))],
    )
    .await;
    // `alg: none` is never accepted.
    let none = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        good.split('.').nth(1).unwrap()
    );
    unauthorized(&hub, "/ws", &[&format!("Authorization: Bearer {none}")]).await;
    for garbage in ["Bearer", "Bearer x.y", "Basic dXNlcjpwYXNz", "Bearer ....."] {
        unauthorized(&hub, "/ws", &[&format!("Authorization: {garbage}")]).await;
    }
    unauthorized(&hub, "/ws?token=not-a-jwt", &[]).await;
    unauthorized(&hub, "/relay/room", &[]).await;
}

#[actix_rt::test]
async fn a_token_in_the_header_or_query_admits_and_names_the_user() {
    let hub = hub();
    let t = token("alice", 60, &["*"], &["*"]);
    let client = connect(&hub, &t).await;
    assert_eq!(client.welcome["user"], "alice");
    let client = Client::open_json(&url(&hub, &format!("/ws?x=1&token={t}")), &[])
        .await
        .unwrap();
    assert_eq!(client.welcome["user"], "alice");
}

#[actix_rt::test]
async fn rooms_outside_the_token_patterns_are_forbidden() {
    let hub = hub();
    let t = token("bob", 60, &["chat:*", "news"], &["chat:general"]);
    let mut client = connect(&hub, &t).await;
    for room in ["chat:general", "chat:", "chat:x:y", "news"] {
        client.subscribe(room).await;
    }
    for room in ["news:2", "chatter", "other", "Chat:general"] {
        let r = client
            .request(json!({"op":"subscribe","room":room,"id":5}))
            .await;
        assert_eq!(r["op"], "error", "{room}: {r}");
        assert_eq!(r["code"], "forbidden", "{room}: {r}");
        assert_eq!(r["id"], 5);
    }
    client.publish("chat:general", json!(1), "node").await;
    assert_eq!(client.recv().await["op"], "message");
    for room in ["chat:random", "news"] {
        let r = client
            .request(json!({"op":"publish","room":room,"data":1,"id":6}))
            .await;
        assert_eq!(
            (r["op"].as_str(), r["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{room}: {r}"
        );
    }
}

#[actix_rt::test]
async fn messages_carry_the_publishers_user() {
    let hub = hub();
    let mut alice = connect(&hub, &token("alice", 60, &["*"], &["*"])).await;
    let mut bob = connect(&hub, &token("bob", 60, &["*"], &["*"])).await;
    bob.subscribe("lobby").await;
    alice.publish("lobby", json!({"t": "hi"}), "node").await;
    let m = bob.recv().await;
    assert_eq!(
        m,
        json!({"op":"message","room":"lobby","data":{"t":"hi"},"from":alice.session(),"user":"alice"})
    );
}

#[actix_rt::test]
async fn a_session_is_closed_with_4002_when_its_token_expires() {
    let hub = hub();
    let mut client = connect(&hub, &token("carol", 2, &["*"], &["*"])).await;
    let started = std::time::Instant::now();
    assert_eq!(client.recv_close().await, Some(4002));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < STEP,
        "{waited:?}"
    );
}

#[actix_rt::test]
async fn refresh_replaces_the_token_and_postpones_expiry() {
    let hub = hub();
    let mut client = connect(&hub, &token("dave", 2, &["a"], &["a"])).await;
    // The new token extends the session and widens its grants.
    let newer = token("dave", 120, &["a", "b"], &["a", "b"]);
    let r = client
        .request(json!({"op":"refresh","token":newer,"id":1}))
        .await;
    assert_eq!(r, json!({"op":"ack","id":1}));
    client.subscribe("b").await;
    // Past the first token's expiry the session still answers.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = client.request(json!({"op":"ping","id":2})).await;
    assert_eq!(r, json!({"op":"pong","id":2}));
}

#[actix_rt::test]
async fn a_bad_refresh_is_an_error_and_changes_nothing() {
    let hub = hub();
    let mut client = connect(&hub, &token("erin", 60, &["a"], &["a"])).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!("garbage"), "invalid_token"),
        (json!(token("mallory", 60, &["*"], &["*"])), "invalid_token"),
        (json!(token("erin", -1, &["*"], &["*"])), "invalid_token"),
        (
            json!(sign_token(
                b"wrong-secret-wrong-secret-wrong!",
                &json!({"sub":"erin","exp":unix_now()+60,"subscribe":["*"]})
            )),
            "invalid_token",
        ),
        (json!(17), "bad_request"),
    ];
    for (t, code) in cases {
        let r = client
            .request(json!({"op":"refresh","token":t,"id":3}))
            .await;
        assert_eq!(r["op"], "error", "{t}: {r}");
        assert_eq!(r["code"], code, "{t}: {r}");
        assert_eq!(r["id"], 3);
    }
    // The grants are still those of the first token.
    let r = client
        .request(json!({"op":"subscribe","room":"b","id":4}))
        .await;
    assert_eq!(r["code"], "forbidden");
}

#[actix_rt::test]
async fn refresh_without_tokens_in_use_is_invalid_token() {
    let hub = TestHub::start();
    let mut client = Client::connect(&hub).await;
    assert!(client.welcome.get("user").is_none(), "{}", client.welcome);
    let r = client
        .request(json!({"op":"refresh","token":"a.b.c","id":1}))
        .await;
    assert_eq!(r["code"], "invalid_token", "{r}");
}

#[actix_rt::test]
async fn relay_rooms_follow_the_token_grants() {
    let hub = hub();
    let reader = token("r", 60, &["room:*"], &[]);
    let writer = token("w", 60, &["room:*"], &["room:*"]);
    let outsider = token("o", 60, &["other"], &["other"]);
    let reply = http_exchange(
        &hub,
        &upgrade_request(
            &hub,
            "/relay/room:1",
            &[&format!("Authorization: Bearer {outsider}")],
        ),
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "forbidden");

    let mut r = Client::open(&url(&hub, &format!("/relay/room:1?token={reader}")), &[])
        .await
        .unwrap();
    let mut w = Client::open(&url(&hub, &format!("/relay/room:1?token={writer}")), &[])
        .await
        .unwrap();
    w.send_raw(Message::text("from the writer")).await;
    assert_eq!(r.recv_message().await, Message::text("from the writer"));
    // A member without publish rights that sends is closed with 1008, and nothing is relayed.
    r.send_raw(Message::text("not allowed")).await;
    assert_eq!(r.recv_close().await, Some(1008));
    w.expect_silence(Duration::from_millis(300)).await;
}

#[actix_rt::test]
async fn oversized_tokens_are_refused_with_a_4xx_and_never_upgraded() {
    let hub = hub();
    let big = "a".repeat(100 * 1024);
    for request in [
        upgrade_request(&hub, "/ws", &[&format!("Authorization: Bearer {big}")]),
        upgrade_request(&hub, &format!("/ws?token={big}"), &[]),
    ] {
        let reply = http_exchange(&hub, &request).await;
        assert!((400..500).contains(&reply.status), "{reply:?}");
    }
    // Over the token limit but well within header limits: a clear 401.
    let long = "b".repeat(10 * 1024);
    let message = unauthorized(&hub, "/ws", &[&format!("Authorization: Bearer {long}")]).await;
    assert!(message.contains("longer than"), "{message}");
    // The hub still serves.
    let client = connect(&hub, &token("ok", 60, &["*"], &["*"])).await;
    assert_eq!(client.welcome["user"], "ok");
}
