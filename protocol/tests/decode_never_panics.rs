//! Property tests: `decode` and `Envelope::decode` never panic, and valid frames and envelopes
//! round-trip.
#![allow(clippy::unwrap_used)]

use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use switchboard_protocol::{
    decode, ClientFrame, Envelope, RawValue, Scope, ServerFrame, MAX_ROOM_BYTES,
};

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

/// The parts of a valid envelope, owned, for building an [`Envelope`] that borrows them.
#[derive(Debug, Clone)]
struct EnvelopeParts {
    room: String,
    data: String,
    from: String,
    user: Option<String>,
    scope: Scope,
    node: String,
    offset: Option<u64>,
}

impl EnvelopeParts {
    fn envelope<'a>(&'a self, data: &'a RawValue) -> Envelope<'a> {
        Envelope {
            epoch: None,
            kind: Default::default(),
            room: Cow::Borrowed(&self.room),
            data,
            from: Cow::Borrowed(&self.from),
            user: self.user.as_deref().map(Cow::Borrowed),
            scope: self.scope,
            node: Cow::Borrowed(&self.node),
            offset: self.offset,
        }
    }

    fn encode(&self) -> String {
        let data = RawValue::from_string(self.data.clone()).unwrap();
        self.envelope(&data).encode()
    }
}

fn scope() -> impl Strategy<Value = Scope> {
    prop::sample::select(vec![Scope::Worker, Scope::Node, Scope::Cluster])
}

/// Any valid envelope; `data` is JSON text, compact or pretty.
fn envelope_parts() -> impl Strategy<Value = EnvelopeParts> {
    (
        valid_room(),
        (json_value(), any::<bool>()),
        any::<String>(),
        proptest::option::of(any::<String>()),
        scope(),
        any::<String>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(room, (data, pretty), from, user, scope, node, offset)| EnvelopeParts {
                room,
                data: if pretty {
                    serde_json::to_string_pretty(&data).unwrap()
                } else {
                    serde_json::to_string(&data).unwrap()
                },
                from,
                user,
                scope,
                node,
                offset,
            },
        )
}

/// One edit of a text: cut it, drop a range, insert or overwrite a character.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, char),
    Replace(prop::sample::Index, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Characters that matter to JSON, and any other.
    let c = prop_oneof![
        prop::sample::select(vec![
            '{', '}', '[', ']', '"', '\\', ':', ',', '-', '.', '0', 'e', 'u', ' '
        ]),
        any::<char>(),
    ];
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<prop::sample::Index>(), c.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<prop::sample::Index>(), c).prop_map(|(i, c)| Mutation::Replace(i, c)),
    ]
}

/// Applies `m` to `text`, on character boundaries so that the result is still a `String`.
fn mutate(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    match m {
        Mutation::Truncate(i) => chars.truncate(i.index(chars.len() + 1)),
        Mutation::Delete(i, n) => {
            let start = i.index(chars.len() + 1);
            let end = (start + n).min(chars.len());
            chars.drain(start..end);
        }
        Mutation::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
        Mutation::Replace(i, c) => {
            if !chars.is_empty() {
                let at = i.index(chars.len());
                chars[at] = *c;
            }
        }
    }
    chars.into_iter().collect()
}

/// JSON text of an object whose keys are drawn from the envelope's field names (duplicates
/// included).
fn envelope_like_object() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "v", "room", "node", "from", "user", "scope", "offset", "data", "x",
    ]);
    let value = prop_oneof![Just(Value::from(1)), field_value()];
    prop::collection::vec((key, value), 0..10).prop_map(|fields| {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{}", serde_json::to_string(v).unwrap()))
            .collect();
        format!("{{{}}}", body.join(","))
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
        let text = ServerFrame::Message { at: None, room: &room, data: &raw, from: &from, user: Some(&from) }.encode();
        prop_assert_eq!(text.len(), ServerFrame::message_len(&room, &raw, &from, Some(&from)));
        let v: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(v, serde_json::json!({"op": "message", "room": room, "data": want_data, "from": &from, "user": &from}));
    }

    #[test]
    fn envelope_decode_never_panics_on_any_string(text in ".*") {
        let _ = Envelope::decode(&text);
    }

    #[test]
    fn envelope_decode_never_panics_on_json_ish_text(text in "[{}\\[\\]\":,a-z0-9 \\\\]*") {
        let _ = Envelope::decode(&text);
    }

    #[test]
    fn envelope_decode_never_panics_on_objects_with_envelope_keys(text in envelope_like_object()) {
        let _ = Envelope::decode(&text);
    }

    #[test]
    fn envelope_decode_never_panics_on_mutated_envelopes(
        parts in envelope_parts(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut text = parts.encode();
        for m in &mutations {
            text = mutate(&text, m);
        }
        let _ = Envelope::decode(&text);
    }

    #[test]
    fn envelope_encode_then_decode_is_the_identity(parts in envelope_parts()) {
        let data = RawValue::from_string(parts.data.clone()).unwrap();
        let env = parts.envelope(&data);
        let text = env.encode();
        let decoded = Envelope::decode(&text);
        prop_assert_eq!(decoded.as_ref(), Ok(&env), "{:?}", text);
        prop_assert_eq!(decoded.unwrap().data.get(), parts.data.as_str());
        // The text is plain JSON too, readable by anything.
        let v: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&v["room"], &Value::from(parts.room.as_str()));
        prop_assert_eq!(&v["node"], &Value::from(parts.node.as_str()));
        prop_assert_eq!(&v["from"], &Value::from(parts.from.as_str()));
    }
}
