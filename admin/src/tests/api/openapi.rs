use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::support::{admin, app, send, FakeHub};

const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/admin/openapi.json"),
    ("get", "/admin/endpoints"),
    ("get", "/admin/endpoints/{name}"),
    ("get", "/admin/endpoints/{name}/origins"),
    ("post", "/admin/endpoints/{name}/origins"),
    ("put", "/admin/endpoints/{name}/origins"),
    ("delete", "/admin/endpoints/{name}/origins"),
    ("get", "/admin/endpoints/{name}/subprotocols"),
    ("post", "/admin/endpoints/{name}/subprotocols"),
    ("delete", "/admin/endpoints/{name}/subprotocols/{protocol}"),
    ("get", "/admin/rooms"),
    ("get", "/admin/rooms/{room}"),
    ("get", "/admin/nodes"),
    ("post", "/admin/rooms/{room}/publish"),
    ("get", "/admin/sessions"),
    ("get", "/admin/sessions/{id}"),
    ("delete", "/admin/sessions/{id}"),
    ("post", "/admin/sessions/{id}/send"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::to_value(crate::openapi()).unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((method.to_owned(), path.clone(), operation));
            }
        }
    }
    found
}

#[test]
fn the_document_has_every_route_and_no_other() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, expected);
}

#[test]
fn admin_operations_need_the_bearer_token_and_probes_need_nothing() {
    let doc = document();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer",
               "description": "The admin token the hub was started with"})
    );
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        if path.starts_with("/admin/") {
            assert_eq!(
                operation["security"],
                json!([{"bearer": []}]),
                "{method} {path}"
            );
            let unauthorized = &responses["401"];
            assert!(unauthorized["headers"]["WWW-Authenticate"].is_object());
        } else {
            assert_eq!(operation["security"], json!([]), "{method} {path}");
            assert!(!responses.contains_key("401"), "{method} {path}");
        }
    }
}

#[test]
fn every_error_response_uses_the_error_shape_and_every_reference_resolves() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "ErrorDetail",
        "ApiErrorCode",
        "Endpoint",
        "Mode",
        "SessionInfo",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    for (method, path, operation) in operations(&doc) {
        assert!(operation["operationId"].is_string(), "{method} {path}");
        for (status, response) in operation["responses"].as_object().unwrap() {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}"
            );
            let is_error = status.starts_with('4') || status.starts_with('5');
            if is_error && path != "/readyz" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        // Path parameters are declared for every `{...}` in the path.
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_path, "{method} {path}");
    }
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
}

#[test]
fn body_routes_document_their_extractor_errors() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        if operation.get("requestBody").is_some() {
            for status in ["400", "413"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
        if path.contains('{') {
            assert!(responses.contains_key("400"), "{method} {path} lacks 400");
            assert!(responses.contains_key("404") || path.contains("{room}/publish"));
        }
        if operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
        {
            assert!(responses.contains_key("400"), "{method} {path} lacks 400");
        }
    }
}

/// Each documented operation reaches a handler (no 404 or 405 from the router), and each
/// method the document leaves out of a path is a 405: the routing and the document agree.
#[actix_web::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let hub = FakeHub::new();
    hub.add_session("s1");
    let app = app!(hub);
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path
            .replace("{name}", "default")
            .replace("{protocol}", "switchboard.v1")
            .replace("{room}", "lobby")
            .replace("{id}", "s1");
        for method in ["get", "put", "post", "delete", "patch"] {
            let reply = send(&app, admin(&method.to_uppercase(), &uri).to_request()).await;
            if item.get(method).is_some() {
                assert_ne!(reply.status, 405, "{method} {uri}: {reply:?}");
                assert_ne!(reply.status, 401, "{method} {uri}: {reply:?}");
                if reply.status == 404 {
                    // Only a handler's 404 (an unknown item), never the router's.
                    let message = reply.json()["error"]["message"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    assert!(!message.starts_with("no route"), "{method} {uri}");
                }
                let documented = item[method]["responses"]
                    .as_object()
                    .unwrap()
                    .contains_key(reply.status.as_str());
                assert!(documented, "{method} {uri}: undocumented {}", reply.status);
            } else {
                reply.assert_error(405, "method_not_allowed");
            }
        }
    }
}

#[actix_web::test]
async fn the_document_is_served() {
    let hub = FakeHub::new();
    let app = app!(hub);
    let reply = send(&app, admin("GET", "/admin/openapi.json").to_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), document());
}

/// Limits written as literals in the annotations are the limits the code enforces.
#[test]
fn documented_limits_match_the_code() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["OriginList"]["properties"]["origins"]["maxItems"],
        crate::policy::MAX_ORIGINS
    );
    assert_eq!(
        schemas["Origin"]["maxLength"],
        crate::origin::MAX_ORIGIN_BYTES
    );
    let room = doc["paths"]["/admin/rooms/{room}"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "room")
        .unwrap()
        .clone();
    assert_eq!(
        room["schema"]["maxLength"],
        switchboard_protocol::MAX_ROOM_BYTES
    );
    let name = &schemas["NewSubprotocol"]["properties"]["name"]["pattern"];
    assert!(name
        .as_str()
        .unwrap()
        .ends_with(&format!("{{1,{}}}$", crate::policy::MAX_TOKEN_NAME_BYTES)));
}
