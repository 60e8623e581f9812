//! WebSocket close codes used by the hub.
//!
//! Codes below 4000 are RFC 6455's. Switchboard's own codes follow the convention that
//! 4000-4499 mean "you may reconnect" and 4500-4999 mean "do not reconnect as you are".
//! Close reasons are kept short: a close frame carries at most 123 bytes of reason.

/// Normal closure: the peer asked to close.
pub const NORMAL: u16 = 1000;
/// The server is shutting down (or restarting); reconnect, possibly elsewhere.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the WebSocket protocol (reserved bits, unmasked frame, bad opcode, ...).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A message the session's policy does not allow (a relay member without publish rights).
pub const POLICY_VIOLATION: u16 = 1008;
/// A text message was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A frame or reassembled message exceeded the hub's message limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The hub failed.
pub const INTERNAL_ERROR: u16 = 1011;

/// The session could not keep up: its outgoing queue was full. Reconnect and resubscribe.
pub const SLOW_CONSUMER: u16 = 4000;
/// An operator closed the session.
pub const KICKED: u16 = 4001;
/// The session's token expired without a refresh.
pub const TOKEN_EXPIRED: u16 = 4002;
/// Nothing was heard from the client for twice the heartbeat interval.
pub const HEARTBEAT_TIMEOUT: u16 = 4003;

/// The reason text sent with [`SLOW_CONSUMER`].
pub const SLOW_CONSUMER_REASON: &str = "slow consumer";
/// The reason text sent with [`GOING_AWAY`] on shutdown.
pub const GOING_AWAY_REASON: &str = "going away";
/// The reason text sent with [`KICKED`].
pub const KICKED_REASON: &str = "kicked";
/// The reason text sent with [`TOKEN_EXPIRED`].
pub const TOKEN_EXPIRED_REASON: &str = "token expired";
/// The reason text sent with [`POLICY_VIOLATION`] to a session that stayed far over its rate
/// limit.
pub const RATE_LIMIT_REASON: &str = "rate limit exceeded";
/// The reason text sent with [`HEARTBEAT_TIMEOUT`].
pub const HEARTBEAT_TIMEOUT_REASON: &str = "heartbeat timeout";
