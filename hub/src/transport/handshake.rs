//! The WebSocket handshake: an upgrade request checked against the live policy, before any
//! session exists. The outcome is data: an [`Accepted`] session with its 101 response head, or a
//! [`Refusal`] whose kind carries its HTTP status, its error code and its metric label.

use std::{net::IpAddr, sync::Arc};

use actix_http::{
    header::HeaderMap,
    ws::{hash_key, verify_handshake},
    HttpMessage, Request, Uri,
};
use switchboard_admin::{
    policy::{Endpoint, NegotiationError, Policy},
    Claims, Mode, Negotiation,
};
use switchboard_protocol::validate_room;

use crate::{
    limits::{client_ip, IpRefusal},
    metrics::Handshake,
    node::{ConnectionSlot, Node},
    RoomName,
};

/// What the handshake decided for a session: its wire mode and, when tokens are in use, the
/// verified claims of its token.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The name of the endpoint that accepted the session.
    pub(crate) endpoint: Arc<str>,
    pub(crate) mode: Mode,
    /// Relay mode: the room the path named, as a room key of its own (see [`relay_room_key`]).
    pub(crate) relay: Option<RelayRoom>,
    pub(crate) claims: Option<Box<Claims>>,
    /// permessage-deflate was negotiated: what the client sends may be compressed, and data
    /// frames of at least `compress_from` bytes are sent compressed (`None`: none are, see
    /// [`crate::deflate::Agreed::compress_out`]).
    pub(crate) deflate: Option<Deflate>,
}

/// A session's permessage-deflate terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deflate {
    pub(crate) compress_from: Option<usize>,
}

/// The room of a relay session.
#[derive(Debug)]
pub(crate) struct RelayRoom {
    pub(crate) key: RoomName,
    /// Whether the token lets this member send (checked once, at the handshake).
    pub(crate) may_send: bool,
}

/// The key under which a relay endpoint's room lives in the worker's and broadcaster's tables.
///
/// Relay rooms carry raw client bytes, so they must never meet a `switchboard.v1` room of the
/// same name, nor the same-named room of another relay endpoint. A NUL byte cannot appear in a
/// protocol room name (control characters are refused), so this key cannot collide with one.
pub(crate) fn relay_room_key(endpoint: &str, room: &str) -> RoomName {
    RoomName::from(format!("\0relay\0{endpoint}\0{room}").as_str())
}

/// Whether a room key is a `switchboard.v1` room (not a relay room).
pub(crate) fn is_protocol_room(key: &str) -> bool {
    !key.starts_with('\0')
}

/// Why a handshake was refused. Each kind is its HTTP status, its `error.code` and its
/// `switchboard_handshakes_total` result, so no caller matches strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    NotFound,
    BadHandshake,
    Origin,
    Subprotocol,
    Unauthorized,
    InvalidRoom,
    Forbidden,
    Draining,
    Limit,
    /// The client IP is at its session cap or over its handshake rate.
    TooMany,
    /// The request head has more header lines, or more bytes, than a handshake needs.
    HeadTooLarge,
}

impl Refused {
    /// The HTTP status and its reason phrase.
    pub(crate) fn status(self) -> (u16, &'static str) {
        match self {
            Refused::NotFound => (404, "Not Found"),
            Refused::BadHandshake | Refused::Subprotocol | Refused::InvalidRoom => {
                (400, "Bad Request")
            }
            Refused::Unauthorized => (401, "Unauthorized"),
            Refused::Origin | Refused::Forbidden => (403, "Forbidden"),
            Refused::Draining | Refused::Limit => (503, "Service Unavailable"),
            Refused::TooMany => (429, "Too Many Requests"),
            Refused::HeadTooLarge => (431, "Request Header Fields Too Large"),
        }
    }

    /// The `error.code` of the response body.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Refused::NotFound => "not_found",
            Refused::BadHandshake => "bad_handshake",
            Refused::Origin => "origin_not_allowed",
            Refused::Subprotocol => "subprotocol_not_accepted",
            Refused::Unauthorized => "unauthorized",
            Refused::InvalidRoom => "invalid_room",
            Refused::Forbidden => "forbidden",
            Refused::Draining => "draining",
            Refused::Limit => "limit_exceeded",
            Refused::TooMany => "too_many_requests",
            Refused::HeadTooLarge => "headers_too_large",
        }
    }

    /// The handshake's result in the metrics.
    pub(crate) fn metric(self) -> Handshake {
        match self {
            Refused::NotFound => Handshake::NotFound,
            Refused::BadHandshake => Handshake::Malformed,
            Refused::Origin => Handshake::Origin,
            Refused::Subprotocol => Handshake::Subprotocol,
            Refused::Unauthorized => Handshake::Auth,
            Refused::InvalidRoom => Handshake::InvalidRoom,
            Refused::Forbidden => Handshake::Forbidden,
            Refused::Draining => Handshake::Draining,
            Refused::Limit => Handshake::Limit,
            Refused::TooMany => Handshake::IpLimit,
            Refused::HeadTooLarge => Handshake::Malformed,
        }
    }
}

/// A handshake refused with an HTTP error: its kind, a message for the client and, for a
/// subprotocol refusal, the names the endpoint accepts.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) kind: Refused,
    pub(crate) message: String,
    pub(crate) accepted: Vec<String>,
    /// Seconds after which the client may try again (`Retry-After`).
    pub(crate) retry_after: Option<u64>,
}

fn refuse(kind: Refused, message: impl Into<String>) -> Box<Refusal> {
    Box::new(Refusal {
        kind,
        message: message.into(),
        accepted: Vec::new(),
        retry_after: None,
    })
}

/// A refusal for a client IP over its limits.
fn too_many(refusal: IpRefusal) -> Box<Refusal> {
    let (message, retry) = match refusal {
        IpRefusal::Connections => ("too many sessions from this address".to_owned(), 5),
        IpRefusal::Rate(wait) => (
            "too many handshakes from this address".to_owned(),
            wait.as_secs_f64().ceil().max(1.0) as u64,
        ),
    };
    let mut refusal = refuse(Refused::TooMany, message);
    refusal.retry_after = Some(retry);
    refusal
}

/// A handshake that passed every check: the 101 response head, the connection slot and what
/// the session may do.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) head: Vec<u8>,
    pub(crate) slot: ConnectionSlot,
    pub(crate) admission: Admission,
}

/// Most header lines, and header bytes (names and values), of a handshake: a browser sends
/// about twenty lines and a few KiB, cookies included.
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Most subprotocol names a client may offer; a real client offers a handful.
const MAX_OFFERED_PROTOCOLS: usize = 32;

/// Checks an upgrade request against the live policy, in the order a client can act on: which
/// endpoint (404), a valid WebSocket handshake (400), the Origin (403), the subprotocol (400),
/// the token (401), the relay room (400/403), and finally whether the node takes sessions (503).
pub(crate) fn handshake(
    req: &Request,
    node: &Arc<Node>,
    peer: Option<IpAddr>,
) -> Result<Accepted, Box<Refusal>> {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(refuse(
            Refused::HeadTooLarge,
            format!("at most {MAX_HEADERS} header lines and {MAX_HEADER_BYTES} bytes of headers"),
        ));
    }
    let policy = node.policy.load();
    let Some((endpoint, rest)) = policy.route(req.path()) else {
        return Err(refuse(Refused::NotFound, "no such endpoint"));
    };
    // Every handshake counts against its client's rate, whatever becomes of it.
    let client = match (&node.ip_limits, peer) {
        (Some(limits), Some(peer)) => {
            let forwarded = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            let ip = client_ip(peer, forwarded, &node.config.trusted_proxies);
            limits.handshake(ip).map_err(too_many)?;
            Some((limits, ip))
        }
        _ => None,
    };
    if verify_handshake(req.head()).is_err() {
        return Err(refuse(
            Refused::BadHandshake,
            "not a valid WebSocket handshake",
        ));
    }
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Err(refuse(Refused::BadHandshake, "missing Sec-WebSocket-Key"));
    };

    check_origin(req.headers(), endpoint)?;

    let mut offered = Vec::new();
    for value in req.headers().get_all("sec-websocket-protocol") {
        let value = value
            .to_str()
            .map_err(|_| refuse(Refused::BadHandshake, "Sec-WebSocket-Protocol is not text"))?;
        offered.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
        if offered.len() > MAX_OFFERED_PROTOCOLS {
            return Err(refuse(
                Refused::BadHandshake,
                format!("more than {MAX_OFFERED_PROTOCOLS} subprotocols offered"),
            ));
        }
    }
    let negotiation = endpoint.negotiate(offered.iter().copied()).map_err(|e| {
        let message = match e {
            NegotiationError::Required => {
                format!("endpoint {:?} requires a subprotocol", endpoint.name)
            }
            NegotiationError::NoneAccepted => format!(
                "endpoint {:?} accepts none of the offered subprotocols",
                endpoint.name
            ),
        };
        Box::new(Refusal {
            kind: Refused::Subprotocol,
            message,
            accepted: endpoint
                .accepted_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            retry_after: None,
        })
    })?;
    let mode = endpoint.mode_for(&negotiation);

    let claims = check_token(req.headers(), req.uri(), &policy)?;

    let relay = match mode {
        Mode::Relay => {
            let room = percent_encoding::percent_decode_str(rest)
                .decode_utf8()
                .map_err(|_| refuse(Refused::InvalidRoom, "the room in the path is not UTF-8"))?;
            if room.is_empty() {
                return Err(refuse(
                    Refused::InvalidRoom,
                    format!(
                        "a relay path names a room: {}/<room>",
                        endpoint.path.trim_end_matches('/')
                    ),
                ));
            }
            validate_room(&room).map_err(|(_, message)| refuse(Refused::InvalidRoom, message))?;
            if claims.as_ref().is_some_and(|c| !c.may_subscribe(&room)) {
                return Err(refuse(
                    Refused::Forbidden,
                    "the token does not grant this room",
                ));
            }
            Some(RelayRoom {
                key: relay_room_key(&endpoint.name, &room),
                may_send: match &claims {
                    Some(c) => c.may_publish(&room),
                    None => true,
                },
            })
        }
        Mode::Json | Mode::Echo => None,
    };

    if node.is_draining() {
        return Err(refuse(Refused::Draining, "the node is shutting down"));
    }
    let Some(mut slot) = node.try_acquire_slot() else {
        return Err(refuse(
            Refused::Limit,
            "the node is at its connection limit",
        ));
    };
    if let Some((limits, ip)) = client {
        limits.open(ip).map_err(too_many)?;
        slot.ip = Some(ip);
    }
    // An offer that is not text, or that the hub declines, leaves the session uncompressed.
    let deflate = endpoint
        .compression
        .then(|| {
            crate::deflate::negotiate(
                req.headers()
                    .get_all("sec-websocket-extensions")
                    .filter_map(|v| v.to_str().ok()),
            )
        })
        .flatten();
    let accept = hash_key(key.as_bytes());
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    head.extend_from_slice(&accept);
    if let Negotiation::Protocol(protocol) = negotiation {
        head.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        head.extend_from_slice(protocol.name.as_bytes());
    }
    if let Some(agreed) = &deflate {
        head.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        head.extend_from_slice(agreed.response.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    Ok(Accepted {
        head,
        slot,
        admission: Admission {
            endpoint: Arc::from(endpoint.name.as_str()),
            mode,
            relay,
            claims,
            deflate: deflate.map(|agreed| Deflate {
                compress_from: agreed
                    .compress_out
                    .then_some(endpoint.compression_min_bytes),
            }),
        },
    })
}

/// The endpoint's Origin rule (403).
fn check_origin(headers: &HeaderMap, endpoint: &Endpoint) -> Result<(), Box<Refusal>> {
    let mut origins = headers.get_all("origin");
    let origin = match (origins.next(), origins.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| refuse(Refused::Origin, "the Origin header is not text"))?,
        ),
        (Some(_), Some(_)) => return Err(refuse(Refused::Origin, "more than one Origin header")),
    };
    if !endpoint.origin_allowed(origin) {
        let message = match origin {
            None => format!(
                "endpoint {:?} accepts only listed origins and the request has no Origin header",
                endpoint.name
            ),
            Some(origin) => format!(
                "origin {:?} is not allowed on endpoint {:?}",
                truncate(origin, 200),
                endpoint.name
            ),
        };
        return Err(refuse(Refused::Origin, message));
    }
    Ok(())
}

/// The token, where tokens are in use (401): its verified claims.
fn check_token(
    headers: &HeaderMap,
    uri: &Uri,
    policy: &Policy,
) -> Result<Option<Box<Claims>>, Box<Refusal>> {
    let Some(token_key) = policy.token() else {
        return Ok(None);
    };
    let token = bearer_token(headers)?
        .or_else(|| query_token(uri))
        .ok_or_else(|| refuse(Refused::Unauthorized, "missing token"))?;
    let claims = token_key
        .verify(&token, crate::unix_now())
        .map_err(|e| refuse(Refused::Unauthorized, e.to_string()))?;
    Ok(Some(Box::new(claims)))
}

/// The checks of [`handshake`] that a request without `Upgrade` can be put to: the endpoint
/// (404), the Origin (403) and the token (401). A client whose WebSocket failed before it opened
/// (a browser sees only 1006) asks the same URL over HTTP to learn whether it was refused.
/// Its answer is the endpoint that would take the WebSocket.
pub(crate) fn check_plain<'p>(
    headers: &HeaderMap,
    uri: &'p Uri,
    policy: &'p Policy,
) -> Result<&'p Endpoint, Box<Refusal>> {
    let Some((endpoint, _)) = policy.route(uri.path()) else {
        return Err(refuse(Refused::NotFound, "no such endpoint"));
    };
    // A browser sends no Origin on a same-origin GET (its WebSocket handshake always has one):
    // only a request that names its origin is held to the rule.
    if headers.contains_key("origin") {
        check_origin(headers, endpoint)?;
    }
    check_token(headers, uri, policy)?;
    Ok(endpoint)
}

/// The token of an `Authorization: Bearer` header, if the request has one.
fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, Box<Refusal>> {
    let Some(value) = headers.get("authorization") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        refuse(
            Refused::Unauthorized,
            "the Authorization header is not text",
        )
    })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(refuse(
            Refused::Unauthorized,
            "Authorization is not a Bearer token",
        )),
    }
}

/// The `token` query parameter: browsers cannot set headers on a WebSocket handshake.
fn query_token(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|t| t.into_owned())
    })
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
