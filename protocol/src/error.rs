use std::{borrow::Cow, fmt};

/// The code of an `error` frame. Clients branch on the code, never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, not an object, or a field missing or of the wrong type.
    BadRequest,
    /// `op` names no operation of this protocol.
    UnknownOp,
    /// A room name that breaks the naming rule (see [`crate::validate_room`]).
    InvalidRoom,
    /// `unsubscribe` for a room the session is not subscribed to.
    NotSubscribed,
    /// A publish whose outgoing `message` frame would exceed the hub's message limit.
    TooLarge,
    /// A frame type this protocol does not use (binary frames).
    Unsupported,
    /// A per-session limit was reached (subscriptions).
    LimitExceeded,
    /// The session's token does not grant this room (subscribe or publish).
    Forbidden,
    /// A `refresh` carried a token the hub does not accept (bad signature, expired, another
    /// user's, or tokens are not in use).
    InvalidToken,
    /// The hub failed; the request may be retried.
    Internal,
    /// What the request needs is out of reach for now (in cluster mode: Redis, for a `cluster`
    /// publish); nothing was done, and the request may be retried.
    Unavailable,
    /// The session sends faster than its rate limit allows: this frame was not handled. A
    /// session that stays far over it is closed with 1008.
    RateLimited,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::InvalidRoom,
        ErrorCode::NotSubscribed,
        ErrorCode::TooLarge,
        ErrorCode::Unsupported,
        ErrorCode::LimitExceeded,
        ErrorCode::Forbidden,
        ErrorCode::InvalidToken,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::RateLimited,
    ];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client frame could not be decoded, with the request `id` when one could be read so the
/// error frame can carry it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The request id, when the frame carried a valid one.
    pub id: Option<u64>,
    /// What went wrong, as a protocol error code.
    pub code: ErrorCode,
    /// Human-readable detail. Not part of the contract.
    pub message: Cow<'static, str>,
}

impl DecodeError {
    pub(crate) fn new(
        id: Option<u64>,
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        DecodeError {
            id,
            code,
            message: message.into(),
        }
    }
}
