#![allow(clippy::unwrap_used)]

use std::borrow::Cow;

use serde_json::{json, Value};

use crate::{
    decode, ClientFrame, DecodeError, Envelope, EnvelopeError, ErrorCode, RawValue, Scope,
    ServerFrame, Welcome, ENVELOPE_VERSION,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn decode_err(text: &str) -> DecodeError {
    match decode(text) {
        Ok(frame) => panic!("expected {text:?} to fail, got {frame:?}"),
        Err(e) => e,
    }
}

fn code_of(text: &str) -> ErrorCode {
    decode_err(text).code
}

/// Decodes a publish and returns (room, data text, scope, id).
fn publish_of(text: &str) -> (String, String, Scope, Option<u64>) {
    match decode(text) {
        Ok(ClientFrame::Publish(p)) => {
            (p.room.into_owned(), p.data.get().to_owned(), p.scope, p.id)
        }
        other => panic!("expected a publish from {text:?}, got {other:?}"),
    }
}

fn subscribe_room(text: &str) -> String {
    match decode(text) {
        Ok(ClientFrame::Subscribe { room, .. }) => room.into_owned(),
        other => panic!("expected a subscribe from {text:?}, got {other:?}"),
    }
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not valid JSON: {e}"))
}

fn publish_json(room: &str, data: &str) -> String {
    format!(
        r#"{{"op":"publish","room":{},"data":{data}}}"#,
        serde_json::to_string(room).unwrap()
    )
}

fn subscribe_json(room: &str) -> String {
    format!(
        r#"{{"op":"subscribe","room":{}}}"#,
        serde_json::to_string(room).unwrap()
    )
}

// ---------------------------------------------------------------------------------------------
// decode: each op
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_decodes_with_room_and_id() {
    assert_eq!(
        decode(r#"{"op":"subscribe","room":"lobby","id":1}"#).unwrap(),
        ClientFrame::Subscribe {
            recover: None,
            room: "lobby".into(),
            id: Some(1)
        }
    );
}

#[test]
fn unsubscribe_decodes_with_room_and_id() {
    assert_eq!(
        decode(r#"{"op":"unsubscribe","room":"lobby","id":2}"#).unwrap(),
        ClientFrame::Unsubscribe {
            room: "lobby".into(),
            id: Some(2)
        }
    );
}

#[test]
fn publish_without_scope_defaults_to_cluster() {
    let (room, data, scope, id) =
        publish_of(r#"{"op":"publish","room":"r","data":{"x":1},"id":3}"#);
    assert_eq!(room, "r");
    assert_eq!(data, r#"{"x":1}"#);
    assert_eq!(scope, Scope::Cluster);
    assert_eq!(id, Some(3));
}

#[test]
fn publish_with_worker_scope_decodes_as_worker() {
    let (_, _, scope, _) = publish_of(r#"{"op":"publish","room":"r","data":1,"scope":"worker"}"#);
    assert_eq!(scope, Scope::Worker);
}

#[test]
fn publish_with_node_scope_decodes_as_node() {
    let (_, _, scope, _) = publish_of(r#"{"op":"publish","room":"r","data":1,"scope":"node"}"#);
    assert_eq!(scope, Scope::Node);
}

#[test]
fn publish_with_cluster_scope_decodes_as_cluster() {
    let (_, _, scope, _) = publish_of(r#"{"op":"publish","room":"r","data":1,"scope":"cluster"}"#);
    assert_eq!(scope, Scope::Cluster);
}

#[test]
fn ping_decodes_with_id() {
    assert_eq!(
        decode(r#"{"op":"ping","id":9}"#).unwrap(),
        ClientFrame::Ping { id: Some(9) }
    );
}

#[test]
fn ping_decodes_without_id() {
    assert_eq!(
        decode(r#"{"op":"ping"}"#).unwrap(),
        ClientFrame::Ping { id: None }
    );
}

#[test]
fn ping_ignores_room_and_data() {
    assert_eq!(
        decode(r#"{"op":"ping","room":"","data":1}"#).unwrap(),
        ClientFrame::Ping { id: None }
    );
}

#[test]
fn field_order_does_not_matter() {
    let (room, data, scope, id) =
        publish_of(r#"{"id":4,"scope":"node","data":[1,2],"room":"r","op":"publish"}"#);
    assert_eq!(
        (room.as_str(), data.as_str(), scope, id),
        ("r", "[1,2]", Scope::Node, Some(4))
    );
}

#[test]
fn whitespace_around_the_frame_and_fields_is_accepted() {
    let frame =
        decode(" \n\t{ \"op\" : \"subscribe\" ,\r\n \"room\" : \"r\" , \"id\" : 5 } \n").unwrap();
    assert_eq!(
        frame,
        ClientFrame::Subscribe {
            recover: None,
            room: "r".into(),
            id: Some(5)
        }
    );
}

#[test]
fn escaped_field_names_are_recognised() {
    assert_eq!(
        decode(r#"{"\u006fp":"ping","i\u0064":6}"#).unwrap(),
        ClientFrame::Ping { id: Some(6) }
    );
}

#[test]
fn escaped_op_value_is_recognised() {
    assert_eq!(
        decode(r#"{"op":"p\u0069ng"}"#).unwrap(),
        ClientFrame::Ping { id: None }
    );
}

#[test]
fn client_frame_id_returns_the_id_of_every_variant() {
    for (text, want) in [
        (r#"{"op":"subscribe","room":"r","id":1}"#, Some(1)),
        (r#"{"op":"unsubscribe","room":"r","id":2}"#, Some(2)),
        (r#"{"op":"publish","room":"r","data":0,"id":3}"#, Some(3)),
        (r#"{"op":"ping","id":4}"#, Some(4)),
        (r#"{"op":"ping"}"#, None),
        (r#"{"op":"publish","room":"r","data":0}"#, None),
    ] {
        assert_eq!(decode(text).unwrap().id(), want, "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// decode: ids
// ---------------------------------------------------------------------------------------------

#[test]
fn absent_id_decodes_as_none() {
    assert_eq!(
        decode(r#"{"op":"subscribe","room":"r"}"#).unwrap().id(),
        None
    );
}

#[test]
fn null_id_decodes_as_none() {
    assert_eq!(
        decode(r#"{"op":"subscribe","room":"r","id":null}"#)
            .unwrap()
            .id(),
        None
    );
}

#[test]
fn zero_id_is_valid() {
    assert_eq!(decode(r#"{"op":"ping","id":0}"#).unwrap().id(), Some(0));
}

#[test]
fn largest_u64_id_is_valid() {
    assert_eq!(
        decode(r#"{"op":"ping","id":18446744073709551615}"#)
            .unwrap()
            .id(),
        Some(u64::MAX)
    );
}

#[test]
fn bad_ids_are_bad_request_without_an_id() {
    for id in [
        "-1",
        "1.5",
        "1.0",
        "1e3",
        "\"7\"",
        "true",
        "[1]",
        "{}",
        "18446744073709551616",
    ] {
        let text = format!(r#"{{"op":"ping","id":{id}}}"#);
        let e = decode_err(&text);
        assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
        assert_eq!(e.id, None, "{text}");
    }
}

#[test]
fn bad_id_is_reported_before_other_errors() {
    let e = decode_err(r#"{"op":"nope","id":-1}"#);
    assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None));
}

// ---------------------------------------------------------------------------------------------
// decode: malformed frames
// ---------------------------------------------------------------------------------------------

#[test]
fn text_that_is_not_json_is_bad_request() {
    for text in [
        "",
        " ",
        "hello",
        "{",
        r#"{"op":"ping""#,
        r#"{"op":}"#,
        "{'op':'ping'}",
        "{op:1}",
    ] {
        let e = decode_err(text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{text:?}");
    }
}

#[test]
fn trailing_garbage_after_the_object_is_bad_request() {
    for text in [
        r#"{"op":"ping"}x"#,
        r#"{"op":"ping"}{}"#,
        r#"{"op":"ping"},"#,
        r#"{"op":"ping","id":1} 1"#,
    ] {
        let e = decode_err(text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{text:?}");
    }
}

#[test]
fn json_that_is_not_an_object_is_bad_request() {
    for text in [
        "[]",
        r#"[{"op":"ping"}]"#,
        "42",
        "-1.5",
        r#""ping""#,
        "null",
        "true",
        "false",
    ] {
        assert_eq!(code_of(text), ErrorCode::BadRequest, "{text}");
    }
}

#[test]
fn missing_op_is_bad_request_carrying_the_id() {
    let e = decode_err(r#"{"room":"r","id":11}"#);
    assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(11)));
}

#[test]
fn empty_object_is_bad_request() {
    assert_eq!(code_of("{}"), ErrorCode::BadRequest);
}

#[test]
fn op_that_is_not_a_string_is_bad_request() {
    for op in ["1", "null", "true", "[\"ping\"]", "{}"] {
        let text = format!(r#"{{"op":{op},"id":12}}"#);
        let e = decode_err(&text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(12)), "{text}");
    }
}

#[test]
fn unknown_op_is_unknown_op_carrying_the_id() {
    for op in ["nope", "", "Ping", "SUBSCRIBE", "message", "welcome"] {
        let text = format!(r#"{{"op":"{op}","id":13}}"#);
        let e = decode_err(&text);
        assert_eq!((e.code, e.id), (ErrorCode::UnknownOp, Some(13)), "{text}");
    }
}

#[test]
fn unknown_op_message_is_truncated_for_very_long_ops() {
    let op = "é".repeat(100);
    let e = decode_err(&format!(r#"{{"op":"{op}"}}"#));
    assert_eq!(e.code, ErrorCode::UnknownOp);
    assert!(e.message.len() < 120, "message too long: {}", e.message);
}

#[test]
fn missing_room_is_bad_request_for_every_room_op() {
    for op in ["subscribe", "unsubscribe"] {
        let e = decode_err(&format!(r#"{{"op":"{op}","id":14}}"#));
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(14)), "{op}");
    }
    let e = decode_err(r#"{"op":"publish","data":1,"id":14}"#);
    assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(14)));
}

#[test]
fn room_that_is_not_a_string_is_bad_request() {
    for room in ["1", "null", "true", "[\"r\"]", "{\"r\":1}"] {
        let text = format!(r#"{{"op":"subscribe","room":{room},"id":15}}"#);
        let e = decode_err(&text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(15)), "{text}");
    }
}

#[test]
fn empty_room_is_invalid_room() {
    let e = decode_err(r#"{"op":"subscribe","room":"","id":16}"#);
    assert_eq!((e.code, e.id), (ErrorCode::InvalidRoom, Some(16)));
}

#[test]
fn room_of_200_bytes_is_valid() {
    let room = "a".repeat(200);
    assert_eq!(subscribe_room(&subscribe_json(&room)), room);
}

#[test]
fn room_of_201_bytes_is_invalid() {
    let room = "a".repeat(201);
    assert_eq!(code_of(&subscribe_json(&room)), ErrorCode::InvalidRoom);
}

#[test]
fn multi_byte_room_of_exactly_200_bytes_is_valid() {
    // 66 three-byte characters plus two bytes of ASCII: 200 bytes, 68 characters.
    let room = format!("{}ab", "€".repeat(66));
    assert_eq!(room.len(), 200);
    assert_eq!(subscribe_room(&subscribe_json(&room)), room);
}

#[test]
fn multi_byte_room_of_201_bytes_is_invalid_though_it_has_few_characters() {
    let room = format!("{}abc", "€".repeat(66));
    assert_eq!(room.len(), 201);
    assert_eq!(code_of(&subscribe_json(&room)), ErrorCode::InvalidRoom);
}

#[test]
fn four_byte_characters_count_four_bytes_each() {
    let room = "😀".repeat(50);
    assert_eq!(room.len(), 200);
    assert_eq!(subscribe_room(&subscribe_json(&room)), room);
    let room = format!("{room}a");
    assert_eq!(code_of(&subscribe_json(&room)), ErrorCode::InvalidRoom);
}

#[test]
fn room_limit_counts_unescaped_bytes_not_json_text() {
    // 200 bytes once unescaped, many more as JSON text.
    let text = format!(r#"{{"op":"subscribe","room":"{}"}}"#, "\\u0061".repeat(200));
    assert_eq!(subscribe_room(&text), "a".repeat(200));
}

#[test]
fn room_with_a_control_character_is_invalid_room() {
    for room in [
        "a\u{7}b",
        "a\nb",
        "\r",
        "tab\there",
        "\u{0}",
        "x\u{1b}[31m",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        let text = subscribe_json(room);
        assert_eq!(code_of(&text), ErrorCode::InvalidRoom, "{text}");
    }
}

#[test]
fn room_with_escaped_control_character_is_invalid_room() {
    assert_eq!(
        code_of(r#"{"op":"subscribe","room":"a\u0007"}"#),
        ErrorCode::InvalidRoom
    );
    assert_eq!(
        code_of(r#"{"op":"subscribe","room":"a\nb"}"#),
        ErrorCode::InvalidRoom
    );
}

#[test]
fn room_with_a_raw_control_character_in_the_json_is_bad_request() {
    // An unescaped control character inside a JSON string is not JSON at all.
    assert_eq!(
        code_of("{\"op\":\"subscribe\",\"room\":\"a\nb\"}"),
        ErrorCode::BadRequest
    );
}

#[test]
fn room_with_spaces_punctuation_and_unicode_is_valid() {
    for room in [
        "a b",
        "chat:general/42",
        "ünïcödé",
        "日本語",
        "😀",
        " ",
        "#$%&'()*+,-./",
    ] {
        assert_eq!(subscribe_room(&subscribe_json(room)), room);
    }
}

#[test]
fn escaped_room_names_decode_to_the_unescaped_string() {
    assert_eq!(
        subscribe_room(r#"{"op":"subscribe","room":"a\"b"}"#),
        "a\"b"
    );
    assert_eq!(
        subscribe_room(r#"{"op":"subscribe","room":"a\\b"}"#),
        "a\\b"
    );
    assert_eq!(subscribe_room(r#"{"op":"subscribe","room":"a\/b"}"#), "a/b");
    assert_eq!(
        subscribe_room(r#"{"op":"subscribe","room":"\u00e9t\u00e9"}"#),
        "été"
    );
    assert_eq!(
        subscribe_room(r#"{"op":"subscribe","room":"\ud83d\ude00"}"#),
        "😀"
    );
}

#[test]
fn unescaped_room_names_are_borrowed_from_the_input() {
    match decode(r#"{"op":"subscribe","room":"plain"}"#).unwrap() {
        ClientFrame::Subscribe { room, .. } => {
            assert!(matches!(room, std::borrow::Cow::Borrowed(_)))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn room_with_a_lone_surrogate_escape_is_rejected() {
    let code = code_of(r#"{"op":"subscribe","room":"\ud800"}"#);
    assert_eq!(code, ErrorCode::BadRequest);
}

#[test]
fn publish_to_an_invalid_room_is_invalid_room_carrying_the_id() {
    let e = decode_err(r#"{"op":"publish","room":"","data":1,"id":17}"#);
    assert_eq!((e.code, e.id), (ErrorCode::InvalidRoom, Some(17)));
}

#[test]
fn unsubscribe_from_an_invalid_room_is_invalid_room() {
    assert_eq!(
        code_of(r#"{"op":"unsubscribe","room":""}"#),
        ErrorCode::InvalidRoom
    );
}

// ---------------------------------------------------------------------------------------------
// decode: publish data and scope
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_without_data_is_bad_request_carrying_the_id() {
    let e = decode_err(r#"{"op":"publish","room":"r","id":18}"#);
    assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(18)));
}

#[test]
fn null_data_is_accepted_and_kept_as_the_text_null() {
    let (_, data, _, _) = publish_of(r#"{"op":"publish","room":"r","data":null}"#);
    assert_eq!(data, "null");
}

#[test]
fn data_of_every_json_type_is_kept_verbatim() {
    for data in [
        "null",
        "true",
        "false",
        "0",
        "-12",
        "3.25",
        "1e300",
        "-0.0",
        "123456789012345678901234567890",
        r#""""#,
        r#""hi""#,
        r#""esc \"q\" \\ \n \u00e9 \ud83d\ude00""#,
        "[]",
        "[1, \"two\", null, [3]]",
        "{}",
        r#"{"a":{"b":[1,2,{"c":null}]}}"#,
    ] {
        let (_, got, _, _) = publish_of(&publish_json("r", data));
        assert_eq!(got, data);
    }
}

#[test]
fn whitespace_inside_data_is_kept_verbatim() {
    let data = "{ \"a\" :\n\t[ 1 , 2 ] ,\r\n  \"b\" : { } }";
    let (_, got, _, _) = publish_of(&publish_json("r", data));
    assert_eq!(got, data);
}

#[test]
fn whitespace_around_data_is_not_part_of_data() {
    let (_, got, _, _) =
        publish_of("{\"op\":\"publish\",\"room\":\"r\",\"data\":  \n [1]  \n ,\"id\":1}");
    assert_eq!(got, "[1]");
}

#[test]
fn key_order_and_duplicate_keys_inside_data_are_kept_verbatim() {
    let data = r#"{"z":1,"a":2,"z":3}"#;
    let (_, got, _, _) = publish_of(&publish_json("r", data));
    assert_eq!(got, data);
}

#[test]
fn data_containing_protocol_field_names_is_not_confused_with_the_frame() {
    let data = r#"{"op":"ping","room":"","id":-1,"data":null}"#;
    let (room, got, scope, id) = publish_of(&publish_json("r", data));
    assert_eq!(
        (room.as_str(), got.as_str(), scope, id),
        ("r", data, Scope::Cluster, None)
    );
}

#[test]
fn malformed_data_is_bad_request() {
    for data in ["", "[1,", "{\"a\"}", "tru", "01", "NaN", "'x'"] {
        let text = format!(r#"{{"op":"publish","room":"r","data":{data},"id":1}}"#);
        assert_eq!(code_of(&text), ErrorCode::BadRequest, "{text}");
    }
}

#[test]
fn bad_scope_is_bad_request_carrying_the_id() {
    for scope in [
        r#""""#,
        r#""Worker""#,
        r#""global""#,
        r#""node ""#,
        "null",
        "1",
        r#"["node"]"#,
    ] {
        let text = format!(r#"{{"op":"publish","room":"r","data":1,"scope":{scope},"id":19}}"#);
        let e = decode_err(&text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(19)), "{text}");
    }
}

#[test]
fn scope_on_subscribe_is_ignored() {
    assert_eq!(
        decode(r#"{"op":"subscribe","room":"r","scope":"bogus"}"#).unwrap(),
        ClientFrame::Subscribe {
            recover: None,
            room: "r".into(),
            id: None
        }
    );
}

// ---------------------------------------------------------------------------------------------
// decode: duplicates, extra fields, error ids
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_known_field_is_bad_request() {
    for text in [
        r#"{"op":"ping","op":"ping"}"#,
        r#"{"op":"subscribe","room":"a","room":"b"}"#,
        r#"{"op":"publish","room":"r","data":1,"data":2}"#,
        r#"{"op":"publish","room":"r","data":1,"scope":"node","scope":"node"}"#,
        r#"{"op":"ping","id":1,"id":2}"#,
        r#"{"op":"ping","id":null,"id":null}"#,
        r#"{"op":"ping","\u006fp":"ping"}"#,
    ] {
        assert_eq!(code_of(text), ErrorCode::BadRequest, "{text}");
    }
}

#[test]
fn duplicate_unknown_field_is_ignored() {
    assert_eq!(
        decode(r#"{"op":"ping","x":1,"x":2}"#).unwrap(),
        ClientFrame::Ping { id: None }
    );
}

#[test]
fn unknown_extra_fields_are_ignored() {
    let text = r#"{"v":2,"op":"publish","meta":{"trace":[1,2,3]},"room":"r","data":"d","ttl":null,"id":20,"Op":"x"}"#;
    let (room, data, scope, id) = publish_of(text);
    assert_eq!(
        (room.as_str(), data.as_str(), scope, id),
        ("r", r#""d""#, Scope::Cluster, Some(20))
    );
}

#[test]
fn malformed_unknown_field_value_is_bad_request() {
    assert_eq!(code_of(r#"{"op":"ping","x":[1,}"#), ErrorCode::BadRequest);
}

#[test]
fn every_error_after_a_valid_id_carries_the_id() {
    for (text, code) in [
        (r#"{"id":21}"#, ErrorCode::BadRequest),
        (r#"{"id":21,"op":5}"#, ErrorCode::BadRequest),
        (r#"{"id":21,"op":"zap"}"#, ErrorCode::UnknownOp),
        (r#"{"id":21,"op":"subscribe"}"#, ErrorCode::BadRequest),
        (
            r#"{"id":21,"op":"subscribe","room":5}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"id":21,"op":"subscribe","room":""}"#,
            ErrorCode::InvalidRoom,
        ),
        (
            r#"{"id":21,"op":"unsubscribe","room":"\u0001"}"#,
            ErrorCode::InvalidRoom,
        ),
        (
            r#"{"id":21,"op":"publish","room":"r"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"id":21,"op":"publish","room":"r","data":1,"scope":"x"}"#,
            ErrorCode::BadRequest,
        ),
    ] {
        let e = decode_err(text);
        assert_eq!((e.code, e.id), (code, Some(21)), "{text}");
    }
}

#[test]
fn errors_before_the_id_can_be_read_carry_no_id() {
    for text in [
        r#"{"id":22,"op":"ping""#,
        r#"{"id":22,"op":"ping","op":"ping"}"#,
        r#"{"id":22} x"#,
    ] {
        let e = decode_err(text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{text}");
    }
}

#[test]
fn decode_error_displays_its_code_and_message() {
    let e = decode_err(r#"{"op":"zap"}"#);
    let shown = e.to_string();
    assert!(shown.starts_with("unknown_op: "), "{shown}");
}

#[test]
fn a_gap_frame_names_its_room() {
    assert_eq!(
        ServerFrame::Gap { room: "chat\"1" }.encode(),
        r#"{"op":"gap","room":"chat\"1"}"#
    );
}

// ---------------------------------------------------------------------------------------------
// ErrorCode, Scope, validate_room
// ---------------------------------------------------------------------------------------------

#[test]
fn error_codes_have_their_wire_names() {
    let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "bad_request",
            "unknown_op",
            "invalid_room",
            "not_subscribed",
            "too_large",
            "unsupported",
            "limit_exceeded",
            "forbidden",
            "invalid_token",
            "internal",
            "unavailable",
            "rate_limited"
        ]
    );
    for code in ErrorCode::ALL {
        assert_eq!(code.to_string(), code.as_str());
    }
}

#[test]
fn scope_names_round_trip() {
    for scope in [Scope::Worker, Scope::Node, Scope::Cluster] {
        assert_eq!(Scope::from_name(scope.as_str()), Some(scope));
        assert_eq!(scope.to_string(), scope.as_str());
    }
    assert_eq!(Scope::from_name("NODE"), None);
    assert_eq!(Scope::default(), Scope::Cluster);
}

#[test]
fn validate_room_reports_invalid_room_codes() {
    assert!(crate::validate_room("ok").is_ok());
    assert_eq!(
        crate::validate_room("").map_err(|e| e.0),
        Err(ErrorCode::InvalidRoom)
    );
    assert_eq!(
        crate::validate_room(&"x".repeat(crate::MAX_ROOM_BYTES + 1)).map_err(|e| e.0),
        Err(ErrorCode::InvalidRoom)
    );
    assert_eq!(
        crate::validate_room("\u{7}").map_err(|e| e.0),
        Err(ErrorCode::InvalidRoom)
    );
}

// ---------------------------------------------------------------------------------------------
// ServerFrame::encode
// ---------------------------------------------------------------------------------------------

fn welcome(heartbeat_secs: f64) -> String {
    ServerFrame::Welcome(Welcome {
        session: "s-1",
        node: "node-a",
        worker: 3,
        heartbeat_secs,
        user: None,
    })
    .encode()
}

#[test]
fn welcome_carries_user_when_the_session_has_one() {
    let text = ServerFrame::Welcome(Welcome {
        session: "s-1",
        node: "n",
        worker: 0,
        heartbeat_secs: 25.0,
        user: Some("alice \"a\""),
    })
    .encode();
    assert_eq!(parse(&text)["user"], json!("alice \"a\""));
    assert!(!parse(&welcome(25.0))
        .as_object()
        .unwrap()
        .contains_key("user"));
}

#[test]
fn message_carries_user_only_when_set() {
    let data = raw("1");
    let with = ServerFrame::Message {
        at: None,
        room: "r",
        data: &data,
        from: "s-1",
        user: Some("bob"),
    }
    .encode();
    assert_eq!(
        parse(&with),
        json!({"op": "message", "room": "r", "data": 1, "from": "s-1", "user": "bob"})
    );
    let without = ServerFrame::Message {
        at: None,
        room: "r",
        data: &data,
        from: "s-1",
        user: None,
    }
    .encode();
    assert!(!parse(&without).as_object().unwrap().contains_key("user"));
}

#[test]
fn refresh_decodes_token_and_id() {
    assert_eq!(
        decode(r#"{"op":"refresh","token":"a.b.c","id":4}"#).unwrap(),
        ClientFrame::Refresh {
            token: "a.b.c".into(),
            id: Some(4)
        }
    );
}

#[test]
fn refresh_without_a_string_token_is_bad_request_with_id() {
    for text in [
        r#"{"op":"refresh","id":9}"#,
        r#"{"op":"refresh","token":5,"id":9}"#,
        r#"{"op":"refresh","token":null,"id":9}"#,
    ] {
        let e = decode(text).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(9)), "{text}");
        assert!(e.message.contains("token"), "{text}: {}", e.message);
    }
}

#[test]
fn welcome_encodes_every_field() {
    assert_eq!(
        parse(&welcome(25.0)),
        json!({
            "op": "welcome",
            "session": "s-1",
            "node": "node-a",
            "worker": 3,
            "protocol": "switchboard.v1",
            "heartbeat": 25
        })
    );
}

#[test]
fn welcome_protocol_is_the_crate_protocol_constant() {
    assert_eq!(crate::PROTOCOL, "switchboard.v1");
    assert_eq!(parse(&welcome(25.0))["protocol"], crate::PROTOCOL);
}

#[test]
fn whole_second_heartbeat_is_encoded_as_an_integer() {
    let text = welcome(25.0);
    assert!(text.contains(r#""heartbeat":25}"#), "{text}");
    assert!(parse(&text)["heartbeat"].is_u64());
}

#[test]
fn fractional_heartbeat_is_encoded_as_a_float() {
    let text = welcome(0.05);
    let v = parse(&text);
    assert!(v["heartbeat"].is_f64(), "{text}");
    assert_eq!(v["heartbeat"].as_f64(), Some(0.05));
}

#[test]
fn non_finite_heartbeat_is_still_valid_json() {
    for secs in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let v = parse(&welcome(secs));
        assert!(v["heartbeat"].is_number());
    }
}

#[test]
fn huge_heartbeat_is_still_valid_json() {
    let v = parse(&welcome(1e20));
    assert_eq!(v["heartbeat"].as_f64(), Some(1e20));
}

#[test]
fn welcome_escapes_session_and_node() {
    let v = parse(
        &ServerFrame::Welcome(Welcome {
            session: "a\"b",
            node: "n\\\n",
            worker: 0,
            heartbeat_secs: 1.5,
            user: None,
        })
        .encode(),
    );
    assert_eq!(v["session"], "a\"b");
    assert_eq!(v["node"], "n\\\n");
    assert_eq!(v["worker"], 0);
    assert_eq!(v["heartbeat"], 1.5);
}

#[test]
fn ack_with_id_encodes_the_id() {
    let text = ServerFrame::Ack { id: Some(7) }.encode();
    assert_eq!(parse(&text), json!({"op": "ack", "id": 7}));
}

#[test]
fn ack_without_id_has_no_id_key() {
    let text = ServerFrame::Ack { id: None }.encode();
    assert_eq!(parse(&text), json!({"op": "ack"}));
    assert!(!text.contains("id"), "{text}");
}

#[test]
fn ack_with_largest_id_round_trips() {
    let v = parse(&ServerFrame::Ack { id: Some(u64::MAX) }.encode());
    assert_eq!(v["id"].as_u64(), Some(u64::MAX));
}

#[test]
fn pong_with_id_encodes_the_id() {
    assert_eq!(
        parse(&ServerFrame::Pong { id: Some(8) }.encode()),
        json!({"op": "pong", "id": 8})
    );
}

#[test]
fn pong_without_id_has_no_id_key() {
    let text = ServerFrame::Pong { id: None }.encode();
    assert_eq!(parse(&text), json!({"op": "pong"}));
    assert!(!text.contains("id"), "{text}");
}

#[test]
fn error_with_id_encodes_the_id() {
    let text = ServerFrame::Error {
        id: Some(9),
        code: ErrorCode::NotSubscribed,
        message: "not subscribed to \"r\"",
    }
    .encode();
    assert_eq!(
        parse(&text),
        json!({"op": "error", "id": 9, "code": "not_subscribed", "message": "not subscribed to \"r\""})
    );
}

#[test]
fn error_without_id_has_a_null_id() {
    let text = ServerFrame::Error {
        id: None,
        code: ErrorCode::BadRequest,
        message: "x",
    }
    .encode();
    let v = parse(&text);
    assert_eq!(
        v,
        json!({"op": "error", "id": null, "code": "bad_request", "message": "x"})
    );
    assert!(v.as_object().unwrap().contains_key("id"));
}

#[test]
fn error_encodes_every_code() {
    for code in ErrorCode::ALL {
        let v = parse(
            &ServerFrame::Error {
                id: Some(1),
                code,
                message: "",
            }
            .encode(),
        );
        assert_eq!(v["code"], code.as_str());
    }
}

#[test]
fn message_encodes_room_data_and_from() {
    let data = raw(r#"{"text":"hi","n":[1,2.5,null]}"#);
    let text = ServerFrame::Message {
        at: None,
        room: "lobby",
        data: &data,
        from: "s-2",
        user: None,
    }
    .encode();
    assert_eq!(
        parse(&text),
        json!({"op": "message", "room": "lobby", "data": {"text": "hi", "n": [1, 2.5, null]}, "from": "s-2"})
    );
}

#[test]
fn message_copies_data_verbatim() {
    let data_text = "{ \"b\" : 1 ,\n \"a\" : [ 1.50 , 1e2 ] }";
    let data = raw(data_text);
    let text = ServerFrame::Message {
        at: None,
        room: "r",
        data: &data,
        from: "f",
        user: None,
    }
    .encode();
    assert_eq!(
        text,
        format!(r#"{{"op":"message","room":"r","data":{data_text},"from":"f"}}"#)
    );
}

#[test]
fn message_with_null_data_keeps_null() {
    let data = raw("null");
    let v = parse(
        &ServerFrame::Message {
            at: None,
            room: "r",
            data: &data,
            from: "f",
            user: None,
        }
        .encode(),
    );
    assert!(v.as_object().unwrap().contains_key("data"));
    assert_eq!(v["data"], Value::Null);
}

#[test]
fn decoded_publish_data_is_delivered_verbatim() {
    let text = r#"{"op":"publish","room":"a\"b","data":{ "x" : "\u00e9" },"id":1}"#;
    let Ok(ClientFrame::Publish(p)) = decode(text) else {
        panic!("not a publish")
    };
    let out = ServerFrame::Message {
        at: None,
        room: &p.room,
        data: p.data,
        from: "s",
        user: None,
    }
    .encode();
    assert_eq!(
        out,
        r#"{"op":"message","room":"a\"b","data":{ "x" : "\u00e9" },"from":"s"}"#
    );
}

// ---------------------------------------------------------------------------------------------
// String escaping and message_len
// ---------------------------------------------------------------------------------------------

const TRICKY_STRINGS: &[&str] = &[
    "",
    "plain",
    "\"",
    "\\",
    "\"\\\"",
    "quote \" and backslash \\",
    "\n\r\t",
    "\u{0}",
    "\u{1}\u{2}\u{1f}",
    "\u{7}bell",
    "\u{8}\u{c}",
    "\u{7f}",
    "\u{85}\u{2028}\u{2029}",
    "/slash/",
    "é ü ñ",
    "日本語",
    "😀 emoji",
    "mixed \u{0} é \" \\ \n 😀 \u{1f} end",
    "\\u0041 literal backslash-u",
    "</script>",
];

#[test]
fn strings_needing_escapes_round_trip_exactly_in_every_frame() {
    let data = raw("0");
    for &s in TRICKY_STRINGS {
        let v = parse(
            &ServerFrame::Message {
                at: None,
                room: s,
                data: &data,
                from: s,
                user: None,
            }
            .encode(),
        );
        assert_eq!(v["room"], s, "{s:?}");
        assert_eq!(v["from"], s, "{s:?}");

        let v = parse(
            &ServerFrame::Welcome(Welcome {
                session: s,
                node: s,
                worker: 1,
                heartbeat_secs: 1.0,
                user: None,
            })
            .encode(),
        );
        assert_eq!(v["session"], s, "{s:?}");
        assert_eq!(v["node"], s, "{s:?}");

        let v = parse(
            &ServerFrame::Error {
                id: None,
                code: ErrorCode::Internal,
                message: s,
            }
            .encode(),
        );
        assert_eq!(v["message"], s, "{s:?}");
    }
}

#[test]
fn every_control_character_is_escaped() {
    for b in 0u8..0x20 {
        let s = char::from(b).to_string();
        let data = raw("0");
        let text = ServerFrame::Message {
            at: None,
            room: &s,
            data: &data,
            from: "",
            user: None,
        }
        .encode();
        assert!(
            !text.bytes().any(|c| c < 0x20),
            "raw control byte {b:#x} in {text:?}"
        );
        assert_eq!(parse(&text)["room"], s.as_str());
    }
}

#[test]
fn short_escapes_are_used_for_common_characters() {
    let data = raw("0");
    let text = ServerFrame::Message {
        at: None,
        room: "\"\\\n\r\t\u{1}",
        data: &data,
        from: "",
        user: None,
    }
    .encode();
    assert!(text.contains(r#""room":"\"\\\n\r\t\u0001""#), "{text}");
}

#[test]
fn message_len_equals_encoded_length() {
    let datas = [
        "null",
        "0",
        "\"\"",
        "\"é \\\" \\n\"",
        "[1, 2, 3]",
        "{ \"a\" : { \"b\" : [ ] } }",
        "\"😀\"",
    ];
    for &room in TRICKY_STRINGS {
        for &from in TRICKY_STRINGS {
            for d in datas {
                for user in [None, Some(from), Some(room)] {
                    let data = raw(d);
                    let frame = ServerFrame::Message {
                        at: None,
                        room,
                        data: &data,
                        from,
                        user,
                    };
                    assert_eq!(
                        ServerFrame::message_len(room, &data, from, user),
                        frame.encode().len(),
                        "room {room:?} from {from:?} user {user:?} data {d:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn message_len_matches_for_long_strings() {
    let room = "\u{1}\"x😀".repeat(500);
    let from = "\\".repeat(1000);
    let data = raw(&format!("\"{}\"", "a".repeat(70_000)));
    let encoded = ServerFrame::Message {
        at: None,
        room: &room,
        data: &data,
        from: &from,
        user: None,
    }
    .encode();
    assert_eq!(
        ServerFrame::message_len(&room, &data, &from, None),
        encoded.len()
    );
}

#[test]
fn direct_carries_data_verbatim_and_from() {
    let data = raw(r#"{ "n" : 1.50 }"#);
    let text = ServerFrame::Direct {
        data: &data,
        from: "admin",
    }
    .encode();
    assert_eq!(
        text,
        r#"{"op":"direct","data":{ "n" : 1.50 },"from":"admin"}"#
    );
}

// ---------------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------------

const SCOPES: [Scope; 3] = [Scope::Worker, Scope::Node, Scope::Cluster];

/// Every JSON kind, spelled with whitespace, escapes and number forms that must survive as is.
const ENVELOPE_DATAS: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-12",
    "2.50",
    "-1.5e10",
    "18446744073709551616",
    r#""""#,
    r#""é \" \n \u00e9 \ud83d\ude00""#,
    "[]",
    "{}",
    r#"{"a" : [1, 2.50, "x"]}"#,
    "[ 1 , [ 2 , { } ] ]",
    r#"{ "n" : { "m" : null } , "n" : 2 }"#,
];

/// An envelope whose strings borrow from the arguments.
fn envelope<'a>(
    room: &'a str,
    data: &'a RawValue,
    from: &'a str,
    user: Option<&'a str>,
    scope: Scope,
    node: &'a str,
    offset: Option<u64>,
) -> Envelope<'a> {
    Envelope {
        epoch: None,
        kind: Default::default(),
        room: room.into(),
        data,
        from: from.into(),
        user: user.map(Cow::Borrowed),
        scope,
        node: node.into(),
        offset,
    }
}

/// A valid envelope's fields as (name, JSON text), in encoding order.
const ENVELOPE_FIELDS: [(&str, &str); 6] = [
    ("v", "1"),
    ("room", r#""lobby""#),
    ("node", r#""n1""#),
    ("from", r#""1a2b3c4d-7""#),
    ("scope", r#""cluster""#),
    ("data", r#"{"x":1}"#),
];

/// A valid envelope's text with one field's value replaced (`Some`) or removed (`None`); a name
/// that is not one of the valid envelope's fields is added.
fn envelope_with(name: &str, value: Option<&str>) -> String {
    let mut fields: Vec<String> = Vec::new();
    let mut seen = false;
    for (k, v) in ENVELOPE_FIELDS {
        if k == name {
            seen = true;
            if let Some(value) = value {
                fields.push(format!("\"{k}\":{value}"));
            }
        } else {
            fields.push(format!("\"{k}\":{v}"));
        }
    }
    if let (false, Some(value)) = (seen, value) {
        fields.push(format!("\"{name}\":{value}"));
    }
    format!("{{{}}}", fields.join(","))
}

fn envelope_err(text: &str) -> EnvelopeError {
    match Envelope::decode(text) {
        Ok(env) => panic!("expected {text:?} to fail, got {env:?}"),
        Err(e) => e,
    }
}

fn invalid(field: &'static str, message: &'static str) -> EnvelopeError {
    EnvelopeError::Invalid { field, message }
}

#[test]
fn envelope_version_is_one() {
    assert_eq!(ENVELOPE_VERSION, 1);
}

#[test]
fn envelope_encodes_every_field_in_order() {
    let data = raw(r#"{"text":"hi"}"#);
    let env = envelope(
        "lobby",
        &data,
        "1a2b3c4d-7",
        Some("alice"),
        Scope::Cluster,
        "n1",
        Some(12),
    );
    assert_eq!(
        env.encode(),
        r#"{"v":1,"room":"lobby","node":"n1","from":"1a2b3c4d-7","user":"alice","scope":"cluster","offset":12,"data":{"text":"hi"}}"#
    );
}

#[test]
fn envelope_omits_user_and_offset_when_absent() {
    let data = raw("null");
    let text = envelope("r", &data, "admin", None, Scope::Node, "n", None).encode();
    assert_eq!(
        text,
        r#"{"v":1,"room":"r","node":"n","from":"admin","scope":"node","data":null}"#
    );
}

#[test]
fn envelope_decodes_every_field() {
    let text = r#"{"v":1,"room":"lobby","node":"n1","from":"1a2b3c4d-7","user":"alice","scope":"worker","offset":12,"data":{"text":"hi"}}"#;
    let data = raw(r#"{"text":"hi"}"#);
    assert_eq!(
        Envelope::decode(text).unwrap(),
        envelope(
            "lobby",
            &data,
            "1a2b3c4d-7",
            Some("alice"),
            Scope::Worker,
            "n1",
            Some(12)
        )
    );
}

#[test]
fn envelope_round_trips_every_field_combination() {
    let rooms: Vec<&str> = TRICKY_STRINGS
        .iter()
        .copied()
        .filter(|r| crate::validate_room(r).is_ok())
        .collect();
    assert!(rooms.len() > 5);
    let offsets = [None, Some(0), Some(9), Some(10), Some(12), Some(u64::MAX)];
    for &s in TRICKY_STRINGS {
        for &room in &rooms {
            for user in [None, Some(s)] {
                for scope in SCOPES {
                    for offset in offsets {
                        let data = raw(r#"{"a" : [1, 2.50, "x"]}"#);
                        let env = envelope(room, &data, s, user, scope, s, offset);
                        let text = env.encode();
                        assert_eq!(text.len(), env.encoded_len(), "{text:?}");
                        assert!(
                            !text.bytes().any(|b| b < 0x20),
                            "raw control byte in {text:?}"
                        );
                        assert_eq!(Envelope::decode(&text).unwrap(), env, "{text:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn envelope_encoding_is_the_json_of_its_fields() {
    for &s in TRICKY_STRINGS {
        let data = raw("[1, 2.50]");
        let text = envelope("room", &data, s, Some(s), Scope::Worker, s, Some(7)).encode();
        assert_eq!(
            parse(&text),
            json!({"v": 1, "room": "room", "node": s, "from": s, "user": s, "scope": "worker",
                   "offset": 7, "data": [1, 2.5]}),
            "{s:?}"
        );
    }
}

#[test]
fn envelope_keeps_data_of_every_kind_byte_for_byte() {
    for d in ENVELOPE_DATAS {
        let data = raw(d);
        let env = envelope("r", &data, "s-1", None, Scope::Cluster, "n", None);
        let text = env.encode();
        assert!(text.ends_with(&format!(r#","data":{d}}}"#)), "{text}");
        assert_eq!(text.len(), env.encoded_len(), "{d}");
        assert_eq!(Envelope::decode(&text).unwrap().data.get(), *d);
        // And wherever it stands in an envelope written by someone else.
        let text = format!(
            r#"{{ "data" : {d} , "v" : 1 , "room" : "r" , "node" : "n" , "from" : "s" , "scope" : "node" }}"#
        );
        assert_eq!(Envelope::decode(&text).unwrap().data.get(), *d, "{text}");
    }
}

#[test]
fn envelope_decode_borrows_strings_without_escapes() {
    let text =
        r#"{"v":1,"room":"lobby","node":"n1","from":"s-7","user":"alice","scope":"node","data":0}"#;
    let env = Envelope::decode(text).unwrap();
    assert!(matches!(env.room, Cow::Borrowed("lobby")));
    assert!(matches!(env.node, Cow::Borrowed("n1")));
    assert!(matches!(env.from, Cow::Borrowed("s-7")));
    assert!(matches!(env.user, Some(Cow::Borrowed("alice"))));
}

#[test]
fn envelope_decode_unescapes_strings() {
    let text = r#"{"v":1,"room":"l\u00f6bby \"1\"","node":"n\\1","from":"s\t7","user":"\ud83d\ude00","scope":"node","data":0}"#;
    let env = Envelope::decode(text).unwrap();
    assert_eq!(env.room, "löbby \"1\"");
    assert_eq!(env.node, "n\\1");
    assert_eq!(env.from, "s\t7");
    assert_eq!(env.user.as_deref(), Some("😀"));
}

#[test]
fn envelope_decode_accepts_any_field_order_and_whitespace() {
    let text = "\n { \"data\" : [ ] ,\t\"scope\":\"worker\" , \"offset\" : 3, \"from\":\"f\",\"node\":\"n\",\"room\":\"r\",\"v\":1 } \n";
    let data = raw("[ ]");
    assert_eq!(
        Envelope::decode(text).unwrap(),
        envelope("r", &data, "f", None, Scope::Worker, "n", Some(3))
    );
}

#[test]
fn envelope_decode_recognises_escaped_field_names() {
    let text = r#"{"\u0076":1,"r\u006fom":"r","node":"n","from":"f","scope":"node","data":1}"#;
    assert_eq!(Envelope::decode(text).unwrap().room, "r");
}

#[test]
fn envelope_decode_ignores_unknown_fields() {
    for extra in [
        r#""op":"publish""#,
        r#""trace":{"id":[1,2,{"x":null}]}"#,
        r#""x":1,"x":2"#,
        r#""V":2"#,
        r#""priority":-1.5e3"#,
    ] {
        let text = format!(
            r#"{{{extra},"v":1,"room":"r","node":"n","from":"f","scope":"node","data":true}}"#
        );
        let data = raw("true");
        assert_eq!(
            Envelope::decode(&text).unwrap(),
            envelope("r", &data, "f", None, Scope::Node, "n", None),
            "{text}"
        );
    }
}

#[test]
fn envelope_decode_takes_null_user_and_offset_as_absent() {
    let text = envelope_with("user", Some("null"));
    assert_eq!(Envelope::decode(&text).unwrap().user, None);
    let text = envelope_with("offset", Some("null"));
    assert_eq!(Envelope::decode(&text).unwrap().offset, None);
}

#[test]
fn envelope_decode_accepts_null_data() {
    let text = envelope_with("data", Some("null"));
    assert_eq!(Envelope::decode(&text).unwrap().data.get(), "null");
}

#[test]
fn envelope_decode_accepts_offset_extremes() {
    for (spelled, want) in [("0", 0), ("18446744073709551615", u64::MAX)] {
        let text = envelope_with("offset", Some(spelled));
        assert_eq!(Envelope::decode(&text).unwrap().offset, Some(want));
    }
}

#[test]
fn envelope_text_that_is_not_json_is_not_json() {
    let valid = envelope_with("", None);
    for text in [
        String::new(),
        " ".to_owned(),
        "{".to_owned(),
        "not json".to_owned(),
        r#"{"v":1,}"#.to_owned(),
        r#"{"v":1 "room":"r"}"#.to_owned(),
        r#"{'v':1}"#.to_owned(),
        r#"{"v":1,"room":"\ud800"}"#.to_owned(),
        format!("{valid} x"),
        format!("{valid}{valid}"),
        valid[..valid.len() - 1].to_owned(),
    ] {
        assert!(
            matches!(envelope_err(&text), EnvelopeError::NotJson(_)),
            "{text:?}: {:?}",
            envelope_err(&text)
        );
    }
}

#[test]
fn envelope_json_that_is_not_an_object_is_not_an_object() {
    let valid = envelope_with("", None);
    for text in [
        "[]".to_owned(),
        "1".to_owned(),
        "-1.5".to_owned(),
        r#""s""#.to_owned(),
        "null".to_owned(),
        "true".to_owned(),
        format!("[{valid}]"),
        format!("{valid:?}"),
    ] {
        assert_eq!(envelope_err(&text), EnvelopeError::NotObject, "{text}");
    }
}

#[test]
fn envelope_missing_required_field_is_missing() {
    for (name, _) in ENVELOPE_FIELDS {
        assert_eq!(
            envelope_err(&envelope_with(name, None)),
            EnvelopeError::Missing(name),
            "{name}"
        );
    }
    assert_eq!(envelope_err("{}"), EnvelopeError::Missing("v"));
}

#[test]
fn envelope_string_fields_of_another_type_are_invalid() {
    for name in ["room", "node", "from", "user", "scope"] {
        for value in ["1", "[]", "{}", "true", r#"["r"]"#] {
            assert_eq!(
                envelope_err(&envelope_with(name, Some(value))),
                invalid(name, "must be a string"),
                "{name}: {value}"
            );
        }
    }
    for name in ["room", "node", "from", "scope"] {
        assert_eq!(
            envelope_err(&envelope_with(name, Some("null"))),
            invalid(name, "must be a string"),
            "{name}"
        );
    }
}

#[test]
fn envelope_version_that_is_not_an_unsigned_integer_is_invalid() {
    for value in [
        r#""1""#,
        "1.0",
        "1e0",
        "-1",
        "null",
        "true",
        "[1]",
        "{}",
        "18446744073709551616",
    ] {
        assert_eq!(
            envelope_err(&envelope_with("v", Some(value))),
            invalid("v", "must be an unsigned integer"),
            "{value}"
        );
    }
}

#[test]
fn envelope_of_another_version_is_refused() {
    for v in [0, 2, 3, u64::MAX] {
        let text = envelope_with("v", Some(&v.to_string()));
        assert_eq!(envelope_err(&text), EnvelopeError::Version(v), "{text}");
    }
}

#[test]
fn envelope_version_is_checked_before_the_other_fields() {
    assert_eq!(envelope_err(r#"{"v":2}"#), EnvelopeError::Version(2));
    assert_eq!(
        envelope_err(r#"{"v":2,"room":"","scope":"galaxy","offset":-1}"#),
        EnvelopeError::Version(2)
    );
    assert_eq!(
        envelope_err(r#"{"room":"r","node":"n","from":"f","scope":"node","data":1}"#),
        EnvelopeError::Missing("v")
    );
}

#[test]
fn envelope_bad_room_is_invalid_with_the_room_rule() {
    for room in [
        "",
        &"x".repeat(crate::MAX_ROOM_BYTES + 1),
        "a\u{7}b",
        "\u{85}",
    ] {
        let want = crate::validate_room(room).unwrap_err().1;
        let value = serde_json::to_string(room).unwrap();
        assert_eq!(
            envelope_err(&envelope_with("room", Some(&value))),
            invalid("room", want),
            "{room:?}"
        );
    }
    let longest = serde_json::to_string(&"x".repeat(crate::MAX_ROOM_BYTES)).unwrap();
    assert!(Envelope::decode(&envelope_with("room", Some(&longest))).is_ok());
}

#[test]
fn envelope_bad_scope_is_invalid() {
    for scope in [r#""""#, r#""global""#, r#""Cluster""#, r#"" node""#] {
        assert_eq!(
            envelope_err(&envelope_with("scope", Some(scope))),
            invalid("scope", "must be \"worker\", \"node\" or \"cluster\""),
            "{scope}"
        );
    }
    for scope in SCOPES {
        let text = envelope_with("scope", Some(&format!("\"{scope}\"")));
        assert_eq!(Envelope::decode(&text).unwrap().scope, scope);
    }
}

#[test]
fn envelope_offset_that_is_not_an_unsigned_integer_is_invalid() {
    for value in [
        "-1",
        "-0",
        "1.5",
        "1.0",
        "1e3",
        r#""12""#,
        "true",
        "[]",
        "{}",
        "18446744073709551616",
    ] {
        assert_eq!(
            envelope_err(&envelope_with("offset", Some(value))),
            invalid("offset", "must be an unsigned integer"),
            "{value}"
        );
    }
}

#[test]
fn envelope_duplicate_field_is_refused() {
    for (name, value) in ENVELOPE_FIELDS
        .into_iter()
        .chain([("user", r#""u""#), ("offset", "1")])
    {
        let valid = envelope_with(name, Some(value));
        // The same field again, with the same value or another.
        for again in [value, "null"] {
            let text = format!("{},\"{name}\":{again}}}", &valid[..valid.len() - 1]);
            assert_eq!(
                envelope_err(&text),
                EnvelopeError::Duplicate(name),
                "{text}"
            );
        }
    }
    let text =
        r#"{"v":1,"room":"r","r\u006fom":"s","node":"n","from":"f","scope":"node","data":1}"#;
    assert_eq!(envelope_err(text), EnvelopeError::Duplicate("room"));
}

#[test]
fn envelope_errors_name_the_field() {
    assert_eq!(
        EnvelopeError::Missing("node").to_string(),
        "missing field `node`"
    );
    assert_eq!(
        EnvelopeError::Duplicate("data").to_string(),
        "duplicate field `data`"
    );
    assert_eq!(
        invalid("offset", "must be an unsigned integer").to_string(),
        "field `offset`: must be an unsigned integer"
    );
    assert!(EnvelopeError::Version(2).to_string().contains('2'));
    assert!(envelope_err("{")
        .to_string()
        .starts_with("not valid JSON: "));
}

#[test]
fn envelopes_compare_data_by_its_text() {
    let (a, b) = (raw("[1,2]"), raw("[1, 2]"));
    let x = envelope("r", &a, "f", None, Scope::Node, "n", None);
    let y = envelope("r", &b, "f", None, Scope::Node, "n", None);
    assert_ne!(x, y);
    assert_eq!(x, x.clone());
    let owned = Envelope {
        room: Cow::Owned("r".to_owned()),
        ..x.clone()
    };
    assert_eq!(x, owned);
}

#[test]
fn encode_after_leaves_room_in_front_and_writes_the_same_text() {
    let data = raw(r#"{"a" : [1, 2.50]}"#);
    let frames = [
        ServerFrame::Ack { id: Some(7) },
        ServerFrame::Ack { id: None },
        ServerFrame::Pong { id: None },
        ServerFrame::Message {
            at: None,
            room: "chat:\"lobby\"",
            data: &data,
            from: "s-1",
            user: Some("ünïcode"),
        },
        ServerFrame::Error {
            id: None,
            code: ErrorCode::BadRequest,
            message: "bad\nthing",
        },
    ];
    for frame in &frames {
        for front in [0, 2, 10] {
            let bytes = frame.encode_after(front);
            assert!(bytes[..front].iter().all(|b| *b == 0));
            assert_eq!(&bytes[front..], frame.encode().as_bytes());
        }
    }
}

#[test]
fn exact_lengths_match_the_encoding() {
    for id in [
        None,
        Some(0),
        Some(9),
        Some(10),
        Some(99),
        Some(12_345),
        Some(u64::MAX),
    ] {
        let frame = ServerFrame::Ack { id };
        let mut text = String::new();
        frame.encode_into(&mut text);
        assert_eq!(frame.exact_len(), Some(text.len()), "{text}");
    }
    let data = raw(r#"{"a":[1,"\u00e9"]}"#);
    let frame = ServerFrame::Message {
        at: None,
        room: "r\"1",
        data: &data,
        from: "s-1",
        user: Some("u\\x"),
    };
    let mut text = String::new();
    frame.encode_into(&mut text);
    assert_eq!(frame.exact_len(), Some(text.len()));
    assert_eq!(ServerFrame::Pong { id: Some(1) }.exact_len(), None);
}

// History rooms, presence and join/leave.

#[test]
fn subscribe_with_recover_history_and_presence_decode() {
    let f = decode(r#"{"op":"subscribe","room":"r","id":1,"recover":{"epoch":"e1","offset":7}}"#)
        .unwrap();
    assert_eq!(
        f,
        ClientFrame::Subscribe {
            room: Cow::Borrowed("r"),
            id: Some(1),
            recover: Some(crate::Recover {
                epoch: Cow::Borrowed("e1"),
                offset: 7
            }),
        }
    );
    let f = decode(r#"{"op":"subscribe","room":"r","recover":null}"#).unwrap();
    assert!(matches!(f, ClientFrame::Subscribe { recover: None, .. }));
    for bad in [
        r#"{"op":"subscribe","room":"r","id":2,"recover":{"epoch":"e"}}"#,
        r#"{"op":"subscribe","room":"r","id":2,"recover":{"offset":1}}"#,
        r#"{"op":"subscribe","room":"r","id":2,"recover":{"epoch":1,"offset":1}}"#,
        r#"{"op":"subscribe","room":"r","id":2,"recover":{"epoch":"e","offset":-1}}"#,
        r#"{"op":"subscribe","room":"r","id":2,"recover":{"epoch":"e","epoch":"f","offset":1}}"#,
        r#"{"op":"subscribe","room":"r","id":2,"recover":[1]}"#,
    ] {
        let e = decode(bad).unwrap_err();
        assert_eq!((e.id, e.code), (Some(2), ErrorCode::BadRequest), "{bad}");
    }
    assert_eq!(
        decode(r#"{"op":"history","room":"r","limit":5,"id":3}"#).unwrap(),
        ClientFrame::History {
            room: Cow::Borrowed("r"),
            limit: Some(5),
            id: Some(3)
        }
    );
    assert!(matches!(
        decode(r#"{"op":"history","room":"r"}"#).unwrap(),
        ClientFrame::History { limit: None, .. }
    ));
    let e = decode(r#"{"op":"history","room":"r","limit":"5","id":4}"#).unwrap_err();
    assert_eq!((e.id, e.code), (Some(4), ErrorCode::BadRequest));
    assert_eq!(
        decode(r#"{"op":"presence","room":"r","id":5}"#).unwrap(),
        ClientFrame::Presence {
            room: Cow::Borrowed("r"),
            id: Some(5)
        }
    );
    let e = decode(r#"{"op":"presence","id":6}"#).unwrap_err();
    assert_eq!((e.id, e.code), (Some(6), ErrorCode::BadRequest));
}

#[test]
fn history_frames_encode_as_json_with_their_positions() {
    let data = RawValue::from_string(r#"{"t":1}"#.to_owned()).unwrap();
    let at = crate::Position {
        epoch: "ep",
        offset: 42,
    };
    let message = ServerFrame::Message {
        room: "r",
        data: &data,
        from: "s",
        user: Some("u"),
        at: Some(at),
    };
    let text = message.encode();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"op":"message","room":"r","data":{"t":1},"from":"s","user":"u","offset":42,"epoch":"ep"})
    );
    assert_eq!(message.exact_len(), Some(text.len()));
    let ack = ServerFrame::AckAt {
        id: Some(1),
        at,
        recovered: Some(true),
    }
    .encode();
    assert_eq!(
        serde_json::from_str::<Value>(&ack).unwrap(),
        json!({"op":"ack","id":1,"offset":42,"epoch":"ep","recovered":true})
    );
    assert_eq!(
        ServerFrame::AckUnrecovered { id: None }.encode(),
        r#"{"op":"ack","recovered":false}"#
    );
    let history = ServerFrame::History {
        id: Some(2),
        room: "r",
        at,
        messages: &[&text, &text],
    }
    .encode();
    let v: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(v["messages"][1]["offset"], 42);
    assert_eq!(v["offset"], 42);
    let members = [
        crate::Member {
            session: "a",
            user: None,
            node: "n1",
        },
        crate::Member {
            session: "b\"",
            user: Some("bob"),
            node: "n2",
        },
    ];
    let presence = ServerFrame::Presence {
        id: None,
        room: "r",
        members: &members,
    }
    .encode();
    assert_eq!(
        serde_json::from_str::<Value>(&presence).unwrap(),
        json!({"op":"presence","room":"r","members":[{"session":"a","node":"n1"},{"session":"b\"","user":"bob","node":"n2"}]})
    );
    let join = ServerFrame::Join {
        room: "r",
        session: "s",
        user: None,
    }
    .encode();
    assert_eq!(join, r#"{"op":"join","room":"r","session":"s"}"#);
    let leave = ServerFrame::Leave {
        room: "r",
        session: "s",
        user: Some("u"),
    }
    .encode();
    assert_eq!(
        leave,
        r#"{"op":"leave","room":"r","session":"s","user":"u"}"#
    );
}

#[test]
fn an_envelope_cut_around_its_position_is_the_envelope_with_that_position() {
    let data = RawValue::from_string(r#"[1,"two"]"#.to_owned()).unwrap();
    let mut envelope = Envelope {
        room: Cow::Borrowed("chat:1"),
        data: &data,
        from: Cow::Borrowed("s-1"),
        user: Some(Cow::Borrowed("u")),
        scope: Scope::Cluster,
        node: Cow::Borrowed("n"),
        offset: None,
        epoch: None,
        kind: crate::Kind::Message,
    };
    let (head, tail) = envelope.encode_around_position();
    let joined = format!("{head}17,\"epoch\":\"e9\"{tail}");
    envelope.offset = Some(17);
    envelope.epoch = Some(Cow::Borrowed("e9"));
    assert_eq!(joined, envelope.encode());
    assert_eq!(Envelope::decode(&joined).unwrap(), envelope);
    envelope.kind = crate::Kind::Leave;
    envelope.offset = None;
    envelope.epoch = None;
    let text = envelope.encode();
    assert!(text.contains(r#""kind":"leave""#), "{text}");
    assert_eq!(Envelope::decode(&text).unwrap(), envelope);
    assert_eq!(envelope.encoded_len(), text.len());
    let bad = text.replace("leave", "dance");
    assert!(matches!(
        Envelope::decode(&bad),
        Err(crate::EnvelopeError::Invalid { field: "kind", .. })
    ));
}
