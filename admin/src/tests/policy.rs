use serde_json::json;

use crate::policy::{MAX_ENDPOINTS, MAX_ORIGINS, MAX_SUBPROTOCOLS};
use crate::{
    is_http_token, Endpoint, EndpointSpec, Mode, Negotiation, NegotiationError, OriginError,
    Policy, PolicyError, Subprotocol, SubprotocolSpec, TokenKey,
};

fn specs(value: serde_json::Value) -> Vec<EndpointSpec> {
    serde_json::from_value(value).unwrap()
}

fn policy(value: serde_json::Value) -> Policy {
    Policy::from_specs(&specs(value), None).unwrap()
}

fn policy_err(value: serde_json::Value) -> PolicyError {
    Policy::from_specs(&specs(value), None).unwrap_err()
}

fn endpoint(name: &str, path: &str) -> Endpoint {
    Endpoint {
        compression: false,
        compression_min_bytes: 256,
        name: name.to_owned(),
        path: path.to_owned(),
        mode: Mode::Json,
        origins: Vec::new(),
        subprotocols: Vec::new(),
        require_subprotocol: false,
    }
}

fn protocol(name: &str, mode: Mode) -> Subprotocol {
    Subprotocol {
        name: name.to_owned(),
        mode,
    }
}

#[test]
fn modes_by_name() {
    for mode in Mode::ALL {
        assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        assert_eq!(serde_json::to_value(mode).unwrap(), json!(mode.as_str()));
    }
    assert_eq!("relay".parse::<Mode>().unwrap(), Mode::Relay);
    assert!("Relay".parse::<Mode>().is_err());
    assert_eq!(
        "bogus".parse::<Mode>().unwrap_err().to_string(),
        "unknown mode \"bogus\" (expected json, relay or echo)"
    );
}

#[test]
fn no_config_gives_the_builtin_endpoint() {
    let p = Policy::from_specs(&[], None).unwrap();
    assert_eq!(p.endpoints(), &[Endpoint::builtin()]);
    let e = p.endpoint("default").unwrap();
    assert_eq!(e.path, "/ws");
    assert_eq!(e.mode, Mode::Json);
    assert!(e.origins.is_empty());
    assert_eq!(e.subprotocols, vec![protocol("switchboard.v1", Mode::Json)]);
    assert!(!e.require_subprotocol);
    assert!(p.token().is_none());
    assert_eq!(Policy::default().endpoints(), p.endpoints());
}

#[test]
fn a_default_spec_overrides_only_what_it_sets() {
    let p = policy(json!([{"name": "default", "origins": ["https://EXAMPLE.com"]}]));
    let e = p.endpoint("default").unwrap();
    assert_eq!(e.path, "/ws");
    assert_eq!(e.subprotocols, vec![protocol("switchboard.v1", Mode::Json)]);
    assert_eq!(e.origins.len(), 1);
    assert_eq!(e.origins[0].to_string(), "https://example.com");

    let p = policy(json!([{
        "name": "default", "path": "/live", "mode": "relay",
        "subprotocols": ["chat", {"name": "switchboard.v1", "mode": "json"}, {"name": "x"}],
        "require_subprotocol": true,
    }]));
    let e = p.endpoint("default").unwrap();
    assert_eq!(e.path, "/live");
    assert_eq!(e.mode, Mode::Relay);
    // A bare name, or a table without a mode, takes the endpoint's mode after the merge.
    assert_eq!(
        e.subprotocols,
        vec![
            protocol("chat", Mode::Relay),
            protocol("switchboard.v1", Mode::Json),
            protocol("x", Mode::Relay),
        ]
    );
    assert!(e.require_subprotocol);
    assert_eq!(p.endpoints().len(), 1);
}

#[test]
fn new_endpoints_default_their_unset_fields() {
    let p = policy(json!([{"name": "relay", "path": "/relay"}]));
    assert_eq!(p.endpoints().len(), 2);
    assert_eq!(p.endpoint("default").unwrap(), &Endpoint::builtin());
    assert_eq!(p.endpoint("relay").unwrap(), &endpoint("relay", "/relay"));

    assert_eq!(
        policy_err(json!([{"name": "chat", "mode": "relay"}])),
        PolicyError::MissingPath {
            endpoint: "chat".to_owned()
        }
    );
}

#[test]
fn specs_refuse_unknown_fields_with_a_useful_message() {
    let err = serde_json::from_value::<Vec<EndpointSpec>>(json!([{"name": "a", "pth": "/a"}]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pth"), "{err}");
    let err = serde_json::from_value::<SubprotocolSpec>(json!({"name": "a", "mod": "json"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mod"), "{err}");
    let err = serde_json::from_value::<SubprotocolSpec>(json!({"name": "a", "mode": "bogus"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
    assert!(serde_json::from_value::<SubprotocolSpec>(json!({"mode": "json"})).is_err());
    assert!(serde_json::from_value::<SubprotocolSpec>(json!(3)).is_err());
    assert_eq!(
        serde_json::from_value::<SubprotocolSpec>(json!("a")).unwrap(),
        SubprotocolSpec::Name("a".to_owned())
    );
    assert_eq!(
        serde_json::from_value::<SubprotocolSpec>(json!({"name": "a"})).unwrap(),
        SubprotocolSpec::Full {
            name: "a".to_owned(),
            mode: None
        }
    );
}

#[test]
fn duplicate_names_are_refused() {
    assert_eq!(
        policy_err(json!([
            {"name": "a", "path": "/a"},
            {"name": "a", "path": "/b"},
        ])),
        PolicyError::DuplicateEndpoint {
            name: "a".to_owned()
        }
    );
    assert_eq!(
        policy_err(json!([{"name": "default"}, {"name": "default", "path": "/x"}])),
        PolicyError::DuplicateEndpoint {
            name: "default".to_owned()
        }
    );
    let err = Policy::new(vec![endpoint("a", "/a"), endpoint("a", "/b")], None).unwrap_err();
    assert_eq!(err.to_string(), "endpoint \"a\" is defined twice");
}

#[test]
fn duplicate_paths_are_refused_trailing_slash_included() {
    let err = policy_err(json!([{"name": "other", "path": "/ws/"}]));
    assert_eq!(
        err,
        PolicyError::DuplicatePath {
            endpoint: "other".to_owned(),
            path: "/ws/".to_owned(),
            other: "default".to_owned(),
            other_path: "/ws".to_owned(),
        }
    );
    assert!(matches!(
        Policy::new(vec![endpoint("a", "/a"), endpoint("b", "/a")], None),
        Err(PolicyError::DuplicatePath { .. })
    ));
    // Nested paths are distinct endpoints.
    assert!(Policy::new(vec![endpoint("a", "/a"), endpoint("b", "/a/b")], None).is_ok());
}

#[test]
fn duplicate_subprotocols_are_refused() {
    assert_eq!(
        policy_err(
            json!([{"name": "default", "subprotocols": ["x", {"name": "x", "mode": "echo"}]}])
        ),
        PolicyError::DuplicateSubprotocol {
            endpoint: "default".to_owned(),
            name: "x".to_owned()
        }
    );
    // Names are case-sensitive, as the handshake compares them exactly.
    assert!(
        policy(json!([{"name": "default", "subprotocols": ["x", "X"]}]))
            .endpoint("default")
            .is_some()
    );
}

#[test]
fn path_validation() {
    let bad = [
        ("ws", "must start with /"),
        ("", "must start with /"),
        ("/ws?x=1", "must not contain ? or # (no query or fragment)"),
        ("/ws#x", "must not contain ? or # (no query or fragment)"),
        ("/w s", "must not contain whitespace"),
        ("/ws\t", "must not contain whitespace"),
        ("/a%2", "has a % not followed by two hex digits"),
        ("/a%zz", "has a % not followed by two hex digits"),
        ("/a<b>", "contains a character not allowed in a URL path"),
        (
            "/caf\u{e9}",
            "contains a character not allowed in a URL path",
        ),
        ("/a/../b", "must not contain . or .. segments"),
        ("/a/.", "must not contain . or .. segments"),
    ];
    for (path, reason) in bad {
        let err = Policy::new(vec![endpoint("chat", path)], None).unwrap_err();
        assert_eq!(
            err,
            PolicyError::BadPath {
                endpoint: "chat".to_owned(),
                path: path.to_owned(),
                reason
            },
            "{path:?}"
        );
    }
    let long = format!("/{}", "a".repeat(256));
    assert!(matches!(
        Policy::new(vec![endpoint("chat", &long)], None),
        Err(PolicyError::BadPath {
            reason: "is longer than 256 bytes",
            ..
        })
    ));
    let good = [
        "/",
        "/ws",
        "/ws/",
        "/a/b/c",
        "/a%2Fb",
        "/~user/x_y-z.1",
        "/!$&'()*+,;=:@",
        "/a..b/.c",
    ];
    for path in good {
        assert!(
            Policy::new(vec![endpoint("chat", path)], None).is_ok(),
            "{path:?}"
        );
    }
    assert_eq!(
        Policy::new(vec![endpoint("chat", "ws")], None)
            .unwrap_err()
            .to_string(),
        "endpoint \"chat\": path \"ws\" must start with /"
    );
}

#[test]
fn name_validation() {
    for name in ["", "a b", "a/b", "caf\u{e9}", &"n".repeat(65)] {
        assert!(
            matches!(
                Policy::new(vec![endpoint(name, "/x")], None),
                Err(PolicyError::BadName { .. })
            ),
            "{name:?}"
        );
    }
    for name in ["a", "chat_1.v-2", &"n".repeat(64)] {
        assert!(
            Policy::new(vec![endpoint(name, "/x")], None).is_ok(),
            "{name:?}"
        );
    }
}

#[test]
fn origins_are_parsed_and_errors_carry_the_reason() {
    let err =
        policy_err(json!([{"name": "chat", "path": "/chat", "origins": ["https://a.com/x"]}]));
    assert_eq!(
        err,
        PolicyError::BadOrigin {
            endpoint: "chat".to_owned(),
            error: OriginError::HasPath("https://a.com/x".to_owned()),
        }
    );
    assert_eq!(
        err.to_string(),
        "endpoint \"chat\": origin must be scheme://host[:port] with no path: \"https://a.com/x\""
    );
}

#[test]
fn subprotocol_names_must_be_http_tokens() {
    assert!(is_http_token("switchboard.v1"));
    assert!(is_http_token("!#$%&'*+-.^_`|~09azAZ"));
    assert!(is_http_token(&"t".repeat(128)));
    for bad in [
        "",
        "a b",
        "a,b",
        "a;b",
        "\"a\"",
        "a/b",
        "caf\u{e9}",
        &"t".repeat(129),
    ] {
        assert!(!is_http_token(bad), "{bad:?}");
    }
    assert_eq!(
        policy_err(json!([{"name": "default", "subprotocols": ["a b"]}])),
        PolicyError::BadSubprotocol {
            endpoint: "default".to_owned(),
            name: "a b".to_owned()
        }
    );
}

#[test]
fn limits() {
    let mut e = endpoint("many", "/many");
    e.origins = (0..=MAX_ORIGINS)
        .map(|i| format!("https://h{i}.example.com").parse().unwrap())
        .collect();
    assert!(matches!(
        Policy::new(vec![e.clone()], None),
        Err(PolicyError::TooManyOrigins { count: 1025, .. })
    ));
    e.origins.pop();
    assert!(Policy::new(vec![e], None).is_ok());

    let mut e = endpoint("many", "/many");
    e.subprotocols = (0..=MAX_SUBPROTOCOLS)
        .map(|i| protocol(&format!("p{i}"), Mode::Json))
        .collect();
    assert!(matches!(
        Policy::new(vec![e], None),
        Err(PolicyError::TooManySubprotocols { count: 65, .. })
    ));

    let endpoints: Vec<Endpoint> = (0..=MAX_ENDPOINTS)
        .map(|i| endpoint(&format!("e{i}"), &format!("/e{i}")))
        .collect();
    assert_eq!(
        Policy::new(endpoints.clone(), None).unwrap_err(),
        PolicyError::TooManyEndpoints { count: 257 }
    );
    assert!(Policy::new(endpoints[..MAX_ENDPOINTS].to_vec(), None).is_ok());
}

/// The endpoint name and rest of the path a request is routed to, owned for easy comparison.
fn routed(policy: &Policy, path: &str) -> Option<(String, String)> {
    policy
        .route(path)
        .map(|(e, rest)| (e.name.clone(), rest.to_owned()))
}

fn hit(name: &str, rest: &str) -> Option<(String, String)> {
    Some((name.to_owned(), rest.to_owned()))
}

#[test]
fn routing_takes_the_longest_prefix_at_a_segment_boundary() {
    let p = Policy::new(
        vec![
            endpoint("ws", "/ws"),
            endpoint("relay", "/relay"),
            endpoint("relay-admin", "/relay/admin"),
            endpoint("slash", "/s/"),
        ],
        None,
    )
    .unwrap();
    let route = |path: &str| routed(&p, path);
    assert_eq!(route("/ws"), hit("ws", ""));
    assert_eq!(route("/ws/"), hit("ws", ""));
    assert_eq!(route("/ws/x"), hit("ws", "x"));
    assert_eq!(route("/wsx"), None);
    assert_eq!(route("/relay/room"), hit("relay", "room"));
    assert_eq!(route("/relay/room/sub"), hit("relay", "room/sub"));
    assert_eq!(route("/relay/admin"), hit("relay-admin", ""));
    assert_eq!(route("/relay/admin/x"), hit("relay-admin", "x"));
    assert_eq!(route("/relay/administrator"), hit("relay", "administrator"));
    assert_eq!(route("/s/room"), hit("slash", "room"));
    assert_eq!(route("/s"), None);
    assert_eq!(route("/"), None);
    assert_eq!(route(""), None);
    assert_eq!(route("/other"), None);

    let with_root = p.with_endpoint_added(endpoint("root", "/")).unwrap();
    let route = |path: &str| routed(&with_root, path);
    assert_eq!(route("/"), hit("root", ""));
    assert_eq!(route("/wsx"), hit("root", "wsx"));
    assert_eq!(route("/ws/x"), hit("ws", "x"));
    assert_eq!(route("/anything/at/all"), hit("root", "anything/at/all"));
    assert_eq!(route("no-slash"), None);
}

fn negotiating(accepts: &[&str], required: bool) -> Endpoint {
    let mut e = endpoint("n", "/n");
    e.mode = Mode::Relay;
    e.subprotocols = accepts
        .iter()
        .map(|name| protocol(name, Mode::Json))
        .collect();
    e.require_subprotocol = required;
    e
}

#[test]
fn negotiation_follows_the_client_order() {
    let e = negotiating(&["b", "a"], false);
    let n = e.negotiate(["a", "b"]).unwrap();
    assert_eq!(n, Negotiation::Protocol(&e.subprotocols[1]));
    assert_eq!(e.mode_for(&n), Mode::Json);

    let n = e.negotiate(["c", "b", "a"]).unwrap();
    assert_eq!(n, Negotiation::Protocol(&e.subprotocols[0]));
    // Exact, case-sensitive comparison; names that are not tokens never match.
    assert_eq!(e.negotiate(["A", "B"]), Err(NegotiationError::NoneAccepted));
    assert_eq!(
        e.negotiate(["a b", "\u{0}", "b\r\n"]),
        Err(NegotiationError::NoneAccepted)
    );
    // Stray whitespace around a name is tolerated.
    assert_eq!(
        e.negotiate([" a "]),
        Ok(Negotiation::Protocol(&e.subprotocols[1]))
    );
}

#[test]
fn negotiation_without_an_offer() {
    let e = negotiating(&["a"], false);
    let n = e.negotiate([]).unwrap();
    assert_eq!(n, Negotiation::NoneOffered);
    assert_eq!(e.mode_for(&n), Mode::Relay);
    assert_eq!(e.negotiate(["", " "]), Ok(Negotiation::NoneOffered));

    let required = negotiating(&["a"], true);
    assert_eq!(required.negotiate([]), Err(NegotiationError::Required));
    assert_eq!(required.negotiate([""]), Err(NegotiationError::Required));
    assert_eq!(
        required.negotiate(["z"]),
        Err(NegotiationError::NoneAccepted)
    );
    assert!(required.negotiate(["z", "a"]).is_ok());
}

#[test]
fn an_endpoint_with_no_subprotocols_accepts_no_offer() {
    let e = negotiating(&[], false);
    assert_eq!(e.negotiate(["x"]), Err(NegotiationError::NoneAccepted));
    assert_eq!(e.negotiate([]), Ok(Negotiation::NoneOffered));
    assert!(e.accepted_names().is_empty());
    assert_eq!(
        negotiating(&["b", "a"], false).accepted_names(),
        vec!["b", "a"]
    );
}

#[test]
fn origin_checks() {
    let open = endpoint("open", "/open");
    assert!(open.origin_allowed(None));
    assert!(open.origin_allowed(Some("https://anything.example")));
    assert!(open.origin_allowed(Some("null")));

    let mut closed = endpoint("closed", "/closed");
    closed.origins = vec![
        "https://example.com".parse().unwrap(),
        "https://*.example.org".parse().unwrap(),
    ];
    assert!(closed.origin_allowed(Some("https://example.com")));
    assert!(closed.origin_allowed(Some("https://app.example.org")));
    assert!(!closed.origin_allowed(Some("https://example.org")));
    assert!(!closed.origin_allowed(Some("https://evil.com")));
    assert!(!closed.origin_allowed(Some("null")));
    assert!(!closed.origin_allowed(None));
}

#[test]
fn endpoints_serialize_for_the_admin_api() {
    let mut e = Endpoint::builtin();
    e.origins = vec!["HTTPS://Example.com:443".parse().unwrap()];
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({
            "name": "default",
            "path": "/ws",
            "mode": "json",
            "origins": ["https://example.com"],
            "subprotocols": [{"name": "switchboard.v1", "mode": "json"}],
            "require_subprotocol": false,
            "compression": false,
            "compression_min_bytes": 256,
        })
    );
}

#[test]
fn edits_build_new_validated_policies() {
    let key = TokenKey::new(b"secret").unwrap();
    let p = Policy::new(vec![Endpoint::builtin()], Some(key)).unwrap();

    let mut changed = Endpoint::builtin();
    changed.mode = Mode::Echo;
    let q = p.with_endpoint_replaced(changed).unwrap();
    assert_eq!(q.endpoint("default").unwrap().mode, Mode::Echo);
    assert_eq!(
        p.endpoint("default").unwrap().mode,
        Mode::Json,
        "the original is untouched"
    );
    assert!(q.token().is_some(), "edits keep the token key");

    assert_eq!(
        p.with_endpoint_replaced(endpoint("nope", "/nope"))
            .unwrap_err(),
        PolicyError::NotFound {
            name: "nope".to_owned()
        }
    );
    let mut bad = Endpoint::builtin();
    bad.path = "ws".to_owned();
    assert!(matches!(
        p.with_endpoint_replaced(bad),
        Err(PolicyError::BadPath { .. })
    ));

    let added = p.with_endpoint_added(endpoint("echo", "/echo")).unwrap();
    assert_eq!(added.endpoints().len(), 2);
    assert!(matches!(
        added.with_endpoint_added(endpoint("echo", "/echo2")),
        Err(PolicyError::DuplicateEndpoint { .. })
    ));
    assert!(matches!(
        added.with_endpoint_added(endpoint("echo2", "/echo/")),
        Err(PolicyError::DuplicatePath { .. })
    ));
    let removed = added.with_endpoint_removed("echo").unwrap();
    assert_eq!(removed.endpoints(), p.endpoints());
    assert!(matches!(
        removed.with_endpoint_removed("echo"),
        Err(PolicyError::NotFound { .. })
    ));
    assert!(p.with_token(None).token().is_none());
}
