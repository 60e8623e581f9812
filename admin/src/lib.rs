//! Switchboard's handshake policy: who may open a WebSocket to the hub, on which path, and in
//! which wire mode.
//!
//! The hub decides all of that at the HTTP upgrade, before a session exists, by asking the
//! current [`Policy`]: [`Policy::route`] finds the [`Endpoint`] for the request path,
//! [`Endpoint::origin_allowed`] checks the `Origin` header, [`Endpoint::negotiate`] picks the
//! subprotocol and with it the [`Mode`], and, when the policy holds a [`TokenKey`],
//! [`TokenKey::verify`] turns the client's token into the [`Claims`] its session is held to.
//!
//! The policy is data, not code, so that the admin API can change it while the hub runs: a
//! [`PolicyStore`] hands out the current policy without locking and swaps in a new, fully
//! validated one atomically. The policy types do no I/O; the admin API ([`configure`]) is
//! mounted by the hub on its HTTP server and reaches the hub's rooms and sessions only through
//! the [`Hub`] trait, and [`StateFile`] keeps its edits on disk. Everything that reads input
//! from a remote peer, a config file or the state file answers with an error instead of
//! panicking.
//!
//! # Layout
//! - `policy.rs`: [`Policy`], [`Endpoint`], [`Mode`], subprotocol negotiation, the config-file
//!   specs ([`EndpointSpec`], [`SubprotocolSpec`]), validation ([`PolicyError`]) and the live
//!   [`PolicyStore`].
//! - `origin.rs`: [`OriginRule`], the grammar of allowed origins and how `Origin` headers are
//!   matched against them.
//! - `token.rs`: [`TokenKey`], HS256 token verification, [`Claims`] and [`RoomPattern`].
//! - `hub.rs`: [`Hub`], what the admin API asks of a running hub, and the data it answers with.
//! - `api/`: the HTTP admin API ([`configure`]) and its OpenAPI document ([`openapi`]);
//!   `api/publishing.rs`, the HTTP publishing API of the public listener
//!   ([`configure_publishing`], [`publishing_openapi`]).
//! - `state.rs`: [`StateFile`], where the API's policy edits are kept across restarts.

pub mod api;
pub mod hub;
pub mod origin;
pub mod policy;
pub mod state;
pub mod token;

pub use api::publishing::{configure_publishing, publishing_openapi, PublishingOptions};
pub use api::{configure, not_found, openapi, AdminOptions};
pub use hub::{
    HttpRoute, Hub, HubError, NodeInfo, NodeMembers, Publisher, Readiness, RoomDetail, RoomMember,
    RoomSummary, SessionInfo,
};

pub use origin::{OriginError, OriginRule};
pub use policy::{
    is_http_token, Endpoint, EndpointSpec, Mode, Negotiation, NegotiationError, Policy,
    PolicyError, PolicyStore, Subprotocol, SubprotocolSpec, UnknownMode,
};
pub use state::{StateError, StateFile};
pub use token::{Claims, RoomPattern, TokenError, TokenKey, MAX_TOKEN_BYTES};

#[cfg(test)]
mod tests;
