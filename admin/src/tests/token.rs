use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::{Claims, RoomPattern, TokenError, TokenKey, MAX_TOKEN_BYTES};

const NOW: u64 = 1_700_000_000;

fn key() -> TokenKey {
    TokenKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// Builds a token with an arbitrary header, correctly signed with `key()`'s secret, so that the
/// checks after the signature can be reached with headers `sign` would never write.
fn signed_with_header(header: &Value, claims: &Value) -> String {
    use hmac::{Hmac, Mac};
    let signing_input = format!("{}.{}", b64(&header.to_string()), b64(&claims.to_string()));
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn verify(claims: &Value) -> Result<Claims, TokenError> {
    key().verify(&key().sign(claims), NOW)
}

#[test]
fn sign_then_verify_roundtrips() {
    let claims = verify(&json!({
        "sub": "user-42",
        "exp": NOW + 60,
        "nbf": NOW - 60,
        "subscribe": ["chat:*", "news"],
        "publish": ["chat:general"],
    }))
    .unwrap();
    assert_eq!(
        claims,
        Claims {
            sub: Some("user-42".to_owned()),
            exp: NOW + 60,
            subscribe: vec![RoomPattern::new("chat:*"), RoomPattern::new("news")],
            publish: vec![RoomPattern::new("chat:general")],
        }
    );
    assert!(claims.may_subscribe("chat:random"));
    assert!(claims.may_subscribe("news"));
    assert!(!claims.may_subscribe("newsroom"));
    assert!(claims.may_publish("chat:general"));
    assert!(!claims.may_publish("chat:random"));
}

#[test]
fn signed_tokens_use_the_standard_header() {
    let token = key().sign(&json!({"exp": NOW + 1}));
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
}

#[test]
fn missing_grants_grant_nothing() {
    let claims = verify(&json!({"exp": NOW + 60, "sub": null})).unwrap();
    assert_eq!(claims.sub, None);
    assert!(claims.subscribe.is_empty() && claims.publish.is_empty());
    assert!(!claims.may_subscribe("anything"));
    assert!(!claims.may_publish("anything"));
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let token = key().sign(&json!({"exp": NOW + 60, "publish": ["news"]}));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = b64(&json!({"exp": NOW + 60, "publish": ["*"]}).to_string());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(key().verify(&forged, NOW), Err(TokenError::BadSignature));
}

#[test]
fn another_secret_is_a_bad_signature() {
    let other = TokenKey::new(b"another secret entirely").unwrap();
    let token = other.sign(&json!({"exp": NOW + 60}));
    assert_eq!(key().verify(&token, NOW), Err(TokenError::BadSignature));
}

#[test]
fn truncated_signature_is_a_bad_signature() {
    let token = key().sign(&json!({"exp": NOW + 60}));
    // 43 base64 characters less 3 still decode cleanly, to 30 bytes.
    let cut = &token[..token.len() - 3];
    assert_eq!(key().verify(cut, NOW), Err(TokenError::BadSignature));
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        key().verify(&format!("{signing_input}."), NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn other_algorithms_are_unsupported() {
    let claims = json!({"exp": NOW + 60, "publish": ["*"]});
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "HS512", "typ": "JWT"}),
        json!({"alg": "RS256"}),
        json!({"alg": "hs256"}),
        json!({"alg": null}),
        json!({"typ": "JWT"}),
    ] {
        let token = signed_with_header(&header, &claims);
        assert_eq!(
            key().verify(&token, NOW),
            Err(TokenError::UnsupportedAlgorithm),
            "{header}"
        );
    }
    // The classic "alg: none" token with an empty signature.
    let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&claims.to_string()));
    assert_eq!(
        key().verify(&none, NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[test]
fn critical_header_extensions_are_refused() {
    let token = signed_with_header(
        &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
        &json!({"exp": NOW + 60}),
    );
    assert!(matches!(
        key().verify(&token, NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn expiry() {
    assert_eq!(verify(&json!({"exp": NOW})), Err(TokenError::Expired));
    assert_eq!(verify(&json!({"exp": NOW - 1})), Err(TokenError::Expired));
    assert_eq!(verify(&json!({"exp": 0})), Err(TokenError::Expired));
    assert_eq!(verify(&json!({"exp": NOW + 1})).unwrap().exp, NOW + 1);
    // Fractional NumericDates are truncated; huge ones saturate to "far future".
    assert_eq!(
        verify(&json!({"exp": 1.7e9 + 100.75})).unwrap().exp,
        NOW + 100
    );
    assert_eq!(verify(&json!({"exp": 1e300})).unwrap().exp, u64::MAX);
}

#[test]
fn expiry_must_be_present_and_a_non_negative_number() {
    for claims in [
        json!({}),
        json!({"exp": null}),
        json!({"exp": "1900000000"}),
        json!({"exp": -1}),
        json!({"exp": -1.5}),
        json!({"exp": true}),
    ] {
        assert!(
            matches!(verify(&claims), Err(TokenError::Malformed(_))),
            "{claims}"
        );
    }
    assert_eq!(
        verify(&json!({})).unwrap_err().to_string(),
        "malformed token: exp claim is missing"
    );
}

#[test]
fn not_before() {
    assert_eq!(
        verify(&json!({"exp": NOW + 60, "nbf": NOW + 1})),
        Err(TokenError::NotYetValid)
    );
    assert!(verify(&json!({"exp": NOW + 60, "nbf": NOW})).is_ok());
    assert!(verify(&json!({"exp": NOW + 60, "nbf": null})).is_ok());
    assert!(matches!(
        verify(&json!({"exp": NOW + 60, "nbf": "soon"})),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn claim_shapes_are_checked() {
    let long_sub = "s".repeat(257);
    let too_many: Vec<String> = (0..257).map(|i| format!("room{i}")).collect();
    for claims in [
        json!({"exp": NOW + 60, "sub": 42}),
        json!({"exp": NOW + 60, "sub": long_sub}),
        json!({"exp": NOW + 60, "subscribe": "chat:*"}),
        json!({"exp": NOW + 60, "subscribe": ["ok", 1]}),
        json!({"exp": NOW + 60, "publish": {"room": "x"}}),
        json!({"exp": NOW + 60, "publish": too_many}),
    ] {
        assert!(
            matches!(verify(&claims), Err(TokenError::Malformed(_))),
            "{claims}"
        );
    }
    let just_enough: Vec<String> = (0..256).map(|i| format!("room{i}")).collect();
    let sub = "s".repeat(256);
    let claims = verify(&json!({"exp": NOW + 60, "sub": sub, "subscribe": just_enough})).unwrap();
    assert_eq!(claims.subscribe.len(), 256);
    // A payload that is JSON but not an object.
    assert!(matches!(
        verify(&json!([1, 2])),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn too_long() {
    let token = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(key().verify(&token, NOW), Err(TokenError::TooLong));
    // A real token just over the limit is refused on length alone.
    let big = signed_token_longer_than(MAX_TOKEN_BYTES + 1);
    assert_eq!(key().verify(&big, NOW), Err(TokenError::TooLong));
}

/// A validly signed token of more than `len` bytes.
fn signed_token_longer_than(len: usize) -> String {
    let sub = "x".repeat(len);
    key().sign(&json!({"exp": NOW + 60, "sub": sub}))
}

#[test]
fn malformed_structure() {
    let token = key().sign(&json!({"exp": NOW + 60}));
    let parts: Vec<&str> = token.split('.').collect();
    let two_parts = format!("{}.{}", parts[0], parts[1]);
    let four_parts = format!("{token}.x");
    let padded_header = format!(
        "{}.{}.{}",
        // 16 bytes, so the padded encoding ends in "==".
        URL_SAFE.encode(r#"{"alg":"HS256"} "#),
        parts[1],
        parts[2]
    );
    let not_base64 = format!("{}.{}.{}", parts[0], "p@yload!", parts[2]);
    let bad_signature_chars = format!("{}.{}.{}", parts[0], parts[1], "***");
    let header_not_json = format!("{}.{}.{}", b64("alg=HS256"), parts[1], parts[2]);
    for bad in [
        "",
        ".",
        "..",
        "abc",
        two_parts.as_str(),
        four_parts.as_str(),
        padded_header.as_str(),
        bad_signature_chars.as_str(),
        header_not_json.as_str(),
    ] {
        assert!(
            matches!(key().verify(bad, NOW), Err(TokenError::Malformed(_))),
            "{bad:?} gave {:?}",
            key().verify(bad, NOW)
        );
    }
    assert_eq!(
        key().verify(&padded_header, NOW),
        Err(TokenError::Malformed("header is not unpadded base64url"))
    );
    // The payload is only decoded once the signature holds, so a garbled payload under the
    // original signature is reported as a bad signature.
    assert_eq!(
        key().verify(&not_base64, NOW),
        Err(TokenError::BadSignature)
    );
    // A correctly signed payload that is not base64url is malformed.
    let header = b64(r#"{"alg":"HS256"}"#);
    let unsigned = format!("{header}.p@yload!");
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(unsigned.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    };
    assert_eq!(
        key().verify(&format!("{unsigned}.{signature}"), NOW),
        Err(TokenError::Malformed("payload is not unpadded base64url"))
    );
}

#[test]
fn empty_secret_is_refused_and_secrets_never_print() {
    assert_eq!(TokenKey::new(b"").unwrap_err(), TokenError::EmptySecret);
    assert!(TokenKey::new(b"k").is_ok());
    let debug = format!("{:?}", TokenKey::new(b"hunter2-hunter2-hunter2").unwrap());
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn error_texts_are_short_and_human() {
    assert_eq!(TokenError::Expired.to_string(), "token expired");
    assert_eq!(TokenError::BadSignature.to_string(), "bad token signature");
    assert_eq!(TokenError::NotYetValid.to_string(), "token not yet valid");
    assert_eq!(
        TokenError::TooLong.to_string(),
        "token is longer than 8192 bytes"
    );
}

#[test]
fn room_patterns() {
    let table: &[(&str, &str, bool)] = &[
        ("chat:*", "chat:", true),
        ("chat:*", "chat:anything", true),
        ("chat:*", "chat", false),
        ("chat:*", "chatter", false),
        ("*", "anything", true),
        ("*", "", true),
        ("news", "news", true),
        ("news", "news2", false),
        ("news", "new", false),
        // Only a trailing `*` is a wildcard.
        ("a*b", "a*b", true),
        ("a*b", "axb", false),
        ("*a", "*a", true),
        ("*a", "ba", false),
        ("a**", "a*", true),
        ("a**", "ab", false),
        ("", "", true),
        ("", "x", false),
    ];
    for &(pattern, room, expected) in table {
        let p = RoomPattern::new(pattern);
        assert_eq!(p.matches(room), expected, "{pattern:?} vs {room:?}");
        assert_eq!(p.as_str(), pattern);
    }
}
