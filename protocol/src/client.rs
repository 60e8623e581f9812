use std::{borrow::Cow, fmt};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::{validate_room, DecodeError, ErrorCode, Scope};

/// A decoded client frame. Borrowed from the text it was decoded from, so decoding a publish
/// copies nothing: `data` stays the exact JSON text the client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame<'a> {
    /// `{"op":"subscribe","room":R,"id":N}`, with `"recover":{"epoch":E,"offset":K}` to get
    /// the messages after `K` that the session missed.
    Subscribe {
        room: Cow<'a, str>,
        id: Option<u64>,
        recover: Option<Recover<'a>>,
    },
    /// `{"op":"history","room":R,"limit":N,"id":N}`: the room's last messages.
    History {
        room: Cow<'a, str>,
        /// How many messages at most; `None`: as many as the hub gives (its cap).
        limit: Option<u64>,
        id: Option<u64>,
    },
    /// `{"op":"presence","room":R,"id":N}`: who is in the room.
    Presence { room: Cow<'a, str>, id: Option<u64> },
    /// `{"op":"unsubscribe","room":R,"id":N}`
    Unsubscribe { room: Cow<'a, str>, id: Option<u64> },
    /// `{"op":"publish","room":R,"data":D,"scope":S,"id":N}`
    Publish(Publish<'a>),
    /// `{"op":"ping","id":N}`
    Ping { id: Option<u64> },
    /// `{"op":"refresh","token":T,"id":N}`: replaces the session's token before it expires.
    Refresh {
        token: Cow<'a, str>,
        id: Option<u64>,
    },
}

/// Where a recovering subscriber left off: the last message it got, by its room's `epoch` and
/// its `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover<'a> {
    /// The epoch of the room's history the offset belongs to.
    pub epoch: Cow<'a, str>,
    /// The offset of the last message received.
    pub offset: u64,
}

/// The fields of a `publish` frame.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    /// The target room, already validated.
    pub room: Cow<'a, str>,
    /// The payload exactly as the client wrote it (any JSON value, `null` included).
    pub data: &'a RawValue,
    /// How far the message travels; [`Scope::Cluster`] when the client gave none.
    pub scope: Scope,
    /// The request id, echoed in the ack.
    pub id: Option<u64>,
}

impl PartialEq for Publish<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.room == other.room
            && self.data.get() == other.data.get()
            && self.scope == other.scope
            && self.id == other.id
    }
}

impl ClientFrame<'_> {
    /// The request id, if the frame carried one.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientFrame::Subscribe { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Presence { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Ping { id }
            | ClientFrame::Refresh { id, .. } => *id,
            ClientFrame::Publish(p) => p.id,
        }
    }
}

/// Decodes one client text frame.
///
/// Unknown fields are ignored so that newer clients can talk to older hubs. A frame that names a
/// valid `id` gets it back in the error, whatever else is wrong with it.
pub fn decode(text: &str) -> Result<ClientFrame<'_>, DecodeError> {
    let fields = parse_fields(text)?;
    // The id is read first so that every later error can carry it.
    let id = match fields.id {
        None => None,
        Some(raw) => match serde_json::from_str::<Option<u64>>(raw.get()) {
            Ok(id) => id,
            Err(_) => {
                return Err(DecodeError::new(
                    None,
                    ErrorCode::BadRequest,
                    "field `id` must be an unsigned integer",
                ))
            }
        },
    };
    let op = match fields.op {
        None => {
            return Err(DecodeError::new(
                id,
                ErrorCode::BadRequest,
                "missing field `op`",
            ))
        }
        Some(raw) => string_field(raw, "op", id)?,
    };
    match &*op {
        "subscribe" => Ok(ClientFrame::Subscribe {
            room: room_field(fields.room, id)?,
            id,
            recover: match fields.recover {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => Some(recover_field(raw, id)?),
            },
        }),
        "history" => Ok(ClientFrame::History {
            room: room_field(fields.room, id)?,
            limit: match fields.limit {
                None => None,
                Some(raw) => serde_json::from_str::<Option<u64>>(raw.get()).map_err(|_| {
                    DecodeError::new(
                        id,
                        ErrorCode::BadRequest,
                        "field `limit` must be an unsigned integer",
                    )
                })?,
            },
            id,
        }),
        "presence" => Ok(ClientFrame::Presence {
            room: room_field(fields.room, id)?,
            id,
        }),
        "unsubscribe" => Ok(ClientFrame::Unsubscribe {
            room: room_field(fields.room, id)?,
            id,
        }),
        "publish" => {
            let room = room_field(fields.room, id)?;
            let data = fields.data.ok_or_else(|| {
                DecodeError::new(id, ErrorCode::BadRequest, "missing field `data`")
            })?;
            let scope = match fields.scope {
                None => Scope::default(),
                Some(raw) => {
                    let name = string_field(raw, "scope", id)?;
                    Scope::from_name(&name).ok_or_else(|| {
                        DecodeError::new(
                            id,
                            ErrorCode::BadRequest,
                            "field `scope` must be \"worker\", \"node\" or \"cluster\"",
                        )
                    })?
                }
            };
            Ok(ClientFrame::Publish(Publish {
                room,
                data,
                scope,
                id,
            }))
        }
        "ping" => Ok(ClientFrame::Ping { id }),
        "refresh" => {
            let raw = fields.token.ok_or_else(|| {
                DecodeError::new(id, ErrorCode::BadRequest, "missing field `token`")
            })?;
            Ok(ClientFrame::Refresh {
                token: string_field(raw, "token", id)?,
                id,
            })
        }
        _ => Err(DecodeError::new(
            id,
            ErrorCode::UnknownOp,
            format!("unknown op {:?}", truncate(&op, 64)),
        )),
    }
}

/// `{"epoch":E,"offset":K}`: both required, unknown fields ignored.
fn recover_field<'a>(raw: &'a RawValue, id: Option<u64>) -> Result<Recover<'a>, DecodeError> {
    let bad = || {
        DecodeError::new(
            id,
            ErrorCode::BadRequest,
            "field `recover` must be {\"epoch\": string, \"offset\": unsigned integer}",
        )
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let (epoch, offset) = de.deserialize_any(RecoverVisitor).map_err(|_| bad())?;
    match (epoch, offset) {
        (Some(epoch), Some(offset)) if epoch.len() <= 64 => Ok(Recover { epoch, offset }),
        _ => Err(bad()),
    }
}

struct RecoverVisitor;

impl<'de> Visitor<'de> for RecoverVisitor {
    type Value = (Option<Cow<'de, str>>, Option<u64>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with epoch and offset")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut epoch, mut offset) = (None, None);
        while let Some(CowStr(key)) = map.next_key_seed(CowStrSeed)? {
            match &*key {
                "epoch" if epoch.is_none() => {
                    epoch = Some(map.next_value_seed(CowStrSeed)?.0);
                }
                "offset" if offset.is_none() => offset = Some(map.next_value::<u64>()?),
                "epoch" | "offset" => {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((epoch, offset))
    }
}

fn room_field<'a>(raw: Option<&'a RawValue>, id: Option<u64>) -> Result<Cow<'a, str>, DecodeError> {
    let raw =
        raw.ok_or_else(|| DecodeError::new(id, ErrorCode::BadRequest, "missing field `room`"))?;
    let room = string_field(raw, "room", id)?;
    validate_room(&room).map_err(|(code, message)| DecodeError::new(id, code, message))?;
    Ok(room)
}

fn string_field<'a>(
    raw: &'a RawValue,
    name: &'static str,
    id: Option<u64>,
) -> Result<Cow<'a, str>, DecodeError> {
    // A `Cow` borrows when the JSON string has no escapes, which is the common case.
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match CowStr::deserialize(&mut de) {
        Ok(CowStr(s)) => Ok(s),
        Err(_) => Err(DecodeError::new(
            id,
            ErrorCode::BadRequest,
            format!("field `{name}` must be a string"),
        )),
    }
}

/// A JSON string that borrows from the input when it has no escapes.
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

impl<'de> CowStr<'de> {
    pub(crate) fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(CowStr)
    }
}

/// The raw top-level fields of a client frame, each still unparsed JSON text.
#[derive(Default)]
struct Fields<'a> {
    op: Option<&'a RawValue>,
    room: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    scope: Option<&'a RawValue>,
    token: Option<&'a RawValue>,
    recover: Option<&'a RawValue>,
    limit: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
}

fn parse_fields(text: &str) -> Result<Fields<'_>, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_any(FieldsVisitor).map_err(|e| {
        let message = if e.is_data() {
            // Our visitor's own messages (not an object, duplicate field) are the useful part.
            format!("{e}")
        } else {
            format!("not valid JSON: {e}")
        };
        DecodeError::new(None, ErrorCode::BadRequest, message)
    })?;
    de.end().map_err(|e| {
        DecodeError::new(None, ErrorCode::BadRequest, format!("not valid JSON: {e}"))
    })?;
    Ok(fields)
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(CowStr(key)) = map.next_key_seed(CowStrSeed)? {
            let slot = match &*key {
                "op" => &mut fields.op,
                "room" => &mut fields.room,
                "data" => &mut fields.data,
                "scope" => &mut fields.scope,
                "token" => &mut fields.token,
                "recover" => &mut fields.recover,
                "limit" => &mut fields.limit,
                "id" => &mut fields.id,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            // `&RawValue` keeps `null` as the text "null"; an `Option<&RawValue>` would not.
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(fields)
    }
}

/// Deserializes a [`CowStr`] (an object key, in a `MapAccess`).
pub(crate) struct CowStrSeed;

impl<'de> de::DeserializeSeed<'de> for CowStrSeed {
    type Value = CowStr<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        CowStr::deserialize(d)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
