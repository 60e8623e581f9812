use actix_web::http::header::HeaderValue;
use actix_web::test::TestRequest;

use super::support::{admin, app, send, FakeHub, TOKEN};
use crate::api::auth::{bearer_matches, digest};
use crate::AdminOptions;

#[actix_web::test]
async fn a_missing_token_is_refused_with_a_bearer_challenge() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let reply = send(
        &app,
        TestRequest::get().uri("/admin/endpoints").to_request(),
    )
    .await;
    reply.assert_error(401, "unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

#[actix_web::test]
async fn a_wrong_token_is_refused() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for value in [
        "Bearer wrong".to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        "Bearer ".to_owned(),
        TOKEN.to_owned(),
    ] {
        let req = TestRequest::get()
            .uri("/admin/endpoints")
            .insert_header(("authorization", value.as_str()))
            .to_request();
        let reply = send(&app, req).await;
        reply.assert_error(401, "unauthorized");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{value}");
    }
}

#[actix_web::test]
async fn the_right_token_is_let_through_whatever_the_case_of_the_scheme() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = TestRequest::get()
            .uri("/admin/endpoints")
            .insert_header(("authorization", format!("{scheme} {TOKEN}")))
            .to_request();
        let reply = send(&app, req).await;
        assert_eq!(reply.status, 200, "{scheme}: {reply:?}");
    }
}

#[actix_web::test]
async fn unknown_admin_routes_ask_for_the_token_before_saying_they_do_not_exist() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let reply = send(&app, TestRequest::get().uri("/admin/nope").to_request()).await;
    reply.assert_error(401, "unauthorized");
    let reply = send(&app, admin("GET", "/admin/nope").to_request()).await;
    reply.assert_error(404, "not_found");
}

#[actix_web::test]
async fn probes_and_metrics_need_no_token() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = send(&app, TestRequest::get().uri(path).to_request()).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }
}

#[actix_web::test]
async fn without_a_configured_token_admin_routes_are_open() {
    let hub = FakeHub::new();
    let app = app!(
        hub,
        AdminOptions {
            token: None,
            state: None
        }
    );
    let reply = send(
        &app,
        TestRequest::get().uri("/admin/endpoints").to_request(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // A token sent anyway is not held against the caller.
    let reply = send(&app, admin("GET", "/admin/endpoints").to_request()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn the_token_check_compares_digests() {
    let expected = digest(TOKEN.as_bytes());
    let header = |s: &str| HeaderValue::from_str(s).unwrap();
    assert!(bearer_matches(
        &expected,
        Some(&header(&format!("Bearer {TOKEN}")))
    ));
    assert!(bearer_matches(
        &expected,
        Some(&header(&format!("bearer   {TOKEN} ")))
    ));
    assert!(!bearer_matches(&expected, None));
    assert!(!bearer_matches(&expected, Some(&header("Bearer"))));
    assert!(!bearer_matches(&expected, Some(&header("Bearer  "))));
    assert!(!bearer_matches(
        &expected,
        Some(&header(&format!("Token {TOKEN}")))
    ));
    // Same length, one byte off, at either end.
    let mut first = TOKEN.as_bytes().to_vec();
    first[0] ^= 1;
    let mut last = TOKEN.as_bytes().to_vec();
    *last.last_mut().unwrap() ^= 1;
    for token in [first, last] {
        let token = String::from_utf8(token).unwrap();
        assert!(!bearer_matches(
            &expected,
            Some(&header(&format!("Bearer {token}")))
        ));
    }
    // Bytes that are not UTF-8 are compared like any others, not rejected with a panic.
    let raw = HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
    assert!(!bearer_matches(&expected, Some(&raw)));
    assert!(bearer_matches(
        &digest(b"\xff\xfe"),
        Some(&HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap())
    ));
    // The digest is what is kept: equal tokens, equal digests; different tokens, different ones.
    assert_eq!(digest(TOKEN.as_bytes()), expected);
    assert_ne!(digest(b"other"), expected);
}
