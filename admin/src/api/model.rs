//! Request and response bodies, query strings and path parameters of the admin API.
//!
//! Everything here derives its OpenAPI schema, so the published document and the code cannot
//! disagree about a field. Request bodies ignore fields they do not know, so that a client
//! written against a later version keeps working.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use switchboard_protocol::Scope;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::hub::{RoomSummary, SessionInfo};
use crate::origin::MAX_ORIGIN_BYTES;
use crate::policy::{Mode, Subprotocol};

/// The page size used when a request names none.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page size; larger requests get pages of this size.
pub const MAX_LIMIT: usize = 1000;

/// The state reported by `/healthz` and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process is up (`/healthz`).
    Ok,
    /// The node accepts new sessions (`/readyz`).
    Ready,
    /// The node is shutting down and refuses new sessions (`/readyz`).
    Draining,
    /// The node runs but cannot do all it is configured for, e.g. Redis is out of reach in
    /// cluster mode (`/readyz`, with the reason).
    Unavailable,
}

/// The body of `/healthz` and `/readyz`: a JSON object rather than bare text, so probes and
/// people read the same thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Why the node is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An endpoint's origin rules, in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OriginList {
    /// Empty allows every client.
    #[schema(
        value_type = Vec<OriginText>,
        max_items = 1024,
        example = json!(["https://app.example.com", "https://*.example.org"])
    )]
    pub origins: Vec<String>,
}

/// An origin rule to add.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewOrigin {
    #[schema(value_type = OriginText, example = "https://app.example.com")]
    pub origin: String,
}

/// The schema of an origin rule as text, with the rule grammar of `origin.rs` as a regular
/// expression, so that schema-driven clients can check a rule before sending it and fuzzers
/// generate rules the API accepts. Keep the two in step.
#[derive(Debug)]
pub struct OriginText;

/// `scheme://host[:port]`: a bracketed IPv6 address (RFC 3986 `IPv6address`), a dotted-quad
/// IPv4 address without leading zeros, `*.` and a DNS name of two labels or more, or a DNS name;
/// a name's last label may not read as a number (browsers would take it for an IPv4 address).
/// The port is 1 to 65535 in at most five digits.
pub(crate) fn origin_pattern() -> String {
    const H16: &str = "[0-9A-Fa-f]{1,4}";
    const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    const LABEL: &str = "[A-Za-z0-9-]+";
    const PORT: &str = "(0{0,4}[1-9]|0{0,3}[1-9][0-9]|0{0,2}[1-9][0-9]{2}|0?[1-9][0-9]{3}\
        |[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
    let ipv4 = format!("{OCTET}(\\.{OCTET}){{3}}");
    let ls32 = format!("({H16}:{H16}|{ipv4})");
    // `[ *n( h16 ":" ) h16 ]`: up to n+1 groups before a `::`.
    let head = |n: usize| format!("(({H16}:){{0,{n}}}{H16})?");
    let ipv6 = [
        format!("({H16}:){{6}}{ls32}"),
        format!("::({H16}:){{5}}{ls32}"),
        format!("({H16})?::({H16}:){{4}}{ls32}"),
        format!("{}::({H16}:){{3}}{ls32}", head(1)),
        format!("{}::({H16}:){{2}}{ls32}", head(2)),
        format!("{}::{H16}:{ls32}", head(3)),
        format!("{}::{ls32}", head(4)),
        format!("{}::{H16}", head(5)),
        format!("{}::", head(6)),
    ]
    .join("|");
    let last = format!("(?![0-9]+(:|$))(?!0[xX][0-9A-Fa-f]*(:|$)){LABEL}");
    let name = format!("({LABEL}\\.)*{last}");
    let wildcard = format!("\\*\\.({LABEL}\\.)+{last}");
    format!("^[A-Za-z][A-Za-z0-9+.-]*://(\\[({ipv6})\\]|{ipv4}|{wildcard}|{name})(:{PORT})?$")
}

impl PartialSchema for OriginText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`scheme://host[:port]`, or `scheme://*.domain[:port]` for every subdomain of a \
                 domain of two labels or more. Compared in canonical form: lowercase, default \
                 port dropped.",
            ))
            .min_length(Some(1))
            .max_length(Some(MAX_ORIGIN_BYTES))
            .pattern(Some(origin_pattern()))
            .into()
    }
}

impl ToSchema for OriginText {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Origin")
    }
}

/// An endpoint's accepted subprotocols.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubprotocolList {
    pub subprotocols: Vec<Subprotocol>,
}

/// A subprotocol to accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewSubprotocol {
    /// An HTTP token (RFC 9110) of 1 to 128 bytes.
    #[schema(example = "chat.v2", pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")]
    pub name: String,
    /// The mode of sessions that negotiate this subprotocol; the endpoint's mode when absent.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// One page of rooms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomPage {
    pub items: Vec<RoomSummary>,
    /// Pass as `cursor` to get the next page; `null` on the last page. Opaque: its format may
    /// change.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One page of sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<SessionInfo>,
    /// Pass as `cursor` to get the next page; `null` on the last page. Opaque: its format may
    /// change.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Kicked {
    /// The id of the session that was closed.
    pub kicked: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sent {
    /// The id of the session the message was queued for.
    pub sent: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Published {
    /// The room the message was published to.
    pub published: String,
}

/// A message for one session.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    /// Any JSON value; delivered byte for byte as the `data` of a `direct` frame.
    #[schema(value_type = serde_json::Value, example = json!({"text": "hello"}))]
    pub data: Box<RawValue>,
}

/// A message for a room.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishRequest {
    /// Any JSON value; delivered byte for byte as the `data` of each `message` frame.
    #[schema(value_type = serde_json::Value, example = json!({"text": "hello"}))]
    pub data: Box<RawValue>,
    /// How far the message travels; `cluster` when absent.
    #[serde(default)]
    pub scope: Option<PublishScope>,
}

/// How far a publish travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PublishScope {
    /// Only sessions served by one worker thread of this node.
    Worker,
    /// Every session on this node.
    Node,
    /// Every session on every node of the cluster.
    Cluster,
}

impl From<PublishScope> for Scope {
    fn from(scope: PublishScope) -> Scope {
        match scope {
            PublishScope::Worker => Scope::Worker,
            PublishScope::Node => Scope::Node,
            PublishScope::Cluster => Scope::Cluster,
        }
    }
}

/// Paging through rooms.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomQuery {
    /// Only rooms whose name starts with this; every room when absent.
    pub prefix: Option<String>,
    /// Page size: 100 when absent; 0 is taken as 1 and anything over 1000 as 1000.
    #[param(schema_with = PageLimit::schema)]
    pub limit: Option<PageLimit>,
    /// The `next_cursor` of the previous page; the first page when absent.
    pub cursor: Option<String>,
}

/// Paging through sessions.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Page size: 100 when absent; 0 is taken as 1 and anything over 1000 as 1000.
    #[param(schema_with = PageLimit::schema)]
    pub limit: Option<PageLimit>,
    /// The `next_cursor` of the previous page; the first page when absent.
    pub cursor: Option<String>,
}

/// The origin to remove. A query parameter rather than a path segment because an origin holds
/// `://`, which cannot travel in one path segment without ambiguity.
#[derive(Clone, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OriginQuery {
    /// The origin rule, URL-encoded; any spelling of the same rule matches (case, default
    /// port).
    #[param(value_type = OriginText)]
    pub origin: String,
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EndpointPath {
    /// The endpoint's name.
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SubprotocolPath {
    /// The endpoint's name.
    pub name: String,
    /// The subprotocol's name.
    pub protocol: String,
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomPath {
    /// The room name, percent-encoded (`/` as `%2F`, space as `%20`): 1 to 200 bytes of UTF-8
    /// without control characters.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub room: String,
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The session id.
    pub id: String,
}

/// A requested page size. Any non-negative integer is accepted, however large, since the
/// document promises clamping rather than a range; only what is not a non-negative integer is
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(pub u64);

impl PageLimit {
    fn schema() -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into()
    }
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;

        impl Visitor<'_> for LimitVisitor {
            type Value = PageLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PageLimit, E> {
                Ok(PageLimit(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PageLimit, E> {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                // Saturating: a limit too large for u64 is still just "as many as allowed".
                Ok(PageLimit(v.bytes().fold(0u64, |n, b| {
                    n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
                })))
            }
        }

        deserializer.deserialize_any(LimitVisitor)
    }
}

/// The page size for a requested `limit`.
pub(crate) fn page_size(limit: Option<PageLimit>) -> usize {
    match limit {
        None => DEFAULT_LIMIT,
        Some(PageLimit(limit)) => usize::try_from(limit)
            .unwrap_or(MAX_LIMIT)
            .clamp(1, MAX_LIMIT),
    }
}

/// A request body that must be a JSON object. serde also builds structs from arrays (fields by
/// position), which would let `["https://a.example"]` pass for `{"origin": ...}` and make the
/// API accept bodies its document says are wrong.
#[derive(Debug)]
pub(crate) struct JsonObject<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
}

/// Cuts `items` (fetched with one item more than `size`) to `size` and names the cursor of the
/// next page: the key of the last item kept, when there is more to come. Fetching one extra
/// item spares clients a last request that would come back empty.
pub(crate) fn paginate<T>(
    items: &mut Vec<T>,
    size: usize,
    key: impl Fn(&T) -> &str,
) -> Option<String> {
    if items.len() <= size {
        return None;
    }
    items.truncate(size);
    items.last().map(|item| key(item).to_owned())
}
