use serde_json::json;

use super::support::{admin, app, send, FakeHub, TOKEN};
use crate::policy::{MAX_ORIGINS, MAX_SUBPROTOCOLS};
use crate::{AdminOptions, Endpoint, Mode, Policy, StateFile, Subprotocol};

fn two_endpoints() -> Policy {
    let relay = Endpoint {
        compression: false,
        compression_min_bytes: 256,
        name: "relay".to_owned(),
        path: "/relay".to_owned(),
        mode: Mode::Relay,
        origins: vec!["https://app.example.com".parse().unwrap()],
        subprotocols: Vec::new(),
        require_subprotocol: false,
    };
    Policy::new(vec![Endpoint::builtin(), relay], None).unwrap()
}

#[actix_web::test]
async fn endpoints_are_listed_and_shown() {
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(hub);

    let reply = send(&app, admin("GET", "/admin/endpoints").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!([
            {
                "name": "default", "path": "/ws", "mode": "json", "origins": [],
                "subprotocols": [{"name": "switchboard.v1", "mode": "json"}],
                "require_subprotocol": false, "compression": false, "compression_min_bytes": 256
            },
            {
                "name": "relay", "path": "/relay", "mode": "relay",
                "origins": ["https://app.example.com"], "subprotocols": [],
                "require_subprotocol": false, "compression": false, "compression_min_bytes": 256
            }
        ])
    );

    let reply = send(&app, admin("GET", "/admin/endpoints/relay").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/relay");

    let reply = send(&app, admin("GET", "/admin/endpoints/missing").to_request()).await;
    reply.assert_error(404, "not_found");
}

#[actix_web::test]
async fn origins_are_listed() {
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(hub);
    let reply = send(
        &app,
        admin("GET", "/admin/endpoints/relay/origins").to_request(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"origins": ["https://app.example.com"]})
    );
    let reply = send(
        &app,
        admin("GET", "/admin/endpoints/missing/origins").to_request(),
    )
    .await;
    reply.assert_error(404, "not_found");
}

#[actix_web::test]
async fn an_added_origin_applies_to_the_next_handshake() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let req = admin("POST", "/admin/endpoints/default/origins")
        .set_json(json!({"origin": "HTTPS://Chat.Example.com:443", "ignored": true}))
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"origins": ["https://chat.example.com"]})
    );

    let policy = hub.policy.load();
    let endpoint = policy.endpoint("default").unwrap();
    assert!(endpoint.origin_allowed(Some("https://chat.example.com")));
    assert!(!endpoint.origin_allowed(Some("https://evil.example.com")));
}

#[actix_web::test]
async fn adding_an_origin_already_there_is_a_conflict() {
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(hub);
    // The same rule in another spelling is the same rule.
    let req = admin("POST", "/admin/endpoints/relay/origins")
        .set_json(json!({"origin": "https://APP.example.com:443"}))
        .to_request();
    send(&app, req).await.assert_error(409, "conflict");
    assert_eq!(
        hub.policy.load().endpoint("relay").unwrap().origins.len(),
        1
    );
}

#[actix_web::test]
async fn an_invalid_origin_is_refused_with_the_reason() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let cases = [
        ("https://example.com/path", "no path"),
        ("example.com", "scheme://"),
        ("https://*.com", "too broad"),
        ("", "empty"),
        ("https://user@example.com", "user information"),
    ];
    for (origin, reason) in cases {
        let req = admin("POST", "/admin/endpoints/default/origins")
            .set_json(json!({ "origin": origin }))
            .to_request();
        let reply = send(&app, req).await;
        reply.assert_error(422, "invalid_origin");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(reason), "{origin}: {message}");
    }
    assert!(hub
        .policy
        .load()
        .endpoint("default")
        .unwrap()
        .origins
        .is_empty());
}

#[actix_web::test]
async fn adding_an_origin_to_an_unknown_endpoint_is_a_404() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let req = admin("POST", "/admin/endpoints/missing/origins")
        .set_json(json!({"origin": "https://a.example.com"}))
        .to_request();
    send(&app, req).await.assert_error(404, "not_found");
}

#[actix_web::test]
async fn an_origin_is_removed_by_query_parameter() {
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(hub);
    let req = admin(
        "DELETE",
        "/admin/endpoints/relay/origins?origin=https%3A%2F%2Fapp.example.com",
    )
    .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"origins": []}));
    assert!(hub
        .policy
        .load()
        .endpoint("relay")
        .unwrap()
        .origins
        .is_empty());

    // Gone now.
    let req = admin(
        "DELETE",
        "/admin/endpoints/relay/origins?origin=https%3A%2F%2Fapp.example.com",
    )
    .to_request();
    send(&app, req).await.assert_error(404, "not_found");

    let req = admin("DELETE", "/admin/endpoints/relay/origins?origin=nonsense").to_request();
    send(&app, req).await.assert_error(422, "invalid_origin");

    let req = admin(
        "DELETE",
        "/admin/endpoints/missing/origins?origin=https%3A%2F%2Fapp.example.com",
    )
    .to_request();
    send(&app, req).await.assert_error(404, "not_found");
}

#[actix_web::test]
async fn put_replaces_every_origin() {
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(hub);
    let req = admin("PUT", "/admin/endpoints/relay/origins")
        .set_json(json!({"origins": [
            "https://b.example.com", "https://*.example.org", "https://B.example.com:443"
        ]}))
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"origins": ["https://b.example.com", "https://*.example.org"]})
    );

    // One bad rule and nothing changes.
    let req = admin("PUT", "/admin/endpoints/relay/origins")
        .set_json(json!({"origins": ["https://c.example.com", "ftp://"]}))
        .to_request();
    send(&app, req).await.assert_error(422, "invalid_origin");
    assert_eq!(
        hub.policy.load().endpoint("relay").unwrap().origins.len(),
        2
    );

    // An empty list opens the endpoint.
    let req = admin("PUT", "/admin/endpoints/relay/origins")
        .set_json(json!({"origins": []}))
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.json(), json!({"origins": []}));

    let req = admin("PUT", "/admin/endpoints/missing/origins")
        .set_json(json!({"origins": []}))
        .to_request();
    send(&app, req).await.assert_error(404, "not_found");
}

#[actix_web::test]
async fn too_many_origins_are_refused() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let origins: Vec<String> = (0..=MAX_ORIGINS)
        .map(|i| format!("https://o{i}.example.com"))
        .collect();
    let req = admin("PUT", "/admin/endpoints/default/origins")
        .set_json(json!({ "origins": origins }))
        .to_request();
    send(&app, req).await.assert_error(422, "limit_exceeded");
}

#[actix_web::test]
async fn subprotocols_are_listed_added_and_removed() {
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(hub);

    let reply = send(
        &app,
        admin("GET", "/admin/endpoints/default/subprotocols").to_request(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"subprotocols": [{"name": "switchboard.v1", "mode": "json"}]})
    );

    // Without a mode, the endpoint's mode.
    let req = admin("POST", "/admin/endpoints/relay/subprotocols")
        .set_json(json!({"name": "chat.v2"}))
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"subprotocols": [{"name": "chat.v2", "mode": "relay"}]})
    );
    let req = admin("POST", "/admin/endpoints/relay/subprotocols")
        .set_json(json!({"name": "echo.v1", "mode": "echo"}))
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(
        reply.json()["subprotocols"][1],
        json!({"name": "echo.v1", "mode": "echo"})
    );
    {
        let policy = hub.policy.load();
        let relay = policy.endpoint("relay").unwrap();
        assert_eq!(
            relay.subprotocols[1],
            Subprotocol {
                name: "echo.v1".to_owned(),
                mode: Mode::Echo
            }
        );
    }

    let reply = send(
        &app,
        admin("DELETE", "/admin/endpoints/relay/subprotocols/chat.v2").to_request(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"subprotocols": [{"name": "echo.v1", "mode": "echo"}]})
    );
    let reply = send(
        &app,
        admin("DELETE", "/admin/endpoints/relay/subprotocols/chat.v2").to_request(),
    )
    .await;
    reply.assert_error(404, "not_found");
    let reply = send(
        &app,
        admin("DELETE", "/admin/endpoints/missing/subprotocols/chat.v2").to_request(),
    )
    .await;
    reply.assert_error(404, "not_found");
    let reply = send(
        &app,
        admin("GET", "/admin/endpoints/missing/subprotocols").to_request(),
    )
    .await;
    reply.assert_error(404, "not_found");
}

#[actix_web::test]
async fn a_duplicate_subprotocol_is_a_conflict() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let req = admin("POST", "/admin/endpoints/default/subprotocols")
        .set_json(json!({"name": "switchboard.v1", "mode": "echo"}))
        .to_request();
    send(&app, req).await.assert_error(409, "conflict");
    assert_eq!(
        hub.policy
            .load()
            .endpoint("default")
            .unwrap()
            .subprotocols
            .len(),
        1
    );
}

#[actix_web::test]
async fn a_subprotocol_that_is_not_a_token_is_refused() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let long = "x".repeat(129);
    for name in ["", "chat v2", "chat,v2", "chät", "a/b", long.as_str()] {
        let req = admin("POST", "/admin/endpoints/default/subprotocols")
            .set_json(json!({ "name": name }))
            .to_request();
        send(&app, req)
            .await
            .assert_error(422, "invalid_subprotocol");
    }
    // An unknown mode is a body of the wrong shape.
    let req = admin("POST", "/admin/endpoints/default/subprotocols")
        .set_json(json!({"name": "ok", "mode": "binary"}))
        .to_request();
    send(&app, req).await.assert_error(400, "bad_request");
    let req = admin("POST", "/admin/endpoints/missing/subprotocols")
        .set_json(json!({"name": "ok"}))
        .to_request();
    send(&app, req).await.assert_error(404, "not_found");
}

#[actix_web::test]
async fn too_many_subprotocols_are_refused() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for i in 1..MAX_SUBPROTOCOLS {
        let req = admin("POST", "/admin/endpoints/default/subprotocols")
            .set_json(json!({ "name": format!("p{i}") }))
            .to_request();
        assert_eq!(send(&app, req).await.status, 201);
    }
    let req = admin("POST", "/admin/endpoints/default/subprotocols")
        .set_json(json!({"name": "one.too.many"}))
        .to_request();
    send(&app, req).await.assert_error(422, "limit_exceeded");
}

#[actix_web::test]
async fn every_change_is_saved_to_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path().join("state"));
    let hub = FakeHub::with_policy(two_endpoints());
    let app = app!(
        hub,
        AdminOptions {
            token: Some(TOKEN.to_owned()),
            state: Some(state.clone()),
        }
    );

    let req = admin("POST", "/admin/endpoints/default/origins")
        .set_json(json!({"origin": "https://a.example.com"}))
        .to_request();
    assert_eq!(send(&app, req).await.status, 201);
    let req = admin("POST", "/admin/endpoints/relay/subprotocols")
        .set_json(json!({"name": "chat.v2", "mode": "json"}))
        .to_request();
    assert_eq!(send(&app, req).await.status, 201);
    let req = admin(
        "DELETE",
        "/admin/endpoints/relay/origins?origin=https://app.example.com",
    )
    .to_request();
    assert_eq!(send(&app, req).await.status, 200);

    // A refused change does not touch the file.
    let before = std::fs::read(state.path()).unwrap();
    let req = admin("POST", "/admin/endpoints/default/origins")
        .set_json(json!({"origin": "https://a.example.com"}))
        .to_request();
    send(&app, req).await.assert_error(409, "conflict");
    assert_eq!(std::fs::read(state.path()).unwrap(), before);

    // A restart from the config alone gets the edits back.
    let (restored, warnings) = state.load(two_endpoints()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let live = hub.policy.snapshot();
    assert_eq!(restored.endpoints(), live.endpoints());
    assert_eq!(
        restored.endpoint("default").unwrap().origins[0].to_string(),
        "https://a.example.com"
    );
    assert!(restored.endpoint("relay").unwrap().origins.is_empty());
}

#[actix_web::test]
async fn a_failed_save_is_reported_but_the_change_stays_in_force() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the state directory should be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let hub = FakeHub::new();
    let app = app!(
        hub,
        AdminOptions {
            token: Some(TOKEN.to_owned()),
            state: Some(StateFile::in_dir(&blocker)),
        }
    );
    let req = admin("POST", "/admin/endpoints/default/origins")
        .set_json(json!({"origin": "https://a.example.com"}))
        .to_request();
    let reply = send(&app, req).await;
    reply.assert_error(503, "persist_failed");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("not-a-dir"), "{message}");
    assert!(hub
        .policy
        .load()
        .endpoint("default")
        .unwrap()
        .origin_allowed(Some("https://a.example.com")));
}
