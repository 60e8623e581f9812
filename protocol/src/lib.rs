//! The `switchboard.v1` wire protocol.
//!
//! Everything a Switchboard hub and its clients say to each other, as data: the frames a client
//! sends ([`ClientFrame`], decoded by [`decode`]), the frames the hub sends ([`ServerFrame`],
//! written by [`ServerFrame::encode`]), the error codes carried in `error` frames ([`ErrorCode`])
//! and the WebSocket close codes the hub uses ([`close`]). Between the nodes of a cluster, a
//! publish travels through a broker as an [`Envelope`].
//!
//! This crate is pure: no I/O, no runtime, no actors. Any string can be handed to [`decode`]; it
//! answers with a frame or a [`DecodeError`] and never panics (a property test holds it to that).
//! [`Envelope::decode`] makes the same promise for broker messages.
//!
//! # Layout
//! - `client.rs`: [`ClientFrame`] and [`decode`], the one entry point for client text.
//! - `server.rs`: [`ServerFrame`] and its hand-written encoder (one allocation per frame; the
//!   published `data` is copied verbatim, never re-serialized).
//! - `error.rs`: [`ErrorCode`] and [`DecodeError`].
//! - `close.rs`: WebSocket close codes, standard and Switchboard's own.
//! - `room.rs`: [`validate_room`], the room-name rule.
//! - `scope.rs`: [`Scope`], how far a publish travels.
//! - `envelope.rs`: [`Envelope`], a publish as it crosses a broker between nodes, with its
//!   hand-written encoder and its borrowing decoder ([`EnvelopeError`], [`ENVELOPE_VERSION`]).
//!
//! The wire format is documented for client authors in this crate's `README.md`, whose last
//! section describes the broker envelope.

mod client;
pub mod close;
mod envelope;
mod error;
mod room;
mod scope;
mod server;

pub use client::{decode, ClientFrame, Publish, Recover};
pub use envelope::{Envelope, EnvelopeError, Kind, ENVELOPE_VERSION};
pub use error::{DecodeError, ErrorCode};
pub use room::{validate_room, MAX_ROOM_BYTES};
pub use scope::Scope;
pub use server::{Member, Position, ServerFrame, Welcome};

/// The protocol name, sent in `welcome` frames and accepted as a WebSocket subprotocol.
pub const PROTOCOL: &str = "switchboard.v1";

/// Re-exported so that callers can hold a publish's `data` without naming serde_json.
pub use serde_json::value::RawValue;

#[cfg(test)]
mod tests;
