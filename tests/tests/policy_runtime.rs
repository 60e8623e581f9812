//! The live policy store: a change applies to the very next handshake, without a restart, and
//! leaves open sessions alone. The hub runs in this process (on its own thread and actix
//! system) so the test can hold its `Node` and change its policy store directly, the store the
//! admin API's routes change (those are tested over HTTP in `admin_api.rs`).

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use switchboard_admin::{Mode, OriginRule, Subprotocol};
use switchboard_hub::{
    bind_listener,
    config::{Config, Overrides},
    serve_node, Node,
};
use switchboard_tests::{http_exchange_at, upgrade_request_to};

#[actix_rt::test]
async fn a_policy_change_applies_to_the_next_handshake() {
    let overrides = Overrides {
        workers: Some(1),
        ..Overrides::default()
    };
    let config = Config::from_sources("", Vec::new(), &overrides).unwrap();
    let node = Node::new(config);
    let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_node = node.clone();
    let server = std::thread::spawn(move || {
        actix_rt::System::new()
            .block_on(serve_node(server_node, listener, async {
                let _ = stopped.await;
            }))
            .unwrap();
    });

    let evil = "Origin: https://evil.example";
    let good = "Origin: https://app.example.com";
    // Any origin is accepted while the list is empty.
    let open = http_exchange_at(addr, &upgrade_request_to(addr, "/ws", &[evil])).await;
    assert_eq!(open.status, 101);

    restrict(&node);
    let reply = http_exchange_at(addr, &upgrade_request_to(addr, "/ws", &[evil])).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let reply = http_exchange_at(addr, &upgrade_request_to(addr, "/ws", &[good])).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    // The subprotocol added at runtime is negotiated at once.
    let reply = http_exchange_at(
        addr,
        &upgrade_request_to(addr, "/ws", &[good, "Sec-WebSocket-Protocol: chat.v2"]),
    )
    .await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(reply.header("sec-websocket-protocol"), Some("chat.v2"));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), async {
        while !server.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

/// Allows only one origin on `default` and adds the `chat.v2` subprotocol, through the store.
fn restrict(node: &Arc<Node>) {
    node.policy
        .update(|policy| {
            let mut endpoint = policy.endpoint("default").unwrap().clone();
            endpoint.origins = vec!["https://app.example.com".parse::<OriginRule>().unwrap()];
            endpoint.subprotocols.push(Subprotocol {
                name: "chat.v2".into(),
                mode: Mode::Json,
            });
            policy.with_endpoint_replaced(endpoint)
        })
        .unwrap();
}
