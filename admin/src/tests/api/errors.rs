use super::support::{admin, app, send, FakeHub};
use crate::api::MAX_BODY_BYTES;

#[actix_web::test]
async fn malformed_json_is_a_400_in_the_error_shape() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let bodies = [
        "{",
        "",
        "[1,2]",
        "{\"origin\": 5}",
        "{\"nope\": 1}",
        "null",
        // serde would read this as the struct's fields by position.
        "[\"https://a.example.com\"]",
    ];
    for body in bodies {
        let req = admin("POST", "/admin/endpoints/default/origins")
            .insert_header(("content-type", "application/json"))
            .set_payload(body)
            .to_request();
        let reply = send(&app, req).await;
        reply.assert_error(400, "bad_request");
    }
}

#[actix_web::test]
async fn a_body_that_is_not_declared_json_is_a_400() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = admin("POST", "/admin/endpoints/default/origins")
            .set_payload(r#"{"origin":"https://a.example"}"#);
        if let Some(content_type) = content_type {
            req = req.insert_header(("content-type", content_type));
        }
        let reply = send(&app, req.to_request()).await;
        reply.assert_error(400, "bad_request");
    }
    // Nothing was added.
    let policy = hub.policy.snapshot();
    assert!(policy.endpoint("default").unwrap().origins.is_empty());
}

#[actix_web::test]
async fn a_body_over_the_limit_is_a_413() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let req = admin("POST", "/admin/rooms/lobby/publish")
        .insert_header(("content-type", "application/json"))
        .set_payload(big)
        .to_request();
    let reply = send(&app, req).await;
    reply.assert_error(413, "too_large");
    assert!(hub.published.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn a_bad_query_string_is_a_400() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for uri in [
        "/admin/rooms?limit=abc",
        "/admin/rooms?limit=-1",
        "/admin/sessions?limit=1.5",
        "/admin/sessions?limit=",
        "/admin/sessions?limit=%2B5",
        "/admin/endpoints/default/origins",
    ] {
        let method = if uri.contains("origins") {
            "DELETE"
        } else {
            "GET"
        };
        let reply = send(&app, admin(method, uri).to_request()).await;
        reply.assert_error(400, "bad_request");
    }
}

#[actix_web::test]
async fn unknown_routes_are_a_404_in_the_error_shape() {
    let hub = FakeHub::new();
    let app = app!(hub);
    for uri in [
        "/nope",
        "/admin",
        "/admin/",
        "/admin/endpoints/",
        "/admin/rooms/a/b/c",
    ] {
        let reply = send(&app, admin("GET", uri).to_request()).await;
        reply.assert_error(404, "not_found");
    }
}

#[actix_web::test]
async fn unknown_methods_are_a_405_naming_the_allowed_ones() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let cases = [
        ("POST", "/healthz", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("PUT", "/admin/endpoints", "GET"),
        (
            "PATCH",
            "/admin/endpoints/default/origins",
            "GET, POST, PUT, DELETE",
        ),
        ("GET", "/admin/sessions/s1/send", "POST"),
        ("POST", "/admin/sessions/s1", "GET, DELETE"),
    ];
    for (method, uri, allow) in cases {
        let reply = send(&app, admin(method, uri).to_request()).await;
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {uri}");
    }
}

/// actix-web decodes path segments lossily, so bytes that are not UTF-8 become U+FFFD and name
/// a room that does not exist rather than failing the request.
#[actix_web::test]
async fn a_path_that_is_not_utf8_names_nothing() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let reply = send(&app, admin("GET", "/admin/rooms/%FF%FE").to_request()).await;
    reply.assert_error(404, "not_found");
    let reply = send(&app, admin("GET", "/admin/endpoints/%FF").to_request()).await;
    reply.assert_error(404, "not_found");
}
