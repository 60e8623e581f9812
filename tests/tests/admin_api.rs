//! The admin API against a real hub process: every route, auth, validation, persistence across
//! a restart, and policy changes reaching the very next handshake.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::{http_exchange, temp_path, upgrade_request, Client, TestHub, ADMIN_TOKEN};

fn url(hub: &TestHub, path: &str) -> String {
    format!("ws://{}{path}", hub.addr)
}

/// Asserts the status and the API's error shape; returns the error code.
fn error_code(reply: &switchboard_tests::HttpReply, status: u16) -> String {
    assert_eq!(reply.status, status, "{reply:?}");
    let body = reply.json();
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn health_and_metrics_need_no_token_and_admin_routes_do() {
    let hub = TestHub::start();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = hub.admin_as(None, "GET", path, None).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }
    let reply = hub.admin_as(None, "GET", "/readyz", None).await;
    assert_eq!(reply.json()["status"], "ready");
    for token in [
        None,
        Some("wrong"),
        Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
    ] {
        let reply = hub.admin_as(token, "GET", "/admin/endpoints", None).await;
        assert_eq!(error_code(&reply, 401), "unauthorized");
        assert!(reply.header("www-authenticate").is_some(), "{reply:?}");
    }
    assert_eq!(hub.admin("GET", "/admin/endpoints", None).await.status, 200);
    // Unknown routes answer in the API's shape.
    let reply = hub.admin("GET", "/admin/nothing", None).await;
    assert_eq!(error_code(&reply, 404), "not_found");
}

#[actix_rt::test]
async fn metrics_count_what_happened() {
    let hub = TestHub::start();
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    b.subscribe("m").await;
    a.publish("m", json!(1), "node").await;
    b.recv().await;
    let refused = http_exchange(&hub, &upgrade_request(&hub, "/nope", &[])).await;
    assert_eq!(refused.status, 404);
    let text = hub.admin_as(None, "GET", "/metrics", None).await.body;
    let value = |needle: &str| switchboard_tests::metric_value(&text, needle);
    assert_eq!(value("switchboard_connections{endpoint=\"default\"}"), 2.0);
    assert_eq!(
        value("switchboard_handshakes_total{result=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        value("switchboard_handshakes_total{result=\"not_found\"}"),
        1.0
    );
    assert_eq!(value("switchboard_rooms "), 1.0);
    assert_eq!(value("switchboard_subscriptions "), 1.0);
    assert_eq!(
        value("switchboard_messages_published_total{scope=\"node\",source=\"client\"}"),
        1.0
    );
    assert_eq!(value("switchboard_messages_delivered_total "), 1.0);
    assert_eq!(value("switchboard_fanout_seconds_count "), 1.0);
    assert_eq!(
        value("switchboard_frames_received_total{kind=\"text\"}"),
        2.0
    );
    assert!(value("switchboard_bytes_total{direction=\"in\"}") > 0.0);
    assert!(value("switchboard_bytes_total{direction=\"out\"}") > 0.0);
    assert!(value("process_resident_memory_bytes ") > 0.0);
    drop(a);
    // The disconnect is counted once the hub sees the connection end.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = hub.admin_as(None, "GET", "/metrics", None).await.body;
        if text.contains("switchboard_disconnects_total{reason=\"connection_lost\"} 1")
            || text.contains("switchboard_disconnects_total{reason=\"client_close\"} 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no disconnect counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn endpoints_are_listed_and_shown() {
    let hub = TestHub::start();
    let reply = hub.admin("GET", "/admin/endpoints", None).await;
    assert_eq!(reply.status, 200);
    let list = reply.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "default");
    assert_eq!(list[0]["path"], "/ws");
    assert_eq!(list[0]["mode"], "json");
    let one = hub.admin("GET", "/admin/endpoints/default", None).await;
    assert_eq!(
        one.json()["subprotocols"],
        json!([{"name":"switchboard.v1","mode":"json"}])
    );
    let missing = hub.admin("GET", "/admin/endpoints/nope", None).await;
    error_code(&missing, 404);
}

#[actix_rt::test]
async fn origin_changes_apply_to_the_next_handshake() {
    let hub = TestHub::start();
    let origin = |o: &'static str| [("Origin", o)];
    Client::open_json(&url(&hub, "/ws"), &origin("https://evil.example"))
        .await
        .unwrap();
    let reply = hub
        .admin(
            "POST",
            "/admin/endpoints/default/origins",
            Some(&json!({"origin": "https://app.example.com"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["origins"], json!(["https://app.example.com"]));
    let (status, _) = Client::open_json(&url(&hub, "/ws"), &origin("https://evil.example"))
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    Client::open_json(&url(&hub, "/ws"), &origin("https://app.example.com"))
        .await
        .unwrap();
    // Duplicate, invalid.
    let dup = hub
        .admin(
            "POST",
            "/admin/endpoints/default/origins",
            Some(&json!({"origin": "https://app.example.com"})),
        )
        .await;
    error_code(&dup, 409);
    for bad in [
        "ftp//x",
        "https://a.com/path",
        "https://*.com",
        "",
        "https://a b.com",
    ] {
        let reply = hub
            .admin(
                "POST",
                "/admin/endpoints/default/origins",
                Some(&json!({"origin": bad})),
            )
            .await;
        assert_eq!(error_code(&reply, 422), "invalid_origin", "{bad}");
    }
    // Replace all, then remove one.
    let reply = hub
        .admin(
            "PUT",
            "/admin/endpoints/default/origins",
            Some(&json!({"origins": ["https://*.example.org", "http://localhost:3000"]})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    Client::open_json(&url(&hub, "/ws"), &origin("https://a.example.org"))
        .await
        .unwrap();
    let reply = hub
        .admin("GET", "/admin/endpoints/default/origins", None)
        .await;
    assert_eq!(
        reply.json()["origins"],
        json!(["https://*.example.org", "http://localhost:3000"])
    );
    let reply = hub
        .admin(
            "DELETE",
            "/admin/endpoints/default/origins?origin=https%3A%2F%2F*.example.org",
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["origins"], json!(["http://localhost:3000"]));
    let (status, _) = Client::open_json(&url(&hub, "/ws"), &origin("https://a.example.org"))
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    let reply = hub
        .admin(
            "DELETE",
            "/admin/endpoints/default/origins?origin=https%3A%2F%2Fnot.there",
            None,
        )
        .await;
    error_code(&reply, 404);
    let reply = hub
        .admin(
            "POST",
            "/admin/endpoints/nope/origins",
            Some(&json!({"origin": "https://a.com"})),
        )
        .await;
    error_code(&reply, 404);
}

#[actix_rt::test]
async fn subprotocol_changes_apply_to_the_next_handshake() {
    let hub = TestHub::start();
    let offer = [("Sec-WebSocket-Protocol", "chat.v2")];
    let (status, _) = Client::open_json(&url(&hub, "/ws"), &offer)
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    let reply = hub
        .admin(
            "POST",
            "/admin/endpoints/default/subprotocols",
            Some(&json!({"name": "chat.v2", "mode": "json"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let client = Client::open_json(&url(&hub, "/ws"), &offer).await.unwrap();
    assert_eq!(client.protocol.as_deref(), Some("chat.v2"));
    let dup = hub
        .admin(
            "POST",
            "/admin/endpoints/default/subprotocols",
            Some(&json!({"name": "chat.v2"})),
        )
        .await;
    assert_eq!(error_code(&dup, 409), "conflict");
    for bad in ["a b", "", "x/y", "ü"] {
        let reply = hub
            .admin(
                "POST",
                "/admin/endpoints/default/subprotocols",
                Some(&json!({"name": bad})),
            )
            .await;
        assert_eq!(error_code(&reply, 422), "invalid_subprotocol", "{bad:?}");
    }
    let reply = hub
        .admin(
            "POST",
            "/admin/endpoints/default/subprotocols",
            Some(&json!({"name": "x", "mode": "loud"})),
        )
        .await;
    assert!((400..500).contains(&reply.status), "{reply:?}");
    let reply = hub
        .admin(
            "DELETE",
            "/admin/endpoints/default/subprotocols/chat.v2",
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (status, _) = Client::open_json(&url(&hub, "/ws"), &offer)
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    let reply = hub
        .admin(
            "DELETE",
            "/admin/endpoints/default/subprotocols/chat.v2",
            None,
        )
        .await;
    error_code(&reply, 404);
    let list = hub
        .admin("GET", "/admin/endpoints/default/subprotocols", None)
        .await;
    assert_eq!(
        list.json()["subprotocols"],
        json!([{"name":"switchboard.v1","mode":"json"}])
    );
}

#[actix_rt::test]
async fn malformed_bodies_get_the_error_shape() {
    let hub = TestHub::start();
    let raw = |body: &str| {
        format!(
            "POST /admin/endpoints/default/origins HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for body in ["{", "[]", "{\"origin\": 5}", "null"] {
        let reply = switchboard_tests::http_exchange_at(hub.admin_addr, raw(body).as_bytes()).await;
        assert!((400..500).contains(&reply.status), "{body}: {reply:?}");
        assert!(
            reply.json()["error"]["code"].is_string(),
            "{body}: {reply:?}"
        );
    }
}

#[actix_rt::test]
async fn policy_changes_survive_a_restart() {
    let dir = temp_path("state");
    let start = || TestHub::builder().set("state_dir", dir.display()).start();
    let hub = start();
    let reply = hub
        .admin(
            "PUT",
            "/admin/endpoints/default/origins",
            Some(&json!({"origins": ["https://kept.example"]})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = hub
        .admin(
            "POST",
            "/admin/endpoints/default/subprotocols",
            Some(&json!({"name": "kept.v1", "mode": "echo"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    drop(hub);
    // No temp file is left beside the state file.
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    let hub = start();
    let endpoint = hub
        .admin("GET", "/admin/endpoints/default", None)
        .await
        .json();
    assert_eq!(endpoint["origins"], json!(["https://kept.example"]));
    assert_eq!(
        endpoint["subprotocols"][1],
        json!({"name":"kept.v1","mode":"echo"})
    );
    let (status, _) = Client::open_json(&url(&hub, "/ws"), &[("Origin", "https://other.example")])
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    let mut echo = Client::open(
        &url(&hub, "/ws"),
        &[
            ("Origin", "https://kept.example"),
            ("Sec-WebSocket-Protocol", "kept.v1"),
        ],
    )
    .await
    .unwrap();
    echo.send_text("back").await;
    assert_eq!(
        echo.recv_message().await,
        tokio_tungstenite::tungstenite::Message::text("back")
    );
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn rooms_are_listed_paged_and_shown() {
    let hub = TestHub::start();
    let mut clients = Vec::new();
    for room in ["chat:a", "chat:b", "chat:c", "news", "with space/and:colon"] {
        let mut c = Client::connect(&hub).await;
        c.subscribe(room).await;
        clients.push(c);
    }
    clients[0].subscribe("chat:b").await;
    let page = hub
        .admin("GET", "/admin/rooms?prefix=chat:&limit=2", None)
        .await
        .json();
    assert_eq!(
        page["items"],
        json!([{"name":"chat:a","members":1},{"name":"chat:b","members":2}])
    );
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = hub
        .admin(
            "GET",
            &format!("/admin/rooms?prefix=chat:&limit=2&cursor={cursor}"),
            None,
        )
        .await
        .json();
    assert_eq!(next["items"], json!([{"name":"chat:c","members":1}]));
    assert_eq!(next["next_cursor"], Value::Null);

    let detail = hub.admin("GET", "/admin/rooms/chat:b", None).await.json();
    assert_eq!(detail["name"], "chat:b");
    let mut sessions: Vec<&str> = detail["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["session"].as_str().unwrap())
        .collect();
    sessions.sort_unstable();
    let mut want = vec![clients[0].session(), clients[1].session()];
    want.sort_unstable();
    assert_eq!(sessions, want);
    assert!(detail["members"][0]["worker"].is_u64());
    let encoded = hub
        .admin("GET", "/admin/rooms/with%20space%2Fand%3Acolon", None)
        .await;
    assert_eq!(encoded.status, 200, "{encoded:?}");
    assert_eq!(encoded.json()["name"], "with space/and:colon");
    error_code(&hub.admin("GET", "/admin/rooms/empty", None).await, 404);
}

#[actix_rt::test]
async fn sessions_are_listed_shown_kicked_and_sent_to() {
    let hub = TestHub::start();
    let mut a = Client::connect(&hub).await;
    let b = Client::connect(&hub).await;
    a.subscribe("x").await;
    let page = hub
        .admin("GET", "/admin/sessions?limit=1", None)
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], a.session());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = hub
        .admin(
            "GET",
            &format!("/admin/sessions?limit=1&cursor={cursor}"),
            None,
        )
        .await
        .json();
    assert_eq!(next["items"][0]["id"], b.session());

    let one = hub
        .admin("GET", &format!("/admin/sessions/{}", a.session()), None)
        .await
        .json();
    assert_eq!(one["endpoint"], "default");
    assert_eq!(one["mode"], "json");
    assert_eq!(one["subscriptions"], 1);
    assert!(one["connected_at"].as_u64().unwrap() > 1_700_000_000);

    let reply = hub
        .admin(
            "POST",
            &format!("/admin/sessions/{}/send", a.session()),
            Some(&json!({"data": {"note": "hi", "n": 1.50}})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        a.recv().await,
        json!({"op":"direct","data":{"note":"hi","n":1.50},"from":"admin"})
    );
    let big = "x".repeat(70_000);
    let reply = hub
        .admin(
            "POST",
            &format!("/admin/sessions/{}/send", a.session()),
            Some(&json!({"data": big})),
        )
        .await;
    error_code(&reply, 413);

    let reply = hub
        .admin("DELETE", &format!("/admin/sessions/{}", a.session()), None)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Kicking again while it closes is harmless: still kicked (200) or already gone (404).
    for _ in 0..3 {
        let reply = hub
            .admin("DELETE", &format!("/admin/sessions/{}", a.session()), None)
            .await;
        assert!(matches!(reply.status, 200 | 404), "{reply:?}");
    }
    assert_eq!(a.recv_close().await, Some(4001));
    for path in ["/admin/sessions/nope", "/admin/sessions/00000000-999"] {
        error_code(&hub.admin("GET", path, None).await, 404);
        error_code(&hub.admin("DELETE", path, None).await, 404);
    }
}

#[actix_rt::test]
async fn admin_publish_reaches_members_from_admin() {
    let hub = TestHub::start();
    let mut members = switchboard_tests::spread_clients(&hub, 2).await;
    for m in &mut members {
        m.subscribe("ops").await;
    }
    for scope in ["node", "cluster", "worker"] {
        let reply = hub
            .admin(
                "POST",
                "/admin/rooms/ops/publish",
                Some(&json!({"data": {"scope": scope}, "scope": scope})),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        for m in &mut members {
            assert_eq!(
                m.recv().await,
                json!({"op":"message","room":"ops","data":{"scope":scope},"from":"admin"})
            );
        }
    }
    let reply = hub
        .admin(
            "POST",
            "/admin/rooms/ops/publish",
            Some(&json!({"data": 1, "scope": "galaxy"})),
        )
        .await;
    assert!((400..500).contains(&reply.status), "{reply:?}");
    let reply = hub
        .admin(
            "POST",
            "/admin/rooms/ops/publish",
            Some(&json!({"scope": "node"})),
        )
        .await;
    assert!((400..500).contains(&reply.status), "{reply:?}");
    let reply = hub
        .admin(
            "POST",
            "/admin/rooms/ops/publish",
            Some(&json!({"data": "x".repeat(70_000)})),
        )
        .await;
    error_code(&reply, 413);
    let reply = hub
        .admin(
            "POST",
            "/admin/rooms/a%01b/publish",
            Some(&json!({"data": 1})),
        )
        .await;
    assert_eq!(error_code(&reply, 422), "invalid_room");
}

#[actix_rt::test]
async fn readiness_turns_503_while_draining() {
    let hub = TestHub::builder().set("shutdown_window", 3).start();
    let _client = Client::connect(&hub).await;
    hub.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let reply = hub.admin_as(None, "GET", "/readyz", None).await;
        if reply.status == 503 {
            assert_eq!(reply.json()["status"], "draining");
            // Liveness still holds while draining.
            assert_eq!(
                hub.admin_as(None, "GET", "/healthz", None).await.status,
                200
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn the_openapi_document_describes_every_route() {
    let hub = TestHub::start();
    let doc = hub.admin("GET", "/admin/openapi.json", None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/admin/endpoints", "get"),
        ("/admin/endpoints/{name}", "get"),
        ("/admin/endpoints/{name}/origins", "get"),
        ("/admin/endpoints/{name}/origins", "post"),
        ("/admin/endpoints/{name}/origins", "put"),
        ("/admin/endpoints/{name}/origins", "delete"),
        ("/admin/endpoints/{name}/subprotocols", "get"),
        ("/admin/endpoints/{name}/subprotocols", "post"),
        ("/admin/endpoints/{name}/subprotocols/{protocol}", "delete"),
        ("/admin/rooms", "get"),
        ("/admin/rooms/{room}", "get"),
        ("/admin/rooms/{room}/publish", "post"),
        ("/admin/sessions", "get"),
        ("/admin/sessions/{id}", "get"),
        ("/admin/sessions/{id}", "delete"),
        ("/admin/sessions/{id}/send", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
}

#[test]
fn a_public_admin_listener_without_a_token_refuses_to_start() {
    let output = switchboard_tests::hub_command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
}

/// A standalone node has no cluster broker: a `cluster` publish reaches this node only, and is
/// counted as what it did (`node`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_counted_by_the_scope_they_reached() {
    let hub = TestHub::start();
    let mut a = Client::connect(&hub).await;
    a.publish("m", json!(1), "cluster").await;
    a.publish("m", json!(2), "node").await;
    a.publish("m", json!(3), "worker").await;
    let ack = a
        .request(json!({"op":"publish","room":"m","data":4,"id":9}))
        .await;
    assert_eq!(ack["op"], "ack");
    let text = hub.admin_as(None, "GET", "/metrics", None).await.body;
    let count = |scope: &str| {
        let needle =
            format!("switchboard_messages_published_total{{scope=\"{scope}\",source=\"client\"}}");
        switchboard_tests::metric_value(&text, &needle)
    };
    assert_eq!(
        count("node"),
        3.0,
        "cluster (twice, once by default) and node"
    );
    assert_eq!(count("worker"), 1.0);
    assert_eq!(count("cluster"), 0.0);
}
