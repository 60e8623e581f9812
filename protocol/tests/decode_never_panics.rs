//! Property tests: `decode` never panics, and valid frames round-trip.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use switchboard_protocol::{decode, ClientFrame, RawValue, ServerFrame, MAX_ROOM_BYTES};

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A value that is often a plausible field value: strings naming ops and scopes, ids, rooms.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "subscribe",
            "unsubscribe",
            "publish",
            "ping",
            "worker",
            "node",
            "cluster",
            "",
            "room",
        ])
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        json_value(),
    ]
}

/// JSON text of an object whose keys are drawn from the protocol's field names (duplicates
/// included), serialized with random whitespace choices.
fn frame_like_object() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec!["op", "room", "data", "scope", "id", "x"]);
    (
        prop::collection::vec((key, field_value()), 0..7),
        any::<bool>(),
    )
        .prop_map(|(fields, pretty)| {
            let sep = if pretty { " , " } else { "," };
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\":{}", serde_json::to_string(v).unwrap()))
                .collect();
            format!("{{{}}}", body.join(sep))
        })
}

/// A valid room name: 1 to 200 bytes of UTF-8 without control characters. Control characters
/// are mapped to characters that need escaping in JSON rather than filtered out.
fn valid_room() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 1..=200).prop_map(|chars| {
        let mut room = String::new();
        for c in chars {
            let c = match c {
                c if c.is_control() && u32::from(c) % 2 == 0 => '"',
                c if c.is_control() => '\\',
                c => c,
            };
            if room.len() + c.len_utf8() > MAX_ROOM_BYTES {
                break;
            }
            room.push(c);
        }
        room
    })
}

proptest! {
    #[test]
    fn decode_never_panics_on_any_string(text in ".*") {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_json_ish_text(text in "[{}\\[\\]\":,a-z0-9 \\\\]*") {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_objects_with_protocol_keys(text in frame_like_object()) {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_truncated_objects(text in frame_like_object(), cut in any::<prop::sample::Index>()) {
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = decode(&text[..end]);
    }

    #[test]
    fn publish_round_trips_room_and_data(room in valid_room(), data in json_value(), id in proptest::option::of(any::<u64>())) {
        let mut frame = serde_json::json!({"op": "publish", "room": room, "data": data});
        if let Some(id) = id {
            frame["id"] = id.into();
        }
        let text = serde_json::to_string(&frame).unwrap();
        // Compare against the data as it reads back from JSON text: serde_json's default float
        // parser may differ from `f64` by one ulp, which says nothing about this crate.
        let data_text = serde_json::to_string(&data).unwrap();
        let want: Value = serde_json::from_str(&data_text).unwrap();
        match decode(&text) {
            Ok(ClientFrame::Publish(p)) => {
                prop_assert_eq!(&*p.room, room.as_str());
                prop_assert_eq!(p.data.get(), data_text.as_str());
                let got: Value = serde_json::from_str(p.data.get()).unwrap();
                prop_assert_eq!(got, want);
                prop_assert_eq!(p.id, id);
            }
            other => prop_assert!(false, "{text:?} decoded to {other:?}"),
        }
    }

    #[test]
    fn message_frame_is_valid_json_and_round_trips(room in any::<String>(), from in any::<String>(), data in json_value()) {
        let data_text = serde_json::to_string(&data).unwrap();
        let want_data: Value = serde_json::from_str(&data_text).unwrap();
        let raw = RawValue::from_string(data_text).unwrap();
        let text = ServerFrame::Message { room: &room, data: &raw, from: &from, user: Some(&from) }.encode();
        prop_assert_eq!(text.len(), ServerFrame::message_len(&room, &raw, &from, Some(&from)));
        let v: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(v, serde_json::json!({"op": "message", "room": room, "data": want_data, "from": &from, "user": &from}));
    }
}
