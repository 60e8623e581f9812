//! The admin API against an in-memory hub: routing, validation, auth and error shapes. How the
//! real hub answers is tested end to end elsewhere.

mod auth;
mod errors;
mod hub_routes;
mod openapi;
mod policy_routes;
mod support;
