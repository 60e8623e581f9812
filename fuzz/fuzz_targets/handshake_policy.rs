//! The handshake's parsers of what a client or an operator writes: Origin rules and headers,
//! `Sec-WebSocket-Protocol` lists, `Sec-WebSocket-Extensions` offers, and tokens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_admin::{Endpoint, OriginRule, TokenKey};

fuzz_target!(|input: (String, String, String)| {
    let (rule, header, token) = input;
    // An operator's rule, then a client's header against it.
    if let Ok(rule) = rule.parse::<OriginRule>() {
        let _ = rule.matches(&header);
        // A rule's canonical form is a rule that admits the same.
        let shown: OriginRule = rule.to_string().parse().expect("its own form parses");
        assert_eq!(shown, rule);
    }
    // A client's offered subprotocols, against the built-in endpoint.
    let endpoint = Endpoint::builtin();
    let offered: Vec<&str> = header.split(',').map(str::trim).collect();
    let _ = endpoint.negotiate(offered.iter().copied());
    // The same header as a client's permessage-deflate offers: an accepted one is answered
    // with both no-context-takeover parameters, which the one shared compressor relies on.
    if let Some(response) = switchboard_hub::fuzzing::negotiate_deflate(&[&header]) {
        assert!(response.starts_with(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
    }
    // A client's token.
    if let Ok(key) = TokenKey::new(b"a secret of thirty-two bytes, ok") {
        let _ = key.verify(&token, 1_700_000_000);
    }
});
