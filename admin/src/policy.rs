//! The handshake policy: which endpoints exist, who may connect to them, and in which mode.
//!
//! The hub consults a [`Policy`] once per WebSocket upgrade and an admin API replaces it while
//! sessions are running, so a policy is immutable once built (every edit builds and validates a
//! new one) and lives in a [`PolicyStore`] that readers load without locking. Sessions already
//! open keep the terms they were admitted under; a change applies from the next handshake.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use switchboard_protocol::PROTOCOL;
use utoipa::ToSchema;

use crate::origin::{OriginError, OriginRule};
use crate::token::TokenKey;

/// The name of the endpoint every policy starts from.
pub const DEFAULT_ENDPOINT: &str = "default";
/// The path of the built-in endpoint.
pub const DEFAULT_PATH: &str = "/ws";
/// The longest endpoint name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// The longest endpoint path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// The most endpoints one policy may hold: routing scans them on every handshake.
pub const MAX_ENDPOINTS: usize = 256;
/// The most origin rules one endpoint may hold: the origin check scans them on every handshake.
pub const MAX_ORIGINS: usize = 1024;
/// The most subprotocols one endpoint may accept.
pub const MAX_SUBPROTOCOLS: usize = 64;
/// The longest subprotocol name, in bytes.
pub const MAX_TOKEN_NAME_BYTES: usize = 128;

/// What a session does with the messages its client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The `switchboard.v1` protocol: JSON frames to subscribe, publish and so on.
    Json,
    /// The rest of the request path names a room, and every message a member sends goes
    /// verbatim to the room's other members; for clients that cannot speak `switchboard.v1`.
    Relay,
    /// Every message goes back to its sender; for load balancers' health checks and for
    /// measuring the hub itself.
    Echo,
}

/// A mode name that is not one of `json`, `relay`, `echo`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?} (expected json, relay or echo)")]
pub struct UnknownMode(pub String);

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Json, Mode::Relay, Mode::Echo];

    /// The name used in config files and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Relay => "relay",
            Mode::Echo => "echo",
        }
    }
}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_owned()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Sec-WebSocket-Protocol` name an endpoint accepts, and the mode a session that picked it
/// runs in. Letting the subprotocol choose the mode allows one path to serve both
/// `switchboard.v1` clients and plain relay clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Subprotocol {
    pub name: String,
    pub mode: Mode,
}

/// Messages shorter than this go out uncompressed by default: a deflated JSON message of a few
/// dozen bytes is hardly shorter, and its frame header is the same.
pub const DEFAULT_COMPRESSION_MIN_BYTES: usize = 256;

/// One WebSocket endpoint: a path prefix and the terms for connecting to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Endpoint {
    /// How the admin API and the logs refer to the endpoint.
    pub name: String,
    /// The path prefix the endpoint serves; see [`Policy::route`].
    pub path: String,
    /// The mode of a session that negotiated no subprotocol.
    pub mode: Mode,
    /// Pages allowed to connect; empty allows every client, browser or not.
    #[schema(value_type = Vec<String>, example = json!(["https://app.example.com"]))]
    pub origins: Vec<OriginRule>,
    /// Accepted subprotocols, in the endpoint's order of preference for listings only: the
    /// client's order decides (see [`Endpoint::negotiate`]).
    pub subprotocols: Vec<Subprotocol>,
    /// Refuse clients that offer no subprotocol, instead of running them in `mode`.
    pub require_subprotocol: bool,
    /// Accept permessage-deflate (RFC 7692) when a client offers it.
    pub compression: bool,
    /// Messages shorter than this many bytes go out uncompressed even to a client that
    /// negotiated compression: below it, deflate saves too little to be worth its CPU.
    pub compression_min_bytes: usize,
}

/// An endpoint as written in a config file (`[[endpoints]]`): every field but the name may be
/// left out. See [`Policy::from_specs`] for what an unset field becomes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    pub path: Option<String>,
    pub mode: Option<Mode>,
    pub origins: Option<Vec<String>>,
    pub subprotocols: Option<Vec<SubprotocolSpec>>,
    pub require_subprotocol: Option<bool>,
    pub compression: Option<bool>,
    pub compression_min_bytes: Option<usize>,
}

/// A subprotocol as written in a config file: a bare name, which takes the endpoint's mode, or
/// `{ name = "...", mode = "..." }`.
///
/// Deserialized by hand rather than with `#[serde(untagged)]`, which would answer any mistake
/// with "did not match any variant" and hide the actual problem (an unknown mode, a misspelt
/// field) from whoever edits the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubprotocolSpec {
    Name(String),
    Full { name: String, mode: Option<Mode> },
}

impl SubprotocolSpec {
    pub fn name(&self) -> &str {
        match self {
            SubprotocolSpec::Name(name) | SubprotocolSpec::Full { name, .. } => name,
        }
    }

    fn resolve(&self, endpoint_mode: Mode) -> Subprotocol {
        match self {
            SubprotocolSpec::Name(name) => Subprotocol {
                name: name.clone(),
                mode: endpoint_mode,
            },
            SubprotocolSpec::Full { name, mode } => Subprotocol {
                name: name.clone(),
                mode: mode.unwrap_or(endpoint_mode),
            },
        }
    }
}

impl<'de> Deserialize<'de> for SubprotocolSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;

        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = SubprotocolSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a subprotocol name or a table { name, mode }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SubprotocolSpec::Name(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name: Option<String> = None;
                let mut mode: Option<Mode> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" if name.is_some() => return Err(de::Error::duplicate_field("name")),
                        "name" => name = Some(map.next_value()?),
                        "mode" if mode.is_some() => return Err(de::Error::duplicate_field("mode")),
                        "mode" => mode = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["name", "mode"])),
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                Ok(SubprotocolSpec::Full { name, mode })
            }
        }

        deserializer.deserialize_any(SpecVisitor)
    }
}

/// Why a policy (or an edit to one) was refused. Each message names the endpoint and the field
/// at fault, since it is shown to whoever edited the config or called the admin API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("endpoint name {name:?} {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("endpoint {name:?} is defined twice")]
    DuplicateEndpoint { name: String },
    #[error("no endpoint named {name:?}")]
    NotFound { name: String },
    #[error("endpoint {endpoint:?}: path is required")]
    MissingPath { endpoint: String },
    #[error("endpoint {endpoint:?}: path {path:?} {reason}")]
    BadPath {
        endpoint: String,
        path: String,
        reason: &'static str,
    },
    #[error(
        "endpoint {endpoint:?}: path {path:?} clashes with endpoint {other:?} ({other_path:?})"
    )]
    DuplicatePath {
        endpoint: String,
        path: String,
        other: String,
        other_path: String,
    },
    #[error("endpoint {endpoint:?}: {error}")]
    BadOrigin {
        endpoint: String,
        error: OriginError,
    },
    #[error("endpoint {endpoint:?}: subprotocol {name:?} is not an HTTP token (1 to 128 letters, digits or !#$%&'*+-.^_`|~)")]
    BadSubprotocol { endpoint: String, name: String },
    #[error("endpoint {endpoint:?}: subprotocol {name:?} is listed twice")]
    DuplicateSubprotocol { endpoint: String, name: String },
    #[error("endpoint {endpoint:?}: {count} origins, more than the {MAX_ORIGINS} allowed")]
    TooManyOrigins { endpoint: String, count: usize },
    #[error(
        "endpoint {endpoint:?}: {count} subprotocols, more than the {MAX_SUBPROTOCOLS} allowed"
    )]
    TooManySubprotocols { endpoint: String, count: usize },
    #[error("{count} endpoints, more than the {MAX_ENDPOINTS} allowed")]
    TooManyEndpoints { count: usize },
}

/// The outcome of subprotocol negotiation that lets the handshake proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation<'a> {
    /// Answer with this protocol in `Sec-WebSocket-Protocol`.
    Protocol(&'a Subprotocol),
    /// The client offered nothing; answer without `Sec-WebSocket-Protocol`.
    NoneOffered,
}

/// Why subprotocol negotiation refused the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("this endpoint requires a subprotocol (Sec-WebSocket-Protocol)")]
    Required,
    #[error("none of the offered subprotocols is accepted by this endpoint")]
    NoneAccepted,
}

impl Endpoint {
    /// The endpoint a hub serves with no configuration: `switchboard.v1` on `/ws`, open to
    /// every origin.
    pub fn builtin() -> Endpoint {
        Endpoint {
            name: DEFAULT_ENDPOINT.to_owned(),
            path: DEFAULT_PATH.to_owned(),
            mode: Mode::Json,
            origins: Vec::new(),
            subprotocols: vec![Subprotocol {
                name: PROTOCOL.to_owned(),
                mode: Mode::Json,
            }],
            require_subprotocol: false,
            compression: false,
            compression_min_bytes: DEFAULT_COMPRESSION_MIN_BYTES,
        }
    }

    /// Picks the subprotocol for a handshake from the names the client `offered`, in the
    /// client's order (the caller splits `Sec-WebSocket-Protocol` on `,`).
    ///
    /// The first offered name the endpoint accepts wins: clients list protocols in their order
    /// of preference, and honouring it lets a client move to a newer protocol without the
    /// server changing anything. Names are compared exactly; an offered name that is not a valid
    /// token simply matches nothing. Empty names (from `a,,b` or a blank header) are ignored.
    pub fn negotiate<'a, I: IntoIterator<Item = &'a str>>(
        &self,
        offered: I,
    ) -> Result<Negotiation<'_>, NegotiationError> {
        let mut any_offered = false;
        for name in offered {
            let name = name.trim_matches([' ', '\t']);
            if name.is_empty() {
                continue;
            }
            any_offered = true;
            if let Some(protocol) = self.subprotocols.iter().find(|p| p.name == name) {
                return Ok(Negotiation::Protocol(protocol));
            }
        }
        match (any_offered, self.require_subprotocol) {
            (true, _) => Err(NegotiationError::NoneAccepted),
            (false, true) => Err(NegotiationError::Required),
            (false, false) => Ok(Negotiation::NoneOffered),
        }
    }

    /// The mode a session runs in after `negotiation`.
    pub fn mode_for(&self, negotiation: &Negotiation<'_>) -> Mode {
        match negotiation {
            Negotiation::Protocol(protocol) => protocol.mode,
            Negotiation::NoneOffered => self.mode,
        }
    }

    /// True when a handshake carrying `origin` (the `Origin` header, if any) may connect.
    ///
    /// With no rules the endpoint is open to everyone, including non-browser clients that send
    /// no `Origin`. With rules, a missing header is refused: the rules are there to restrict who
    /// connects, and a handshake without the header cannot show that it comes from an allowed
    /// page, so the check fails closed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        if self.origins.is_empty() {
            return true;
        }
        match origin {
            Some(origin) => self.origins.iter().any(|rule| rule.matches(origin)),
            None => false,
        }
    }

    /// The subprotocol names the endpoint accepts, for error responses and listings.
    pub fn accepted_names(&self) -> Vec<&str> {
        self.subprotocols.iter().map(|p| p.name.as_str()).collect()
    }

    fn validate(&self) -> Result<(), PolicyError> {
        validate_name(&self.name)?;
        if let Err(reason) = validate_path(&self.path) {
            return Err(PolicyError::BadPath {
                endpoint: self.name.clone(),
                path: self.path.clone(),
                reason,
            });
        }
        if self.origins.len() > MAX_ORIGINS {
            return Err(PolicyError::TooManyOrigins {
                endpoint: self.name.clone(),
                count: self.origins.len(),
            });
        }
        if self.subprotocols.len() > MAX_SUBPROTOCOLS {
            return Err(PolicyError::TooManySubprotocols {
                endpoint: self.name.clone(),
                count: self.subprotocols.len(),
            });
        }
        let mut seen = HashSet::new();
        for protocol in &self.subprotocols {
            if !is_http_token(&protocol.name) {
                return Err(PolicyError::BadSubprotocol {
                    endpoint: self.name.clone(),
                    name: protocol.name.clone(),
                });
            }
            if !seen.insert(protocol.name.as_str()) {
                return Err(PolicyError::DuplicateSubprotocol {
                    endpoint: self.name.clone(),
                    name: protocol.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// True when this endpoint serves `path` (see [`Policy::route`]).
    fn serves(&self, path: &str) -> bool {
        match path.strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || self.path.ends_with('/') || rest.starts_with('/'),
            None => false,
        }
    }
}

/// True for an RFC 7230 token of 1 to 128 bytes: the grammar of a `Sec-WebSocket-Protocol`
/// name, so that an accepted name can always be sent back in the response header.
pub fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN_NAME_BYTES
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn validate_name(name: &str) -> Result<(), PolicyError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "is longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        "may only contain A-Z a-z 0-9 _ . -"
    } else {
        return Ok(());
    };
    Err(PolicyError::BadName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks an endpoint path against RFC 3986's path grammar, so that the path can be matched
/// against request paths byte for byte: a request can only spell such a path one way, up to
/// percent-encoding.
fn validate_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with /");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("is longer than 256 bytes");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'?' | b'#' => return Err("must not contain ? or # (no query or fragment)"),
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err("has a % not followed by two hex digits");
                }
                i += 3;
                continue;
            }
            _ if b.is_ascii_whitespace() => return Err("must not contain whitespace"),
            _ if b.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b':' | b'@' | b'/' => {}
            _ => return Err("contains a character not allowed in a URL path"),
        }
        i += 1;
    }
    // Clients and proxies resolve dot segments before the request reaches the hub, so an
    // endpoint path containing one could never be reached.
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("must not contain . or .. segments");
    }
    Ok(())
}

/// Two paths that differ only by trailing slashes serve the same requests.
fn path_key(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// Every endpoint, and the key that verifies access tokens (none: tokens are not required).
#[derive(Clone, Debug)]
pub struct Policy {
    endpoints: Vec<Endpoint>,
    token: Option<TokenKey>,
}

impl Default for Policy {
    /// The built-in endpoint alone, without tokens: what a hub serves with no configuration.
    fn default() -> Policy {
        Policy {
            endpoints: vec![Endpoint::builtin()],
            token: None,
        }
    }
}

impl Policy {
    /// Validates `endpoints` and builds a policy from them, as they are: nothing is added.
    pub fn new(endpoints: Vec<Endpoint>, token: Option<TokenKey>) -> Result<Policy, PolicyError> {
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(PolicyError::TooManyEndpoints {
                count: endpoints.len(),
            });
        }
        for endpoint in &endpoints {
            endpoint.validate()?;
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            for earlier in &endpoints[..i] {
                if earlier.name == endpoint.name {
                    return Err(PolicyError::DuplicateEndpoint {
                        name: endpoint.name.clone(),
                    });
                }
                if path_key(&earlier.path) == path_key(&endpoint.path) {
                    return Err(PolicyError::DuplicatePath {
                        endpoint: endpoint.name.clone(),
                        path: endpoint.path.clone(),
                        other: earlier.name.clone(),
                        other_path: earlier.path.clone(),
                    });
                }
            }
        }
        Ok(Policy { endpoints, token })
    }

    /// Builds a policy from config-file endpoints, merged by name onto the built-in `default`
    /// endpoint (see [`Endpoint::builtin`]).
    ///
    /// A spec named `default` changes only the fields it sets, so a config that merely adds
    /// origins keeps `/ws` and `switchboard.v1`. Any other spec creates an endpoint that must
    /// name its `path`; its other fields default to mode `json`, no origin rules (open to all),
    /// no subprotocols and `require_subprotocol = false`. A bare subprotocol name takes the
    /// endpoint's mode, as resolved after the merge.
    pub fn from_specs(
        specs: &[EndpointSpec],
        token: Option<TokenKey>,
    ) -> Result<Policy, PolicyError> {
        let mut endpoints = vec![Endpoint::builtin()];
        let mut seen = HashSet::new();
        for spec in specs {
            if !seen.insert(spec.name.as_str()) {
                return Err(PolicyError::DuplicateEndpoint {
                    name: spec.name.clone(),
                });
            }
            let base = if spec.name == DEFAULT_ENDPOINT {
                // The built-in is always first and `seen` guarantees it is merged at most once.
                &mut endpoints[0]
            } else {
                let Some(path) = &spec.path else {
                    return Err(PolicyError::MissingPath {
                        endpoint: spec.name.clone(),
                    });
                };
                endpoints.push(Endpoint {
                    name: spec.name.clone(),
                    path: path.clone(),
                    mode: Mode::Json,
                    origins: Vec::new(),
                    subprotocols: Vec::new(),
                    require_subprotocol: false,
                    compression: false,
                    compression_min_bytes: DEFAULT_COMPRESSION_MIN_BYTES,
                });
                let last = endpoints.len() - 1;
                &mut endpoints[last]
            };
            apply_spec(base, spec)?;
        }
        Policy::new(endpoints, token)
    }

    /// The endpoint serving a request for `path` (without its query string), and the rest of
    /// the path after the endpoint's, without its leading `/`: the room, for a relay endpoint.
    ///
    /// The endpoint with the longest matching path wins, and paths match only at a segment
    /// boundary: `/ws` serves `/ws` and `/ws/x` but not `/wsx`, so adding an endpoint can never
    /// capture requests meant for a sibling whose name merely shares a prefix.
    pub fn route<'p>(&'p self, path: &'p str) -> Option<(&'p Endpoint, &'p str)> {
        let endpoint = self
            .endpoints
            .iter()
            .filter(|e| e.serves(path))
            .max_by_key(|e| e.path.len())?;
        let rest = &path[endpoint.path.len()..];
        Some((endpoint, rest.strip_prefix('/').unwrap_or(rest)))
    }

    /// The endpoint called `name`.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The key access tokens must verify against; `None` lets every client in without one.
    pub fn token(&self) -> Option<&TokenKey> {
        self.token.as_ref()
    }

    /// A copy of this policy with the endpoint named like `endpoint` replaced by it.
    pub fn with_endpoint_replaced(&self, endpoint: Endpoint) -> Result<Policy, PolicyError> {
        let Some(at) = self.endpoints.iter().position(|e| e.name == endpoint.name) else {
            return Err(PolicyError::NotFound {
                name: endpoint.name,
            });
        };
        let mut endpoints = self.endpoints.clone();
        endpoints[at] = endpoint;
        Policy::new(endpoints, self.token.clone())
    }

    /// A copy of this policy with `endpoint` added; its name must be new.
    pub fn with_endpoint_added(&self, endpoint: Endpoint) -> Result<Policy, PolicyError> {
        if self.endpoint(&endpoint.name).is_some() {
            return Err(PolicyError::DuplicateEndpoint {
                name: endpoint.name,
            });
        }
        let mut endpoints = self.endpoints.clone();
        endpoints.push(endpoint);
        Policy::new(endpoints, self.token.clone())
    }

    /// A copy of this policy without the endpoint called `name`.
    pub fn with_endpoint_removed(&self, name: &str) -> Result<Policy, PolicyError> {
        if self.endpoint(name).is_none() {
            return Err(PolicyError::NotFound {
                name: name.to_owned(),
            });
        }
        let endpoints = self
            .endpoints
            .iter()
            .filter(|e| e.name != name)
            .cloned()
            .collect();
        Policy::new(endpoints, self.token.clone())
    }

    /// A copy of this policy verifying tokens with `token` (or not requiring them, for `None`).
    pub fn with_token(&self, token: Option<TokenKey>) -> Policy {
        Policy {
            endpoints: self.endpoints.clone(),
            token,
        }
    }
}

/// Overwrites the fields `spec` sets.
fn apply_spec(endpoint: &mut Endpoint, spec: &EndpointSpec) -> Result<(), PolicyError> {
    if let Some(path) = &spec.path {
        endpoint.path.clone_from(path);
    }
    if let Some(mode) = spec.mode {
        endpoint.mode = mode;
    }
    if let Some(origins) = &spec.origins {
        if origins.len() > MAX_ORIGINS {
            return Err(PolicyError::TooManyOrigins {
                endpoint: spec.name.clone(),
                count: origins.len(),
            });
        }
        endpoint.origins = origins
            .iter()
            .map(|text| {
                text.parse().map_err(|error| PolicyError::BadOrigin {
                    endpoint: spec.name.clone(),
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(subprotocols) = &spec.subprotocols {
        endpoint.subprotocols = subprotocols
            .iter()
            .map(|p| p.resolve(endpoint.mode))
            .collect();
    }
    if let Some(required) = spec.require_subprotocol {
        endpoint.require_subprotocol = required;
    }
    if let Some(on) = spec.compression {
        endpoint.compression = on;
    }
    if let Some(min) = spec.compression_min_bytes {
        endpoint.compression_min_bytes = min;
    }
    Ok(())
}

/// The live policy: read on every handshake, replaced by the admin API.
///
/// Reads are lock-free and never wait for a writer, so a burst of handshakes is not slowed by an
/// admin edit, and an edit never sees a half-updated policy.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policy>,
}

impl Default for PolicyStore {
    fn default() -> PolicyStore {
        PolicyStore::new(Policy::default())
    }
}

impl PolicyStore {
    pub fn new(policy: Policy) -> PolicyStore {
        PolicyStore {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The current policy, for the duration of one handshake. Cheaper than
    /// [`snapshot`](Self::snapshot) but meant to be dropped soon: hold an `Arc` instead across
    /// anything long-lived.
    pub fn load(&self) -> Guard<Arc<Policy>> {
        self.current.load()
    }

    /// The current policy, to keep.
    pub fn snapshot(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Installs `policy` for every later handshake, whatever was there before.
    pub fn replace(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }

    /// Installs `f(current)`, retrying with the newer policy if another edit landed in between,
    /// so concurrent edits compose instead of the last one silently undoing the others. `f` may
    /// therefore run more than once, and should have no side effects. An error from `f` leaves
    /// the policy unchanged.
    pub fn update<F: FnMut(&Policy) -> Result<Policy, PolicyError>>(
        &self,
        f: F,
    ) -> Result<Arc<Policy>, PolicyError> {
        self.try_update(f)
    }

    /// [`update`](Self::update) for edits that can be refused for reasons of their own (a
    /// duplicate, a missing item) besides the policy's validation, so that the refusal reaches
    /// the caller as it was decided, from the same attempt that saw the policy.
    pub fn try_update<E, F>(&self, mut f: F) -> Result<Arc<Policy>, E>
    where
        F: FnMut(&Policy) -> Result<Policy, E>,
    {
        let mut current = self.current.load_full();
        loop {
            let next = Arc::new(f(&current)?);
            let previous = self.current.compare_and_swap(&current, Arc::clone(&next));
            if Arc::ptr_eq(&previous, &current) {
                return Ok(next);
            }
            current = Guard::into_inner(previous);
        }
    }
}
