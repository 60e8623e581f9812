#![allow(clippy::unwrap_used)]

use super::*;
use switchboard_admin::Mode;

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Config::from_sources(toml, env, &Overrides::default())
}

#[test]
fn defaults_need_no_file() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    let default = c.policy.endpoint("default").unwrap();
    assert_eq!((default.path.as_str(), default.mode), ("/ws", Mode::Json));
    assert!(c.policy.token().is_none());
    assert_eq!(c.heartbeat, Duration::from_secs(25));
    assert_eq!(c.outbox_capacity, 4096);
    assert_eq!(c.max_message_bytes, 65536);
    assert_eq!(c.max_subscriptions, 1000);
    assert!(c.workers >= 1);
    assert_eq!(Config::defaults().policy.endpoints().len(), 1);
}

#[test]
fn endpoints_come_from_the_file_merged_onto_the_default() {
    let c = load(
        r#"
        [[endpoints]]
        name = "default"
        origins = ["https://app.example.com"]

        [[endpoints]]
        name = "live"
        path = "/live"
        mode = "relay"
        "#,
        &[],
    )
    .unwrap();
    let default = c.policy.endpoint("default").unwrap();
    assert_eq!(default.path, "/ws");
    assert_eq!(default.origins.len(), 1);
    assert_eq!(default.subprotocols[0].name, "switchboard.v1");
    let live = c.policy.endpoint("live").unwrap();
    assert_eq!((live.path.as_str(), live.mode), ("/live", Mode::Relay));
}

#[test]
fn a_token_secret_from_the_environment_turns_tokens_on() {
    let c = load("", &[("SWITCHBOARD_TOKEN_SECRET", "s3cret-s3cret-s3cret")]).unwrap();
    assert!(c.policy.token().is_some());
    // The secret never shows in the config's debug output (which may reach logs).
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn bad_endpoints_name_the_endpoint_and_field() {
    for (toml, needle) in [
        ("[[endpoints]]\nname = \"x\"\npath = \"nope\"", "path"),
        ("[[endpoints]]\nname = \"x\"", "path"),
        (
            "[[endpoints]]\nname = \"x\"\npath = \"/x\"\norigins = [\"ftp:/bad\"]",
            "origin",
        ),
        (
            "[[endpoints]]\nname = \"x\"\npath = \"/x\"\nmode = \"loud\"",
            "mode",
        ),
        ("[[endpoints]]\nname = \"x\"\npath = \"/ws\"", "/ws"),
        (
            "[[endpoints]]\nname = \"x\"\npath = \"/x\"\nsubprotocols = [\"a b\"]",
            "a b",
        ),
    ] {
        let e = load(toml, &[]).unwrap_err().to_string();
        assert!(e.contains(needle), "{toml}: {e}");
    }
}

#[test]
fn env_overrides_file_and_cli_overrides_env() {
    let c = load(
        "workers = 3\nheartbeat = 10",
        &[
            ("SWITCHBOARD_WORKERS", "5"),
            ("SWITCHBOARD_HEARTBEAT", "0.5"),
        ],
    )
    .unwrap();
    assert_eq!(c.workers, 5);
    assert_eq!(c.heartbeat, Duration::from_millis(500));
    let over = Overrides {
        workers: Some(7),
        ..Overrides::default()
    };
    let c = Config::from_sources(
        "workers = 3",
        [("SWITCHBOARD_WORKERS".to_owned(), "5".to_owned())],
        &over,
    )
    .unwrap();
    assert_eq!(c.workers, 7);
}

#[test]
fn unknown_file_key_is_refused_by_name() {
    let e = load("wrokers = 2", &[]).unwrap_err().to_string();
    assert!(e.contains("wrokers"), "{e}");
}

#[test]
fn mistyped_env_value_names_the_key() {
    let e = load("", &[("SWITCHBOARD_WORKERS", "many")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("workers"), "{e}");
}

#[test]
fn out_of_range_values_name_the_key() {
    for (toml, key) in [
        ("workers = 0", "workers"),
        ("heartbeat = -1", "heartbeat"),
        ("listen = \"nowhere\"", "listen"),
        ("token_secret = 5", "token_secret"),
        ("log_format = \"xml\"", "log_format"),
        ("max_message_bytes = 10", "max_message_bytes"),
        ("node_id = \"a b\"", "node_id"),
    ] {
        let e = load(toml, &[]).unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}

#[test]
fn unrelated_env_variables_are_ignored() {
    assert!(load("", &[("SWITCHBOARD_SOMETHING_ELSE", "x"), ("PATH", "/bin")]).is_ok());
}

#[test]
fn the_deployment_example_is_valid() {
    let c = load(
        include_str!("../../../deploy/switchboard.example.toml"),
        &[],
    )
    .unwrap();
    assert!(c.policy.endpoint("default").unwrap().require_subprotocol);
    assert_eq!(c.policy.endpoint("live").unwrap().mode, Mode::Relay);
    let chat = c.rooms.of("chat:lobby").unwrap();
    assert_eq!(chat.history_size, 100);
    assert!(chat.presence && chat.join_leave);
    assert!(!c.demos, "no demo pages in production");
    assert!(c.rooms.of("demo:chat:lobby").is_none());
}

#[test]
fn demos_are_on_by_default_with_their_rooms_after_the_operators_tables() {
    let c = load("", &[]).unwrap();
    assert!(c.demos);
    let demo = c.rooms.of("demo:chat:lobby").unwrap();
    assert!(demo.history() && demo.presence && demo.join_leave);
    assert!(c.rooms.of("chat:lobby").is_none(), "only demo:* rooms");
    // An operator's table for demo rooms comes first and wins.
    let c = load("[[rooms]]\npattern = \"demo:*\"\nhistory_size = 7\n", &[]).unwrap();
    assert_eq!(c.rooms.of("demo:x").unwrap().history_size, 7);
    for (value, on) in [("false", false), ("0", false), ("true", true), ("1", true)] {
        assert_eq!(
            load("", &[("SWITCHBOARD_DEMOS", value)]).unwrap().demos,
            on,
            "{value}"
        );
    }
    let c = load("demos = false", &[]).unwrap();
    assert!(!c.demos && c.rooms.of("demo:x").is_none());
    let error = load("", &[("SWITCHBOARD_DEMOS", "maybe")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("demos"), "{error}");
}

#[test]
fn the_first_rooms_table_whose_pattern_matches_gives_the_options() {
    let c = load(
        "[[rooms]]\npattern = \"chat:vip\"\npresence = true\n\n\
         [[rooms]]\npattern = \"chat:*\"\nhistory_size = 50\nhistory_ttl = 60\nleave_debounce = 0.5\n",
        &[],
    )
    .unwrap();
    let vip = c.rooms.of("chat:vip").unwrap();
    assert!(vip.presence && !vip.history());
    assert_eq!(vip.leave_debounce, Duration::from_secs(3), "the default");
    let chat = c.rooms.of("chat:other").unwrap();
    assert_eq!(chat.history_size, 50);
    assert_eq!(chat.history_ttl, Some(Duration::from_secs(60)));
    assert_eq!(chat.leave_debounce, Duration::from_millis(500));
    assert!(
        c.rooms.of("chat").is_none(),
        "a prefix pattern needs the prefix"
    );
    assert!(c.rooms.of("news").is_none());
    assert!(c.rooms.any_tracking());
    assert_eq!(c.history_memory_bytes, 256 << 20);
}

#[test]
fn a_session_rate_is_off_by_default_and_either_limit_turns_it_on() {
    assert_eq!(load("", &[]).unwrap().session_rate, None);
    let c = load("session_messages_per_second = 50", &[]).unwrap();
    let rate = c.session_rate.unwrap();
    assert_eq!(rate.messages_per_second, 50.0);
    assert!(rate.bytes_per_second.is_infinite(), "no byte limit");
    assert_eq!(rate.burst, 2.0);
    let c = load(
        "",
        &[
            ("SWITCHBOARD_SESSION_BYTES_PER_SECOND", "1000"),
            ("SWITCHBOARD_SESSION_BURST", "0.5"),
        ],
    )
    .unwrap();
    let rate = c.session_rate.unwrap();
    assert!(rate.messages_per_second.is_infinite());
    assert_eq!((rate.bytes_per_second, rate.burst), (1000.0, 0.5));
    for (text, key) in [
        (
            "session_messages_per_second = -1",
            "session_messages_per_second",
        ),
        ("session_bytes_per_second = -1", "session_bytes_per_second"),
        ("session_burst = 0", "session_burst"),
    ] {
        match load(text, &[]) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn bad_rooms_tables_are_refused_naming_the_key() {
    for (text, key) in [
        ("[[rooms]]\npattern = \"a*b\"\n", "rooms"),
        ("[[rooms]]\npattern = \"\"\n", "rooms"),
        (
            "[[rooms]]\npattern = \"a\"\nhistory_size = -1\n",
            "rooms.history_size",
        ),
        (
            "[[rooms]]\npattern = \"a\"\nhistory_ttl = -5\n",
            "rooms.history_ttl",
        ),
        (
            "[[rooms]]\npattern = \"a\"\nleave_debounce = 7200\n",
            "rooms.leave_debounce",
        ),
        ("history_memory_bytes = 10", "history_memory_bytes"),
    ] {
        match load(text, &[]) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(
        load("[[rooms]]\npattern = \"a\"\nhistroy_size = 5\n", &[]),
        Err(ConfigError::Parse(_))
    ));
}

#[test]
fn redis_urls_are_split_on_commas_and_the_prefix_is_checked() {
    let c = load("", &[]).unwrap();
    assert!(c.redis_urls.is_empty(), "standalone by default");
    assert_eq!(c.redis_prefix, "switchboard");
    let c = load(
        "redis_url = \" redis://a:6379 , redis://b:6380,\"\nredis_prefix = \"prod:eu\"",
        &[],
    )
    .unwrap();
    assert_eq!(c.redis_urls, ["redis://a:6379", "redis://b:6380"]);
    assert_eq!(c.redis_prefix, "prod:eu");
    // A URL that does not parse is the bridge's to report: the node still starts.
    let c = load("", &[("SWITCHBOARD_REDIS_URL", "not a url")]).unwrap();
    assert_eq!(c.redis_urls, ["not a url"]);
    assert!(load("redis_prefix = \"has space\"", &[]).is_err());
    assert!(load("redis_prefix = \"\"", &[]).is_err());
}

#[test]
fn an_advertised_address_needs_a_host_and_a_port() {
    let c = load("", &[("SWITCHBOARD_ADVERTISE_ADDRESS", "node1:8080")]).unwrap();
    assert_eq!(c.advertise_address.as_deref(), Some("node1:8080"));
    assert!(load("", &[]).unwrap().advertise_address.is_none());
    for bad in ["node1", ":8080", "node1:http", "node1:70000", "a b:1"] {
        let e = load("", &[("SWITCHBOARD_ADVERTISE_ADDRESS", bad)]).unwrap_err();
        assert!(e.to_string().contains("advertise_address"), "{bad}: {e}");
    }
}
