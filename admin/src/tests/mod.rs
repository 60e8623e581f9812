#![allow(clippy::unwrap_used)]

mod api;
mod origin;
mod policy;
mod props;
mod state;
mod store;
mod token;
