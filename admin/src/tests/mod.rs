#![allow(clippy::unwrap_used)]

mod origin;
mod policy;
mod props;
mod store;
mod token;
