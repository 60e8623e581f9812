//! Probes and metrics: unauthenticated, since load balancers, orchestrators and Prometheus
//! scrape them without credentials, and they reveal nothing an operator would hide.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::model::{Health, HealthStatus};
use super::Admin;
use crate::hub::Readiness;

/// The media type of the Prometheus text exposition format.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Liveness: the process answers HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = Health,
        example = json!({"status": "ok"})))
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: HealthStatus::Ok,
        reason: None,
    })
}

/// Readiness: the node accepts new sessions. Draining nodes answer 503 so that load balancers
/// stop sending them handshakes while their sessions wind down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The node accepts new sessions", body = Health,
            example = json!({"status": "ready"})),
        (status = 503, description = "The node is draining, or cannot do all it is configured \
            for (cluster mode: Redis out of reach or too slow)", body = Health,
            example = json!({"status": "unavailable", "reason": "redis 0 (redis://10.0.0.5:6379): Connection refused"})),
    )
)]
pub(crate) async fn readyz(admin: web::Data<Admin>) -> HttpResponse {
    let (status, health, reason) = match admin.hub.readiness() {
        Readiness::Ready => (StatusCode::OK, HealthStatus::Ready, None),
        Readiness::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            HealthStatus::Draining,
            None,
        ),
        Readiness::Unavailable(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            HealthStatus::Unavailable,
            Some(why),
        ),
    };
    HttpResponse::build(status).json(Health {
        status: health,
        reason,
    })
}

/// The node's metrics in the Prometheus text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        body = String, content_type = "text/plain; version=0.0.4"))
)]
pub(crate) async fn metrics(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(admin.hub.metrics())
}
