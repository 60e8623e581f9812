use crate::{OriginError, OriginRule};

fn rule(text: &str) -> OriginRule {
    match text.parse() {
        Ok(rule) => rule,
        Err(e) => panic!("expected {text:?} to parse, got: {e}"),
    }
}

fn refusal(text: &str) -> OriginError {
    match text.parse::<OriginRule>() {
        Ok(rule) => panic!("expected {text:?} to be refused, got {rule:?}"),
        Err(e) => e,
    }
}

#[test]
fn accepted_rules_and_their_canonical_text() {
    let table = [
        ("https://example.com", "https://example.com"),
        ("HTTPS://Example.COM", "https://example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://example.com:8443", "https://example.com:8443"),
        // A default port says nothing the scheme does not.
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("wss://example.com:443", "wss://example.com"),
        ("ws://example.com:80", "ws://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
        ("http://[2001:DB8::A]", "http://[2001:db8::a]"),
        ("https://*.example.com", "https://*.example.com"),
        (
            "https://*.Example.co.uk:8443",
            "https://*.example.co.uk:8443",
        ),
        ("app+x-1.y://my-host", "app+x-1.y://my-host"),
        (
            "chrome-extension://abcdefghijklmnop",
            "chrome-extension://abcdefghijklmnop",
        ),
        ("https://a-b.c-d.example", "https://a-b.c-d.example"),
        ("http://example.com:08080", "http://example.com:8080"),
    ];
    for (text, canonical) in table {
        let parsed = rule(text);
        assert_eq!(parsed.to_string(), canonical, "{text:?}");
        assert_eq!(
            rule(canonical),
            parsed,
            "canonical text of {text:?} reparses equal"
        );
    }
}

#[test]
fn equivalent_spellings_are_equal_rules() {
    assert_eq!(rule("https://example.com"), rule("HTTPS://EXAMPLE.com:443"));
    assert_ne!(rule("https://example.com"), rule("http://example.com"));
    assert!(rule("https://*.example.com").is_wildcard());
    assert!(!rule("https://example.com").is_wildcard());
}

#[test]
fn refused_rules_with_reasons() {
    use OriginError::*;
    // Each refusal variant carries the refused text.
    type Reason = fn(String) -> OriginError;
    let table: &[(&str, Reason)] = &[
        ("https://a.com/x", HasPath),
        ("https://a.com/", HasPath),
        ("https://a.com?x=1", HasQuery),
        ("https://a.com#top", HasQuery),
        ("https://user@a.com", HasUserinfo),
        ("https://a.com@evil.com", HasUserinfo),
        ("https://a.com ", Whitespace),
        (" https://a.com", Whitespace),
        ("https://a\t.com", Whitespace),
        ("https://a.com\n", Whitespace),
        ("a.com", MissingScheme),
        ("https:/a.com", MissingScheme),
        ("null", MissingScheme),
        ("://a.com", BadScheme),
        ("1http://a.com", BadScheme),
        ("ht_tp://a.com", BadScheme),
        ("https://", BadHost),
        ("https://a..com", BadHost),
        ("https://.a.com", BadHost),
        ("https://a.com.", BadHost),
        ("https://a_b.com", BadHost),
        ("https://ex\u{e4}mple.com", BadHost),
        ("https://[::1", BadHost),
        ("https://[not-ip]", BadHost),
        ("https://[::1]x", BadHost),
        ("https://::1", BadHost),
        ("http://256.1.1.1", BadHost),
        ("http://1.2.3", BadHost),
        ("http://01.2.3.4", BadHost),
        ("http://0x7f", BadHost),
        ("https://a.com:", BadPort),
        ("https://a.com:0", BadPort),
        ("https://a.com:65536", BadPort),
        ("https://a.com:123456", BadPort),
        ("https://a.com:-1", BadPort),
        ("https://a.com:8O", BadPort),
        ("https://a.com:80:81", BadPort),
        ("https://*.com", WildcardTooBroad),
        ("https://*.localhost:8080", WildcardTooBroad),
        ("https://*", BadWildcard),
        ("https://*example.com", BadWildcard),
        ("https://a.*.example.com", BadWildcard),
        ("https://*.*.example.com", BadWildcard),
        ("https://example.*", BadWildcard),
        ("https://a.com:*", BadWildcard),
        ("*://a.com", BadWildcard),
        ("https://*.1.2.3.4", BadWildcard),
        ("https://*.[::1]", BadWildcard),
        ("https://*.a..com", BadWildcard),
    ];
    for (text, expected) in table {
        assert_eq!(refusal(text), expected(text.to_string()), "{text:?}");
    }
    assert_eq!(refusal(""), OriginError::Empty);
    let long = format!("https://{}.com", "a".repeat(300));
    assert_eq!(refusal(&long), OriginError::TooLong);
}

#[test]
fn refusal_messages_explain_the_rule() {
    assert_eq!(
        refusal("https://a.com/x").to_string(),
        "origin must be scheme://host[:port] with no path: \"https://a.com/x\""
    );
    assert!(refusal("https://*.com").to_string().contains("too broad"));
    assert!(refusal("https://a.com:0")
        .to_string()
        .contains("1 to 65535"));
    // The overlong text itself is not repeated back.
    assert_eq!(
        OriginError::TooLong.to_string(),
        "origin is longer than 256 bytes"
    );
}

#[test]
fn matching_table() {
    let table: &[(&str, &str, bool)] = &[
        // Exact, case-insensitive scheme and host.
        ("https://example.com", "https://example.com", true),
        ("https://example.com", "https://EXAMPLE.com", true),
        ("https://example.com", "HTTPS://example.COM", true),
        // Default ports.
        ("https://example.com", "https://example.com:443", true),
        ("https://example.com:443", "https://example.com", true),
        ("http://example.com", "http://example.com:80", true),
        ("wss://example.com", "wss://example.com:443", true),
        ("https://example.com", "https://example.com:8443", false),
        ("https://example.com:8443", "https://example.com:8443", true),
        ("https://example.com:8443", "https://example.com", false),
        ("http://example.com", "http://example.com:443", false),
        // A scheme without a default port: absent only equals absent.
        ("app://host", "app://host", true),
        ("app://host", "app://host:80", false),
        ("app://host:80", "app://host:80", true),
        // Scheme mismatch.
        ("https://example.com", "http://example.com", false),
        ("https://example.com", "wss://example.com", false),
        // Suffix and prefix tricks against an exact rule.
        ("https://example.com", "https://evilexample.com", false),
        ("https://example.com", "https://example.com.evil.com", false),
        ("https://example.com", "https://a.example.com", false),
        // Wildcards: one or more labels, never the bare domain or a look-alike.
        ("https://*.example.com", "https://a.example.com", true),
        ("https://*.example.com", "https://A.Example.Com", true),
        ("https://*.example.com", "https://a.b.example.com", true),
        ("https://*.example.com", "https://a.example.com:443", true),
        ("https://*.example.com", "https://example.com", false),
        ("https://*.example.com", "https://badexample.com", false),
        ("https://*.example.com", "https://evilexample.com", false),
        ("https://*.example.com", "https://a.badexample.com", false),
        (
            "https://*.example.com",
            "https://a.example.com.evil.com",
            false,
        ),
        ("https://*.example.com", "http://a.example.com", false),
        ("https://*.example.com", "https://a.example.com:8443", false),
        ("https://*.example.com", "https://*.example.com", false),
        ("https://*.example.com", "https://.example.com", false),
        // Addresses.
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000", true),
        ("http://[::1]:3000", "http://[0::1]:3000", true),
        ("http://[::1]", "http://[::2]", false),
        // Headers that are not origins match nothing.
        ("https://example.com", "null", false),
        ("https://example.com", "", false),
        ("https://example.com", "https://example.com/", false),
        ("https://example.com", "https://example.com/path", false),
        ("https://example.com", " https://example.com", false),
        ("https://example.com", "https://user@example.com", false),
        ("https://example.com", "example.com", false),
        ("https://example.com", "\u{0}\u{ff}garbage://[", false),
        (
            "https://*.example.com",
            "https://a.example.com:99999",
            false,
        ),
    ];
    for &(rule_text, header, expected) in table {
        assert_eq!(
            rule(rule_text).matches(header),
            expected,
            "rule {rule_text:?} against Origin {header:?}"
        );
    }
}

#[test]
fn rules_serialize_as_their_canonical_text() {
    let json = serde_json::to_string(&rule("HTTPS://*.Example.com:443")).unwrap();
    assert_eq!(json, "\"https://*.example.com\"");
}
