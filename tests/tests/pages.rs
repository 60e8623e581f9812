//! What the public listener serves besides WebSocket sessions: the embedded JavaScript client,
//! the demo pages (and their switch), and the verdict a plain GET to an endpoint gets, which is
//! how a browser's client learns that a failed handshake was refused (it sees only 1006).

#![allow(clippy::unwrap_used)]

use switchboard_tests::{http_exchange, HttpReply, TestHub};

async fn get(hub: &TestHub, path: &str, extra: &[&str]) -> HttpReply {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        hub.addr
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    http_exchange(hub, request.as_bytes()).await
}

#[actix_rt::test]
async fn the_client_and_the_demos_are_served_from_the_binary_and_the_demos_can_be_turned_off() {
    let hub = TestHub::start();
    let js = get(&hub, "/client/switchboard.js", &[]).await;
    assert_eq!(js.status, 200, "{js:?}");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(
        js.body.contains("export class Switchboard"),
        "the client's source"
    );
    assert_eq!(
        js.body,
        include_str!("../../clients/js/switchboard.js"),
        "byte for byte the file in clients/js"
    );
    let etag = js.header("etag").unwrap().to_owned();
    let again = get(
        &hub,
        "/client/switchboard.js",
        &[&format!("If-None-Match: {etag}")],
    )
    .await;
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty());
    let dts = get(&hub, "/client/switchboard.d.ts", &[]).await;
    assert_eq!(dts.status, 200);
    assert!(dts.body.contains("export declare class Switchboard"));
    for (path, needle) in [
        ("/demo/chat", "Switchboard chat"),
        ("/demo/dashboard", "Switchboard dashboard"),
        ("/demo/demo.css", "--accent"),
    ] {
        let page = get(&hub, path, &[]).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        assert!(page.body.contains(needle), "{path}");
    }
    let index = get(&hub, "/demo", &[]).await;
    assert_eq!(index.status, 302);
    assert_eq!(index.header("location"), Some("/demo/chat"));

    let off = TestHub::builder().set("demos", "false").start();
    for path in ["/demo/chat", "/demo/dashboard", "/demo/demo.css", "/demo"] {
        let page = get(&off, path, &[]).await;
        assert_eq!(page.status, 404, "{path}: {page:?}");
        assert_eq!(page.json()["error"]["code"], "not_found");
    }
    assert_eq!(get(&off, "/client/switchboard.js", &[]).await.status, 200);
}

#[actix_rt::test]
async fn a_plain_get_to_an_endpoint_answers_what_its_handshake_would_get() {
    let hub = TestHub::builder()
        .set("token_secret", "pages-test-secret-0123456789")
        .config(
            r#"
[[endpoints]]
name = "default"
origins = ["https://app.example.com"]
"#,
        )
        .start();
    // No token: 401, readable by a page of an allowed origin, or of any (it is only a verdict).
    let reply = get(&hub, "/ws", &["Origin: https://app.example.com"]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // A bad token is 401 too.
    let reply = get(&hub, "/ws?token=nope", &[]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    // An origin the endpoint does not list: 403, as its handshake.
    let reply = get(&hub, "/ws?token=nope", &["Origin: https://evil.example"]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "origin_not_allowed");
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://evil.example")
    );
    // A valid token: the upgrade would pass, so 426.
    let token = switchboard_tests::sign_token(
        b"pages-test-secret-0123456789",
        &serde_json::json!({"exp": switchboard_tests::unix_now() + 60, "subscribe": ["*"]}),
    );
    let reply = get(&hub, &format!("/ws?token={token}"), &[]).await;
    assert_eq!(reply.status, 426, "{reply:?}");
    let reply = get(&hub, "/nothing", &[]).await;
    assert_eq!(reply.status, 404);
}
