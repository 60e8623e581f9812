//! Token and origin parsing take text from the network: whatever arrives, they answer, never
//! panic.

use proptest::prelude::*;
use serde_json::json;

use crate::{OriginRule, TokenKey};

fn key() -> TokenKey {
    TokenKey::new(b"property-test-secret").unwrap()
}

proptest! {
    #[test]
    fn verify_never_panics_on_any_string(token in any::<String>(), now in any::<u64>()) {
        let _ = key().verify(&token, now);
    }

    #[test]
    fn verify_never_panics_on_token_shaped_strings(
        token in "[A-Za-z0-9_=+/-]{0,60}(\\.[A-Za-z0-9_=+/-]{0,60}){0,4}",
        now in any::<u64>(),
    ) {
        let _ = key().verify(&token, now);
    }

    /// Signed tokens reach every check after the signature; arbitrary claims must still only
    /// ever be accepted or refused.
    #[test]
    fn verify_never_panics_on_signed_arbitrary_claims(
        exp in prop_oneof![
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(|s| json!(s)),
        ],
        sub in proptest::option::of(any::<String>()),
        rooms in proptest::collection::vec(any::<String>(), 0..4),
        now in any::<u64>(),
    ) {
        let token = key().sign(&json!({"exp": exp, "sub": sub, "subscribe": rooms}));
        if let Ok(claims) = key().verify(&token, now) {
            prop_assert!(claims.exp > now);
            for room in &rooms {
                prop_assert!(claims.may_subscribe(room));
            }
        }
    }

    #[test]
    fn origins_never_panic_on_any_string(rule in any::<String>(), header in any::<String>()) {
        if let Ok(rule) = rule.parse::<OriginRule>() {
            let _ = rule.matches(&header);
        }
        let _ = header.parse::<OriginRule>();
    }

    /// Near-misses of the grammar, to reach the deeper branches that random text rarely does.
    #[test]
    fn origins_never_panic_on_origin_shaped_strings(
        rule in "[a-zA-Z+.-]{0,6}://[a-zA-Z0-9.*:\\[\\]@/?#%-]{0,40}",
        header in "[a-zA-Z+.-]{0,6}://[a-zA-Z0-9.*:\\[\\]@/?#%-]{0,40}",
    ) {
        if let Ok(parsed) = rule.parse::<OriginRule>() {
            let _ = parsed.matches(&header);
            // The canonical text is itself a valid rule, equal to the original.
            let canonical = parsed.to_string();
            prop_assert_eq!(canonical.parse::<OriginRule>().ok(), Some(parsed));
        }
    }

    /// An exact rule admits the very origin it was written from.
    #[test]
    fn an_exact_rule_matches_itself(
        scheme in "(https?|wss?|app)",
        host in "[a-z0-9]{1,10}(\\.[a-z][a-z0-9-]{0,10}){1,3}",
        port in proptest::option::of(1u16..),
    ) {
        let text = match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        let rule: OriginRule = text.parse().unwrap();
        prop_assert!(rule.matches(&text));
        prop_assert!(rule.matches(&text.to_uppercase()));
    }
}
