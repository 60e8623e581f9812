//! Access tokens: HS256 JSON Web Tokens naming the rooms a session may use.
//!
//! Only HS256 is accepted, so verification is written directly on HMAC-SHA256 instead of a JWT
//! library: a general one brings RSA and EC code the hub never runs, and every algorithm it can
//! negotiate is one more way to be talked out of checking the signature. The token is the
//! client's bearer credential and arrives from the network, so every step below refuses rather
//! than guesses, and the signature is checked before the claims are even decoded.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The longest token accepted, in bytes. Tokens travel in a query string or a header, where
/// anything longer is a mistake or an attack, and bounding it bounds the work done before the
/// signature check.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The longest `sub` claim accepted, in bytes: it ends up in logs and admin listings.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// The most room patterns accepted in each of `subscribe` and `publish`: every subscribe and
/// publish scans them.
pub const MAX_PATTERNS: usize = 256;

/// The only JOSE header [`TokenKey::sign`] writes, already base64url-encoded:
/// `{"alg":"HS256","typ":"JWT"}`.
const SIGNED_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

type HmacSha256 = Hmac<Sha256>;

/// The shared secret tokens are signed with.
///
/// Any non-empty secret is accepted so that existing deployments keep their keys, but HS256 is
/// only as strong as its secret: use 32 or more random bytes.
#[derive(Clone)]
pub struct TokenKey {
    /// Keyed once here; each verification clones the prepared state instead of re-deriving the
    /// key pads.
    mac: HmacSha256,
}

/// Why a token was refused. The text is short and safe to put in an HTTP 401 body: it never
/// echoes the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported token algorithm (only HS256 is accepted)")]
    UnsupportedAlgorithm,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token secret is empty")]
    EmptySecret,
}

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Who the token was issued to: the session's user. Other members see it as `user` in the
    /// session's messages (and in `welcome`), admin listings show it, and a `refresh` must carry
    /// the same `sub`.
    pub sub: Option<String>,
    /// Expiry, in seconds since the Unix epoch. A session outlives its handshake, so the hub
    /// keeps this to close the session when the token runs out.
    pub exp: u64,
    /// Rooms the session may subscribe to. Empty grants nothing.
    pub subscribe: Vec<RoomPattern>,
    /// Rooms the session may publish to. Empty grants nothing.
    pub publish: Vec<RoomPattern>,
}

/// A room name, or a room-name prefix when it ends with `*`.
///
/// Only a trailing `*` is special, so a pattern can name any room literally (including one with
/// a `*` inside) and matching stays a prefix or equality test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPattern {
    text: String,
}

impl TokenKey {
    /// Prepares `secret` for signing and verifying. An empty secret is refused: HMAC would
    /// accept it and every token forged with it would verify.
    pub fn new(secret: &[u8]) -> Result<TokenKey, TokenError> {
        if secret.is_empty() {
            return Err(TokenError::EmptySecret);
        }
        // HMAC takes keys of any length; the error arm exists only because the trait allows
        // other MACs to refuse some.
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::EmptySecret)?;
        Ok(TokenKey { mac })
    }

    /// Checks `token` and returns what it grants at `now_unix_secs`.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "a token must have three dot-separated parts",
            ));
        };

        let header = decode_json_object(
            header_b64,
            "header is not unpadded base64url",
            "header is not a JSON object",
        )?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        // A critical extension is one the issuer insists be understood; none is.
        if header.contains_key("crit") {
            return Err(TokenError::Malformed("unsupported critical header"));
        }

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed("signature is not unpadded base64url"))?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..signed_len]);
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;

        let claims = decode_json_object(
            payload_b64,
            "payload is not unpadded base64url",
            "payload is not a JSON object",
        )?;
        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(TokenError::Malformed("exp claim is missing")),
            Some(v) => timestamp(v, "exp claim must be a non-negative number")?,
        };
        if exp <= now_unix_secs {
            return Err(TokenError::Expired);
        }
        if let Some(v) = present(&claims, "nbf") {
            if timestamp(v, "nbf claim must be a non-negative number")? > now_unix_secs {
                return Err(TokenError::NotYetValid);
            }
        }
        let sub = match present(&claims, "sub") {
            None => None,
            Some(Value::String(s)) if s.len() <= MAX_SUBJECT_BYTES => Some(s.clone()),
            Some(Value::String(_)) => {
                return Err(TokenError::Malformed("sub claim is longer than 256 bytes"))
            }
            Some(_) => return Err(TokenError::Malformed("sub claim must be a string")),
        };
        Ok(Claims {
            sub,
            exp,
            subscribe: patterns(&claims, &SUBSCRIBE)?,
            publish: patterns(&claims, &PUBLISH)?,
        })
    }

    /// Signs `claims_json` as an HS256 token, for tests and for tools that mint tokens from the
    /// same secret as the hub.
    pub fn sign(&self, claims_json: &Value) -> String {
        let payload = URL_SAFE_NO_PAD.encode(claims_json.to_string());
        let mut token = format!("{SIGNED_HEADER}.{payload}");
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        token.push('.');
        token.push_str(&signature);
        token
    }
}

/// The secret must never reach a log line through `{:?}` on a policy.
impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl Claims {
    /// True when the token grants subscribing to `room`.
    pub fn may_subscribe(&self, room: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(room))
    }

    /// True when the token grants publishing to `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        self.publish.iter().any(|p| p.matches(room))
    }
}

impl RoomPattern {
    pub fn new(text: impl Into<String>) -> RoomPattern {
        RoomPattern { text: text.into() }
    }

    /// True when `room` is the pattern's room or, for a pattern ending in `*`, starts with the
    /// text before the `*`.
    pub fn matches(&self, room: &str) -> bool {
        match self.text.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => room == self.text,
        }
    }

    /// The pattern as written, `*` included.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<&str> for RoomPattern {
    fn from(text: &str) -> RoomPattern {
        RoomPattern::new(text)
    }
}

impl From<String> for RoomPattern {
    fn from(text: String) -> RoomPattern {
        RoomPattern::new(text)
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for RoomPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Decodes one base64url part holding a JSON object; the messages say which part failed.
fn decode_json_object(
    part: &str,
    not_base64: &'static str,
    not_object: &'static str,
) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(not_base64))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(not_object)),
    }
}

/// An optional claim; `null` counts as absent, as issuers commonly write unset fields that way.
fn present<'m>(claims: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    claims.get(name).filter(|v| !v.is_null())
}

/// A NumericDate: integer seconds, or a finite non-negative fraction truncated to seconds (some
/// issuers write floats, and the JWT spec allows them).
fn timestamp(value: &Value, problem: &'static str) -> Result<u64, TokenError> {
    let Value::Number(n) = value else {
        return Err(TokenError::Malformed(problem));
    };
    if let Some(secs) = n.as_u64() {
        return Ok(secs);
    }
    match n.as_f64() {
        // `as` saturates, so a huge value means "far future", not a wrapped small one.
        Some(f) if f.is_finite() && f >= 0.0 => Ok(f as u64),
        _ => Err(TokenError::Malformed(problem)),
    }
}

/// A claim holding room patterns, with the reasons given when it is wrong.
struct PatternClaim {
    name: &'static str,
    not_array: &'static str,
    too_many: &'static str,
    not_string: &'static str,
}

const SUBSCRIBE: PatternClaim = PatternClaim {
    name: "subscribe",
    not_array: "subscribe claim must be an array of strings",
    too_many: "subscribe claim has more than 256 patterns",
    not_string: "subscribe claim must contain only strings",
};

const PUBLISH: PatternClaim = PatternClaim {
    name: "publish",
    not_array: "publish claim must be an array of strings",
    too_many: "publish claim has more than 256 patterns",
    not_string: "publish claim must contain only strings",
};

fn patterns(
    claims: &Map<String, Value>,
    claim: &PatternClaim,
) -> Result<Vec<RoomPattern>, TokenError> {
    let items = match present(claims, claim.name) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(TokenError::Malformed(claim.not_array)),
    };
    if items.len() > MAX_PATTERNS {
        return Err(TokenError::Malformed(claim.too_many));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(RoomPattern::new(s.as_str())),
            _ => Err(TokenError::Malformed(claim.not_string)),
        })
        .collect()
}
