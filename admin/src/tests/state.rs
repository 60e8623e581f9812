use std::fs;

use serde_json::{json, Value};

use crate::state::STATE_FILE_NAME;
use crate::{Endpoint, Mode, Policy, StateError, StateFile, Subprotocol};

fn base() -> Policy {
    let chat = Endpoint {
        compression: false,
        compression_min_bytes: 256,
        name: "chat".to_owned(),
        path: "/chat".to_owned(),
        mode: Mode::Relay,
        origins: Vec::new(),
        subprotocols: Vec::new(),
        require_subprotocol: false,
    };
    Policy::new(vec![Endpoint::builtin(), chat], None).unwrap()
}

fn edited() -> Policy {
    let policy = base();
    let mut chat = policy.endpoint("chat").unwrap().clone();
    chat.origins = vec![
        "https://a.example.com".parse().unwrap(),
        "https://*.example.org:8443".parse().unwrap(),
    ];
    chat.subprotocols = vec![Subprotocol {
        name: "chat.v2".to_owned(),
        mode: Mode::Json,
    }];
    policy.with_endpoint_replaced(chat).unwrap()
}

#[test]
fn a_missing_file_leaves_the_base_policy() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    let (policy, warnings) = state.load(base()).unwrap();
    assert_eq!(policy.endpoints(), base().endpoints());
    assert!(warnings.is_empty());
}

#[test]
fn a_saved_policy_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path().join("nested").join("dir"));
    state.save(&edited()).unwrap();
    assert_eq!(state.path().file_name().unwrap(), STATE_FILE_NAME);

    let saved: Value = serde_json::from_slice(&fs::read(state.path()).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"version": 1, "endpoints": {
            "chat": {
                "origins": ["https://a.example.com", "https://*.example.org:8443"],
                "subprotocols": [{"name": "chat.v2", "mode": "json"}]
            },
            "default": {
                "origins": [],
                "subprotocols": [{"name": "switchboard.v1", "mode": "json"}]
            }
        }})
    );

    let (policy, warnings) = state.load(base()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(policy.endpoints(), edited().endpoints());
}

#[test]
fn only_origins_and_subprotocols_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    state.save(&edited()).unwrap();
    // The config moved the endpoint and changed its mode since the save.
    let mut chat = base().endpoint("chat").unwrap().clone();
    chat.path = "/talk".to_owned();
    chat.mode = Mode::Echo;
    chat.require_subprotocol = true;
    let config = base().with_endpoint_replaced(chat).unwrap();
    let (policy, _) = state.load(config).unwrap();
    let chat = policy.endpoint("chat").unwrap();
    assert_eq!(chat.path, "/talk");
    assert_eq!(chat.mode, Mode::Echo);
    assert!(chat.require_subprotocol);
    assert_eq!(chat.origins.len(), 2);
    assert_eq!(chat.subprotocols[0].name, "chat.v2");
}

#[test]
fn a_save_leaves_no_temporary_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    state.save(&base()).unwrap();
    state.save(&edited()).unwrap();
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![STATE_FILE_NAME.to_owned()]);
    let (policy, _) = state.load(base()).unwrap();
    assert_eq!(policy.endpoints(), edited().endpoints());
}

#[test]
fn a_failed_save_leaves_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    state.save(&edited()).unwrap();
    let before = fs::read(state.path()).unwrap();
    // A directory where the file is: the rename fails.
    let blocked = StateFile::in_dir(dir.path().join("blocked"));
    fs::create_dir_all(blocked.path()).unwrap();
    let err = blocked.save(&base()).unwrap_err();
    assert!(matches!(err, StateError::Write { .. }), "{err}");
    assert!(err.to_string().contains("policy-state.json"), "{err}");
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("blocked"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![STATE_FILE_NAME]);
    assert_eq!(fs::read(state.path()).unwrap(), before);
}

#[test]
fn a_corrupt_file_is_an_error_naming_it() {
    let cases: &[(&str, &str)] = &[
        ("{not json", "key must be a string"),
        ("", "EOF"),
        (
            r#"{"version": 2, "endpoints": {}}"#,
            "unsupported version 2",
        ),
        (r#"{"endpoints": {}}"#, "missing field `version`"),
        (
            r#"{"version": 1, "endpoints": {"chat": {"origins": ["nope"], "subprotocols": []}}}"#,
            "scheme://",
        ),
        (
            r#"{"version": 1, "endpoints": {"chat": {"origins": [],
                "subprotocols": [{"name": "a b", "mode": "json"}]}}}"#,
            "not an HTTP token",
        ),
        (
            r#"{"version": 1, "endpoints": {"chat": {"origins": [],
                "subprotocols": [{"name": "x", "mode": "json"}, {"name": "x", "mode": "echo"}]}}}"#,
            "listed twice",
        ),
        (
            r#"{"version": 1, "endpoints": {"chat": {"origins": [],
                "subprotocols": [{"name": "x", "mode": "binary"}]}}}"#,
            "unknown variant",
        ),
    ];
    for (text, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        fs::write(state.path(), text).unwrap();
        let err = state.load(base()).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{text}: {err}");
        let message = err.to_string();
        assert!(message.contains(STATE_FILE_NAME), "{message}");
        assert!(message.contains(reason), "{text}: {message}");
    }
}

#[test]
fn endpoints_the_config_no_longer_has_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    fs::write(
        state.path(),
        r#"{"version": 1, "endpoints": {
            "gone": {"origins": ["https://x.example.com"], "subprotocols": []},
            "chat": {"origins": ["https://y.example.com"], "subprotocols": []}
        }}"#,
    )
    .unwrap();
    let (policy, warnings) = state.load(base()).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("\"gone\""), "{warnings:?}");
    assert!(policy.endpoint("gone").is_none());
    assert!(policy
        .endpoint("chat")
        .unwrap()
        .origin_allowed(Some("https://y.example.com")));
    // Endpoints the file does not name keep their configured terms.
    assert_eq!(
        policy.endpoint("default").unwrap(),
        base().endpoint("default").unwrap()
    );
}

#[test]
fn an_unreadable_path_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    fs::create_dir(state.path()).unwrap();
    let err = state.load(base()).unwrap_err();
    assert!(matches!(err, StateError::Read { .. }), "{err}");
    assert!(err.to_string().contains(STATE_FILE_NAME), "{err}");
}

#[test]
fn concurrent_saves_of_the_live_policy_end_with_the_newest() {
    use std::sync::Arc;
    use std::thread;

    use crate::PolicyStore;

    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::in_dir(dir.path());
    let store = Arc::new(PolicyStore::new(base()));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            let state = state.clone();
            thread::spawn(move || {
                for i in 0..10 {
                    let origin = format!("https://t{t}-{i}.example.com").parse().unwrap();
                    store
                        .update(|p| {
                            let mut e = p.endpoint("chat").unwrap().clone();
                            e.origins.push(Clone::clone(&origin));
                            p.with_endpoint_replaced(e)
                        })
                        .unwrap();
                    state.save_current(&store).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let (loaded, _) = state.load(base()).unwrap();
    assert_eq!(loaded.endpoint("chat").unwrap().origins.len(), 40);
    assert_eq!(loaded.endpoints(), store.snapshot().endpoints());
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}
