use std::sync::Arc;
use std::thread;

use crate::{Endpoint, Mode, Policy, PolicyError, PolicyStore};

#[test]
fn an_update_is_visible_on_the_next_load() {
    let store = PolicyStore::new(Policy::default());
    let before = store.snapshot();

    let after = store
        .update(|p| {
            let mut e = Endpoint::builtin();
            e.mode = Mode::Echo;
            p.with_endpoint_replaced(e)
        })
        .unwrap();

    assert_eq!(store.load().endpoint("default").unwrap().mode, Mode::Echo);
    assert!(Arc::ptr_eq(&store.snapshot(), &after));
    // A snapshot taken earlier keeps the terms it was taken under.
    assert_eq!(before.endpoint("default").unwrap().mode, Mode::Json);
}

#[test]
fn a_failed_update_changes_nothing() {
    let store = PolicyStore::default();
    let before = store.snapshot();
    let err = store
        .update(|p| p.with_endpoint_removed("missing"))
        .unwrap_err();
    assert!(matches!(err, PolicyError::NotFound { .. }));
    assert!(Arc::ptr_eq(&store.snapshot(), &before));
}

#[test]
fn replace_installs_a_policy_wholesale() {
    let store = PolicyStore::default();
    let mut e = Endpoint::builtin();
    e.path = "/live".to_owned();
    store.replace(Policy::new(vec![e], None).unwrap());
    assert!(store.load().route("/live").is_some());
    assert!(store.load().route("/ws").is_none());
}

#[test]
fn concurrent_updates_never_lose_an_edit() {
    const THREADS: usize = 4;
    const EACH: usize = 100;
    let store = Arc::new(PolicyStore::default());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..EACH {
                    let origin = format!("https://t{t}-{i}.example.com").parse().unwrap();
                    store
                        .update(|p| {
                            let mut e = p.endpoint("default").unwrap().clone();
                            e.origins.push(Clone::clone(&origin));
                            p.with_endpoint_replaced(e)
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }

    let policy = store.snapshot();
    let endpoint = policy.endpoint("default").unwrap();
    assert_eq!(endpoint.origins.len(), THREADS * EACH);
    for t in 0..THREADS {
        for i in 0..EACH {
            let origin = format!("https://t{t}-{i}.example.com");
            assert!(endpoint.origin_allowed(Some(&origin)), "{origin} was lost");
        }
    }
}
