//! The [`Hub`] behind a trait object.
//!
//! `Hub` has async methods and so cannot be a trait object itself; boxing its futures here lets
//! every handler and the OpenAPI annotations on them be ordinary, non-generic functions, and
//! compiles the routes once rather than once per hub type.

use std::future::Future;
use std::pin::Pin;

use serde_json::value::RawValue;
use switchboard_protocol::Scope;

use crate::hub::{
    HttpRoute, Hub, HubError, NodeInfo, Publisher, Readiness, RoomDetail, RoomSummary, SessionInfo,
};
use crate::policy::PolicyStore;

/// A future polled on the worker that created it.
pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

pub(crate) trait DynHub: Send + Sync {
    fn rooms(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<RoomSummary>;
    fn room<'a>(&'a self, name: &'a str) -> LocalFuture<'a, Option<RoomDetail>>;
    fn sessions(&self, after: Option<&str>, limit: usize) -> Vec<SessionInfo>;
    fn session(&self, id: &str) -> Option<SessionInfo>;
    fn nodes(&self) -> LocalFuture<'_, Result<Vec<NodeInfo>, HubError>>;
    fn kick<'a>(&'a self, id: &'a str) -> LocalFuture<'a, bool>;
    fn send<'a>(&'a self, id: &'a str, data: &'a RawValue)
        -> LocalFuture<'a, Result<(), HubError>>;
    fn publish<'a>(
        &'a self,
        room: &'a str,
        data: &'a RawValue,
        scope: Scope,
        by: Publisher,
    ) -> LocalFuture<'a, Result<(), HubError>>;
    fn http_request_done(&self, route: HttpRoute, seconds: f64);
    fn http_rejected(&self, route: HttpRoute, reason: &'static str);
    fn readiness(&self) -> Readiness;
    fn metrics(&self) -> String;
    fn policy(&self) -> &PolicyStore;
    fn policy_changed(&self) -> LocalFuture<'_, Result<(), HubError>>;
}

impl<H: Hub + Send + Sync> DynHub for H {
    fn rooms(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<RoomSummary> {
        Hub::rooms(self, prefix, after, limit)
    }

    fn room<'a>(&'a self, name: &'a str) -> LocalFuture<'a, Option<RoomDetail>> {
        Box::pin(Hub::room(self, name))
    }

    fn sessions(&self, after: Option<&str>, limit: usize) -> Vec<SessionInfo> {
        Hub::sessions(self, after, limit)
    }

    fn session(&self, id: &str) -> Option<SessionInfo> {
        Hub::session(self, id)
    }

    fn nodes(&self) -> LocalFuture<'_, Result<Vec<NodeInfo>, HubError>> {
        Box::pin(Hub::nodes(self))
    }

    fn kick<'a>(&'a self, id: &'a str) -> LocalFuture<'a, bool> {
        Box::pin(Hub::kick(self, id))
    }

    fn send<'a>(
        &'a self,
        id: &'a str,
        data: &'a RawValue,
    ) -> LocalFuture<'a, Result<(), HubError>> {
        Box::pin(Hub::send(self, id, data))
    }

    fn publish<'a>(
        &'a self,
        room: &'a str,
        data: &'a RawValue,
        scope: Scope,
        by: Publisher,
    ) -> LocalFuture<'a, Result<(), HubError>> {
        Box::pin(Hub::publish(self, room, data, scope, by))
    }

    fn http_request_done(&self, route: HttpRoute, seconds: f64) {
        Hub::http_request_done(self, route, seconds);
    }

    fn http_rejected(&self, route: HttpRoute, reason: &'static str) {
        Hub::http_rejected(self, route, reason);
    }

    fn readiness(&self) -> Readiness {
        Hub::readiness(self)
    }

    fn metrics(&self) -> String {
        Hub::metrics(self)
    }

    fn policy(&self) -> &PolicyStore {
        Hub::policy(self)
    }

    fn policy_changed(&self) -> LocalFuture<'_, Result<(), HubError>> {
        Box::pin(Hub::policy_changed(self))
    }
}
