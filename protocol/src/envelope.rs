use std::{borrow::Cow, fmt, fmt::Write as _};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::{
    client::{CowStr, CowStrSeed},
    server::{json_str_len, push_json_str},
    validate_room, Scope,
};

/// The envelope version this crate writes and the only one it reads.
pub const ENVELOPE_VERSION: u64 = 1;

/// A publish as it crosses a broker between nodes.
///
/// The node that accepted the publish encodes it once ([`Envelope::encode`]) and hands the text to
/// the broker; every other node decodes it ([`Envelope::decode`]) and delivers it to its own
/// members. Decoding borrows from the text: `data` stays the exact JSON the publisher sent, and
/// strings without escapes are not copied.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The target room, valid under [`validate_room`].
    pub room: Cow<'a, str>,
    /// The payload, verbatim JSON text (any value, `null` included), never re-serialized.
    pub data: &'a RawValue,
    /// The publisher: a session id, or `"admin"` / `"http"` for publishes made by the operator.
    pub from: Cow<'a, str>,
    /// The publisher's user id (its token's `sub`), if it has one.
    pub user: Option<Cow<'a, str>>,
    /// How far the publish travels.
    pub scope: Scope,
    /// The id of the node where the publish was accepted.
    pub node: Cow<'a, str>,
    /// The message's offset in its room's history (history rooms only).
    pub offset: Option<u64>,
    /// The epoch of the room's history that `offset` belongs to (history rooms only).
    pub epoch: Option<Cow<'a, str>>,
    /// What the envelope carries: a message, or a member's join or leave.
    pub kind: Kind,
}

/// What an [`Envelope`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// A published message (`kind` absent on the wire).
    #[default]
    Message,
    /// `from` (a session) came into the room, for its `join` frame; `data` is `null`.
    Join,
    /// `from` left the room, for its `leave` frame; `data` is `null`.
    Leave,
}

impl Kind {
    fn as_str(self) -> Option<&'static str> {
        match self {
            Kind::Message => None,
            Kind::Join => Some("join"),
            Kind::Leave => Some("leave"),
        }
    }
}

impl PartialEq for Envelope<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.room == other.room
            && self.data.get() == other.data.get()
            && self.from == other.from
            && self.user == other.user
            && self.scope == other.scope
            && self.node == other.node
            && self.offset == other.offset
            && self.epoch == other.epoch
            && self.kind == other.kind
    }
}

/// Why a broker message could not be decoded as an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The text is not JSON, or has content after the value.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The text is JSON but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// A field of the envelope appears more than once.
    #[error("duplicate field `{0}`")]
    Duplicate(&'static str),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field is present but its value is of the wrong type or breaks a rule.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with its value.
        message: &'static str,
    },
    /// `v` is a valid number but not [`ENVELOPE_VERSION`].
    #[error("envelope version {0} is not supported (this node reads version {ENVELOPE_VERSION})")]
    Version(u64),
}

impl<'a> Envelope<'a> {
    /// The envelope as JSON text, in one allocation of the exact size.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len());
        self.encode_head(&mut out);
        if let Some(offset) = self.offset {
            let _ = write!(out, r#","offset":{offset}"#);
        }
        if let Some(epoch) = &self.epoch {
            out.push_str(r#","epoch":"#);
            push_json_str(&mut out, epoch);
        }
        out.push_str(r#","data":"#);
        out.push_str(self.data.get());
        out.push('}');
        out
    }

    /// The envelope cut where its position goes, for a broker that assigns the position itself
    /// (a Redis script): `head + OFFSET + "," + "\"epoch\":\"" + EPOCH + "\"" + tail` is the envelope
    /// with `offset` and `epoch` set (an epoch that needs no JSON escaping). `offset` and
    /// `epoch` of `self` are ignored.
    pub fn encode_around_position(&self) -> (String, String) {
        let mut head = String::with_capacity(self.encoded_len() + 10);
        self.encode_head(&mut head);
        head.push_str(r#","offset":"#);
        let mut tail = String::with_capacity(self.data.get().len() + 10);
        tail.push_str(r#","data":"#);
        tail.push_str(self.data.get());
        tail.push('}');
        (head, tail)
    }

    fn encode_head(&self, out: &mut String) {
        let _ = write!(out, r#"{{"v":{ENVELOPE_VERSION},"room":"#);
        push_json_str(out, &self.room);
        out.push_str(r#","node":"#);
        push_json_str(out, &self.node);
        out.push_str(r#","from":"#);
        push_json_str(out, &self.from);
        if let Some(user) = &self.user {
            out.push_str(r#","user":"#);
            push_json_str(out, user);
        }
        out.push_str(r#","scope":""#);
        out.push_str(self.scope.as_str());
        out.push('"');
        if let Some(kind) = self.kind.as_str() {
            let _ = write!(out, r#","kind":"{kind}""#);
        }
    }

    /// The exact length of [`Envelope::encode`]'s output.
    pub(crate) fn encoded_len(&self) -> usize {
        r#"{"v":,"room":,"node":,"from":,"scope":"","data":}"#.len()
            + decimal_len(ENVELOPE_VERSION)
            + json_str_len(&self.room)
            + json_str_len(&self.node)
            + json_str_len(&self.from)
            + self
                .user
                .as_ref()
                .map_or(0, |u| r#","user":"#.len() + json_str_len(u))
            + self.scope.as_str().len()
            + self
                .offset
                .map_or(0, |o| r#","offset":"#.len() + decimal_len(o))
            + self
                .epoch
                .as_ref()
                .map_or(0, |e| r#","epoch":"#.len() + json_str_len(e))
            + self
                .kind
                .as_str()
                .map_or(0, |k| r#","kind":"""#.len() + k.len())
            + self.data.get().len()
    }

    /// Decodes one broker message.
    ///
    /// Fields may come in any order; unknown fields are ignored (newer nodes may add some), and
    /// the envelope's own fields may appear only once. `v` is checked before every other field's
    /// value, so an envelope of another version is reported as [`EnvelopeError::Version`]
    /// whatever those hold. `user` and `offset` may be `null`, which is the same as absent.
    pub fn decode(text: &'a str) -> Result<Envelope<'a>, EnvelopeError> {
        let fields = parse_fields(text)?;
        let version = u64_field(required(fields.v, "v")?, "v")?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let room = string_field(required(fields.room, "room")?, "room")?;
        validate_room(&room).map_err(|(_, message)| EnvelopeError::Invalid {
            field: "room",
            message,
        })?;
        let node = string_field(required(fields.node, "node")?, "node")?;
        let from = string_field(required(fields.from, "from")?, "from")?;
        let user = match fields.user {
            Some(raw) if raw.get() != "null" => Some(string_field(raw, "user")?),
            _ => None,
        };
        let scope_name = string_field(required(fields.scope, "scope")?, "scope")?;
        let scope = Scope::from_name(&scope_name).ok_or(EnvelopeError::Invalid {
            field: "scope",
            message: "must be \"worker\", \"node\" or \"cluster\"",
        })?;
        let offset = match fields.offset {
            Some(raw) if raw.get() != "null" => Some(u64_field(raw, "offset")?),
            _ => None,
        };
        let epoch = match fields.epoch {
            Some(raw) if raw.get() != "null" => Some(string_field(raw, "epoch")?),
            _ => None,
        };
        let kind = match fields.kind {
            Some(raw) if raw.get() != "null" => match &*string_field(raw, "kind")? {
                "message" => Kind::Message,
                "join" => Kind::Join,
                "leave" => Kind::Leave,
                _ => {
                    return Err(EnvelopeError::Invalid {
                        field: "kind",
                        message: "must be \"message\", \"join\" or \"leave\"",
                    })
                }
            },
            _ => Kind::Message,
        };
        let data = required(fields.data, "data")?;
        Ok(Envelope {
            room,
            data,
            from,
            user,
            scope,
            node,
            offset,
            epoch,
            kind,
        })
    }
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn required<'a>(
    raw: Option<&'a RawValue>,
    name: &'static str,
) -> Result<&'a RawValue, EnvelopeError> {
    raw.ok_or(EnvelopeError::Missing(name))
}

fn string_field<'a>(raw: &'a RawValue, name: &'static str) -> Result<Cow<'a, str>, EnvelopeError> {
    // Borrows when the JSON string has no escapes.
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match CowStr::deserialize(&mut de) {
        Ok(CowStr(s)) => Ok(s),
        Err(e) if e.is_data() => Err(EnvelopeError::Invalid {
            field: name,
            message: "must be a string",
        }),
        // A string the first pass skipped but that cannot be read as one: a lone surrogate
        // escape such as "\ud800".
        Err(e) => Err(EnvelopeError::NotJson(format!("field `{name}`: {e}"))),
    }
}

fn u64_field(raw: &RawValue, name: &'static str) -> Result<u64, EnvelopeError> {
    serde_json::from_str::<u64>(raw.get()).map_err(|_| EnvelopeError::Invalid {
        field: name,
        message: "must be an unsigned integer",
    })
}

/// The raw top-level fields of an envelope, each still unparsed JSON text.
#[derive(Default)]
struct Fields<'a> {
    v: Option<&'a RawValue>,
    room: Option<&'a RawValue>,
    node: Option<&'a RawValue>,
    from: Option<&'a RawValue>,
    user: Option<&'a RawValue>,
    scope: Option<&'a RawValue>,
    offset: Option<&'a RawValue>,
    epoch: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
}

fn parse_fields(text: &str) -> Result<Fields<'_>, EnvelopeError> {
    let mut duplicate = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_any(FieldsVisitor {
        duplicate: &mut duplicate,
    });
    let fields = match parsed {
        Ok(fields) => fields,
        Err(e) => {
            return Err(match duplicate {
                Some(name) => EnvelopeError::Duplicate(name),
                // The visitor's only other data error: a value that is not a map.
                None if e.is_data() => EnvelopeError::NotObject,
                None => EnvelopeError::NotJson(e.to_string()),
            });
        }
    };
    de.end()
        .map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    Ok(fields)
}

struct FieldsVisitor<'x> {
    /// Set to the field's name when the visitor fails on a duplicate.
    duplicate: &'x mut Option<&'static str>,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(CowStr(key)) = map.next_key_seed(CowStrSeed)? {
            let (name, slot) = match &*key {
                "v" => ("v", &mut fields.v),
                "room" => ("room", &mut fields.room),
                "node" => ("node", &mut fields.node),
                "from" => ("from", &mut fields.from),
                "user" => ("user", &mut fields.user),
                "scope" => ("scope", &mut fields.scope),
                "offset" => ("offset", &mut fields.offset),
                "epoch" => ("epoch", &mut fields.epoch),
                "kind" => ("kind", &mut fields.kind),
                "data" => ("data", &mut fields.data),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                *self.duplicate = Some(name);
                return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
            }
            // `&RawValue` keeps `null` as the text "null"; an `Option<&RawValue>` would not.
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(fields)
    }
}
