//! Switchboard's handshake policy: who may open a WebSocket to the hub, on which path, and in
//! which wire mode.
//!
//! The hub decides all of that at the HTTP upgrade, before a session exists, by asking the
//! current [`Policy`]: [`Policy::route`] finds the [`Endpoint`] for the request path,
//! [`Endpoint::origin_allowed`] checks the `Origin` header, [`Endpoint::negotiate`] picks the
//! subprotocol and with it the [`Mode`], and, when the policy holds a [`TokenKey`],
//! [`TokenKey::verify`] turns the client's token into the [`Claims`] its session is held to.
//!
//! The policy is data, not code, so that an admin API can change it while the hub runs: a
//! [`PolicyStore`] hands out the current policy without locking and swaps in a new, fully
//! validated one atomically. Nothing here does I/O or knows about HTTP servers; everything that
//! reads input from a remote peer or a config file answers with an error instead of panicking.
//!
//! # Layout
//! - `policy.rs`: [`Policy`], [`Endpoint`], [`Mode`], subprotocol negotiation, the config-file
//!   specs ([`EndpointSpec`], [`SubprotocolSpec`]), validation ([`PolicyError`]) and the live
//!   [`PolicyStore`].
//! - `origin.rs`: [`OriginRule`], the grammar of allowed origins and how `Origin` headers are
//!   matched against them.
//! - `token.rs`: [`TokenKey`], HS256 token verification, [`Claims`] and [`RoomPattern`].

pub mod origin;
pub mod policy;
pub mod token;

pub use origin::{OriginError, OriginRule};
pub use policy::{
    is_http_token, Endpoint, EndpointSpec, Mode, Negotiation, NegotiationError, Policy,
    PolicyError, PolicyStore, Subprotocol, SubprotocolSpec, UnknownMode,
};
pub use token::{Claims, RoomPattern, TokenError, TokenKey, MAX_TOKEN_BYTES};

#[cfg(test)]
mod tests;
