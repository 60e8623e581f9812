use std::sync::atomic::Ordering;

use actix_web::test::TestRequest;
use serde_json::json;
use switchboard_protocol::Scope;

use super::support::{admin, app, send, FakeHub};

#[actix_web::test]
async fn health_readiness_and_metrics() {
    let hub = FakeHub::new();
    let app = app!(hub);

    let reply = send(&app, TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"status": "ok"}));

    let reply = send(&app, TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"status": "ready"}));
    hub.ready.store(false, Ordering::Relaxed);
    let reply = send(&app, TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json(), json!({"status": "draining"}));

    let reply = send(&app, TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(String::from_utf8(reply.body)
        .unwrap()
        .contains("switchboard_sessions 3"));
}

#[actix_web::test]
async fn rooms_are_paged_in_name_order() {
    let hub = FakeHub::new();
    for name in ["a", "b", "c", "d", "e"] {
        hub.add_room(name, &["s1"]);
    }
    hub.add_room("other", &["s1", "s2"]);
    let app = app!(hub);

    let reply = send(&app, admin("GET", "/admin/rooms?limit=2").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"items": [{"name": "a", "members": 1}, {"name": "b", "members": 1}],
               "next_cursor": "b"})
    );
    let reply = send(
        &app,
        admin("GET", "/admin/rooms?limit=2&cursor=b").to_request(),
    )
    .await;
    assert_eq!(reply.json()["next_cursor"], "d");
    let reply = send(
        &app,
        admin("GET", "/admin/rooms?limit=2&cursor=d").to_request(),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"items": [{"name": "e", "members": 1}, {"name": "other", "members": 2}],
               "next_cursor": null})
    );

    // A page that exactly fits is the last one.
    let reply = send(&app, admin("GET", "/admin/rooms?limit=6").to_request()).await;
    assert_eq!(reply.json()["items"].as_array().unwrap().len(), 6);
    assert_eq!(reply.json()["next_cursor"], json!(null));

    let reply = send(&app, admin("GET", "/admin/rooms?prefix=o").to_request()).await;
    assert_eq!(
        reply.json(),
        json!({"items": [{"name": "other", "members": 2}], "next_cursor": null})
    );
}

#[actix_web::test]
async fn page_sizes_are_clamped() {
    let hub = FakeHub::new();
    for i in 0..1005 {
        hub.add_room(&format!("room-{i:04}"), &["s"]);
    }
    let app = app!(hub);
    let count = |reply: super::support::Reply| reply.json()["items"].as_array().unwrap().len();
    assert_eq!(
        count(send(&app, admin("GET", "/admin/rooms").to_request()).await),
        100
    );
    assert_eq!(
        count(send(&app, admin("GET", "/admin/rooms?limit=0").to_request()).await),
        1
    );
    for huge in ["5000", "2147483648", "99999999999999999999999999"] {
        let uri = format!("/admin/rooms?limit={huge}");
        assert_eq!(
            count(send(&app, admin("GET", &uri).to_request()).await),
            1000
        );
    }
}

#[actix_web::test]
async fn a_room_is_shown_by_its_encoded_name() {
    let hub = FakeHub::new();
    hub.add_room("team/42: daily chat", &["s1", "s2"]);
    hub.add_room("100% ok?", &["s3"]);
    let app = app!(hub);

    let reply = send(
        &app,
        admin("GET", "/admin/rooms/team%2F42%3A%20daily%20chat").to_request(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"name": "team/42: daily chat", "members": [
            {"session": "s1", "user": "user-s1", "worker": 0},
            {"session": "s2", "user": "user-s2", "worker": 0}
        ], "nodes": [{"node": "fake", "members": 2}], "missing": []})
    );
    let reply = send(
        &app,
        admin("GET", "/admin/rooms/100%25%20ok%3F").to_request(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["name"], "100% ok?");

    let reply = send(&app, admin("GET", "/admin/rooms/empty").to_request()).await;
    reply.assert_error(404, "not_found");
}

#[actix_web::test]
async fn an_invalid_room_name_is_a_422() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let long = "r".repeat(201);
    for uri in [
        "/admin/rooms/a%0Ab".to_owned(),
        "/admin/rooms/%00".to_owned(),
        format!("/admin/rooms/{long}"),
    ] {
        let reply = send(&app, admin("GET", &uri).to_request()).await;
        reply.assert_error(422, "invalid_room");
        let req = admin("POST", &format!("{uri}/publish"))
            .set_json(json!({"data": 1}))
            .to_request();
        send(&app, req).await.assert_error(422, "invalid_room");
    }
    assert!(hub.published.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn publish_passes_data_verbatim_with_its_scope() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let req = admin("POST", "/admin/rooms/news%2Fworld/publish")
        .insert_header(("content-type", "application/json"))
        .set_payload(r#"{"data": {"b":1,  "a":[1.50,"\u00e9"]}, "unknown": 1}"#)
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"published": "news/world"}));

    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!({"data": "hi", "scope": "worker"}))
        .to_request();
    assert_eq!(send(&app, req).await.status, 200);
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!({"data": null, "scope": "node"}))
        .to_request();
    assert_eq!(send(&app, req).await.status, 200);

    assert_eq!(
        *hub.published.lock().unwrap(),
        vec![
            (
                "news/world".to_owned(),
                r#"{"b":1,  "a":[1.50,"\u00e9"]}"#.to_owned(),
                Scope::Cluster
            ),
            ("lobby".to_owned(), r#""hi""#.to_owned(), Scope::Worker),
            ("lobby".to_owned(), "null".to_owned(), Scope::Node),
        ]
    );
}

#[actix_web::test]
async fn publish_refusals() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!([1, "node"]))
        .to_request();
    send(&app, req).await.assert_error(400, "bad_request");
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!({"data": 1, "scope": "galaxy"}))
        .to_request();
    send(&app, req).await.assert_error(400, "bad_request");
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!({"scope": "node"}))
        .to_request();
    send(&app, req).await.assert_error(400, "bad_request");
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!({"data": "x".repeat(100)}))
        .to_request();
    send(&app, req).await.assert_error(413, "too_large");

    *hub.unavailable.lock().unwrap() = Some("draining".to_owned());
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .set_json(json!({"data": 1}))
        .to_request();
    send(&app, req).await.assert_error(503, "unavailable");
    assert!(hub.published.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn sessions_are_paged_shown_and_kicked() {
    let hub = FakeHub::new();
    for id in ["s1", "s2", "s3"] {
        hub.add_session(id);
    }
    let app = app!(hub);

    let reply = send(&app, admin("GET", "/admin/sessions?limit=2").to_request()).await;
    assert_eq!(reply.status, 200);
    let page = reply.json();
    assert_eq!(page["items"][0]["id"], "s1");
    assert_eq!(page["items"][1]["id"], "s2");
    assert_eq!(page["next_cursor"], "s2");
    let reply = send(&app, admin("GET", "/admin/sessions?cursor=s2").to_request()).await;
    assert_eq!(reply.json()["items"].as_array().unwrap().len(), 1);
    assert_eq!(reply.json()["next_cursor"], json!(null));

    let reply = send(&app, admin("GET", "/admin/sessions/s1").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"id": "s1", "user": null, "endpoint": "default", "mode": "json", "worker": 1,
               "subscriptions": 2, "connected_at": 1_700_000_000})
    );
    let reply = send(&app, admin("GET", "/admin/sessions/nope").to_request()).await;
    reply.assert_error(404, "not_found");

    let reply = send(&app, admin("DELETE", "/admin/sessions/s1").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"kicked": "s1"}));
    assert_eq!(*hub.kicked.lock().unwrap(), vec!["s1".to_owned()]);
    let reply = send(&app, admin("DELETE", "/admin/sessions/s1").to_request()).await;
    reply.assert_error(404, "not_found");
}

#[actix_web::test]
async fn send_delivers_data_verbatim_to_one_session() {
    let hub = FakeHub::new();
    hub.add_session("s 1");
    let app = app!(hub);

    let req = admin("POST", "/admin/sessions/s%201/send")
        .insert_header(("content-type", "application/json"))
        .set_payload(r#"{"data":[1, 2.0,{"k":"v"}]}"#)
        .to_request();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"sent": "s 1"}));
    assert_eq!(
        *hub.sent.lock().unwrap(),
        vec![("s 1".to_owned(), r#"[1, 2.0,{"k":"v"}]"#.to_owned())]
    );

    let req = admin("POST", "/admin/sessions/nope/send")
        .set_json(json!({"data": 1}))
        .to_request();
    send(&app, req).await.assert_error(404, "not_found");
    let req = admin("POST", "/admin/sessions/s%201/send")
        .set_json(json!({"data": "x".repeat(100)}))
        .to_request();
    send(&app, req).await.assert_error(413, "too_large");
    let req = admin("POST", "/admin/sessions/s%201/send")
        .set_json(json!({}))
        .to_request();
    send(&app, req).await.assert_error(400, "bad_request");
    *hub.unavailable.lock().unwrap() = Some("draining".to_owned());
    let req = admin("POST", "/admin/sessions/s%201/send")
        .set_json(json!({"data": 1}))
        .to_request();
    send(&app, req).await.assert_error(503, "unavailable");
}

#[actix_web::test]
async fn the_nodes_are_listed() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let reply = send(&app, admin("GET", "/admin/nodes").to_request()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!([{"id":"fake","address":"127.0.0.1:8080","version":"0","sessions":0,"last_seen":0}])
    );
}
