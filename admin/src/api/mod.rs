//! The HTTP admin API: probes, metrics, the live handshake policy, rooms and sessions.
//!
//! The hub mounts it with [`configure`] on whatever listener it chooses. Everything under
//! `/admin/` wants the configured bearer token; `/healthz`, `/readyz` and `/metrics` are open.
//! Requests and responses are JSON, and every error, including actix-web's own (malformed
//! bodies, bad query strings, unknown routes and methods), has the shape of [`ErrorBody`].
//!
//! The OpenAPI document ([`openapi`], also served at `/admin/openapi.json`) is derived from the
//! handlers and types below, so it describes every route, parameter, body and status the code
//! has.

pub(crate) mod auth;
mod endpoints;
mod erased;
mod error;
mod health;
pub mod model;
mod nodes;
pub mod publishing;
mod rooms;
mod sessions;

use std::fmt;
use std::sync::{Arc, OnceLock};

use actix_web::body::BoxBody;
use actix_web::dev::ServiceRequest;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, Resource, ResponseError};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

pub use error::{ApiErrorCode, ErrorBody, ErrorDetail, MAX_BODY_BYTES};

use crate::hub::Hub;
use crate::state::StateFile;
use erased::DynHub;
use error::ApiError;

/// How the admin API is set up.
#[derive(Clone, Default)]
pub struct AdminOptions {
    /// The bearer token `/admin/` routes require. `None` leaves them open, which is only safe
    /// on a listener nobody else can reach (the hub allows it on loopback only).
    pub token: Option<String>,
    /// Where policy edits are saved so they survive a restart; `None` keeps them in memory.
    pub state: Option<StateFile>,
}

/// The token must never reach a log line through `{:?}` on the options.
impl fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("state", &self.state)
            .finish()
    }
}

/// What every handler shares.
pub(crate) struct Admin {
    hub: Arc<dyn DynHub>,
    state: Option<StateFile>,
}

impl Admin {
    /// Saves the live policy after an edit, off the worker thread (a save waits for the disk),
    /// and lets the hub share it with the other nodes of its cluster.
    async fn persist(&self) -> Result<(), ApiError> {
        self.save().await?;
        self.hub.policy_changed().await.map_err(|error| {
            ApiError::unavailable(
                ApiErrorCode::PersistFailed,
                format!(
                    "the change is in force on this node but not shared with the cluster: {error}"
                ),
            )
        })
    }

    async fn save(&self) -> Result<(), ApiError> {
        let Some(file) = self.state.clone() else {
            return Ok(());
        };
        let hub = Arc::clone(&self.hub);
        let failed = |message: String| {
            ApiError::unavailable(
                ApiErrorCode::PersistFailed,
                format!("the change is in force but was not saved: {message}"),
            )
        };
        match web::block(move || file.save_current(hub.policy())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(failed(error.to_string())),
            Err(error) => Err(failed(error.to_string())),
        }
    }
}

/// The admin API's routes, for `App::new().configure(...)` (called once per HTTP worker).
///
/// Registers `/healthz`, `/readyz`, `/metrics` and the `/admin` scope. Unknown paths and
/// methods inside `/admin` get the API's 404 and 405 errors; for paths outside it the app's own
/// default service answers, so an app serving only the admin API should add
/// `.default_service(web::to(switchboard_admin::not_found))`.
///
/// Clones of `options.state` share one lock, so saves from all workers are serialized however
/// often this is called.
pub fn configure<H>(
    hub: Arc<H>,
    options: AdminOptions,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static
where
    H: Hub + Send + Sync,
{
    let hub: Arc<dyn DynHub> = hub;
    let expected = options.token.as_deref().map(|t| auth::digest(t.as_bytes()));
    let state = options.state;
    move |cfg: &mut web::ServiceConfig| {
        let admin = web::Data::new(Admin {
            hub: Arc::clone(&hub),
            state: state.clone(),
        });
        cfg.app_data(admin)
            .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
            .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
            .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
            .service(
                web::scope("/admin")
                    .app_data(error::json_config())
                    .app_data(error::path_config())
                    .app_data(error::query_config())
                    .wrap(from_fn(
                        move |req: ServiceRequest, next: Next<BoxBody>| async move {
                            auth::require_bearer(expected, req, next).await
                        },
                    ))
                    .service(resource("/openapi.json", "GET").route(web::get().to(openapi_json)))
                    .service(
                        resource("/endpoints", "GET")
                            .route(web::get().to(endpoints::list_endpoints)),
                    )
                    .service(
                        resource("/endpoints/{name}", "GET")
                            .route(web::get().to(endpoints::get_endpoint)),
                    )
                    .service(
                        resource("/endpoints/{name}/origins", "GET, POST, PUT, DELETE")
                            .route(web::get().to(endpoints::list_origins))
                            .route(web::post().to(endpoints::add_origin))
                            .route(web::put().to(endpoints::replace_origins))
                            .route(web::delete().to(endpoints::remove_origin)),
                    )
                    .service(
                        resource("/endpoints/{name}/subprotocols", "GET, POST")
                            .route(web::get().to(endpoints::list_subprotocols))
                            .route(web::post().to(endpoints::add_subprotocol)),
                    )
                    .service(
                        resource("/endpoints/{name}/subprotocols/{protocol}", "DELETE")
                            .route(web::delete().to(endpoints::remove_subprotocol)),
                    )
                    .service(resource("/nodes", "GET").route(web::get().to(nodes::list_nodes)))
                    .service(resource("/rooms", "GET").route(web::get().to(rooms::list_rooms)))
                    .service(resource("/rooms/{room}", "GET").route(web::get().to(rooms::get_room)))
                    .service(
                        resource("/rooms/{room}/publish", "POST")
                            .route(web::post().to(rooms::publish)),
                    )
                    .service(
                        resource("/sessions", "GET").route(web::get().to(sessions::list_sessions)),
                    )
                    .service(
                        resource("/sessions/{id}", "GET, DELETE")
                            .route(web::get().to(sessions::get_session))
                            .route(web::delete().to(sessions::kick_session)),
                    )
                    .service(
                        resource("/sessions/{id}/send", "POST")
                            .route(web::post().to(sessions::send_to_session)),
                    )
                    .default_service(web::to(not_found)),
            );
    }
}

/// The API's 404 response, for an app's default service.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no route {}", req.path())).error_response()
}

/// A resource whose other methods answer 405 with `Allow: allow` in the API's error shape
/// rather than actix-web's empty 405.
pub(crate) fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        ApiError::method_not_allowed(allow).error_response()
    }))
}

/// The OpenAPI 3.1 document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document, as served to clients.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi_json() -> HttpResponse {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    HttpResponse::Ok().json(DOCUMENT.get_or_init(openapi))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard admin API",
        description = "Health, metrics, the live handshake policy, rooms and sessions of one \
            Switchboard node. Every error response is `{\"error\":{\"code\":..,\"message\":..}}`. \
            Routes under `/admin/` need `Authorization: Bearer <token>`; unknown fields in \
            request bodies are ignored."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
        endpoints::list_endpoints,
        endpoints::get_endpoint,
        endpoints::list_origins,
        endpoints::add_origin,
        endpoints::remove_origin,
        endpoints::replace_origins,
        endpoints::list_subprotocols,
        endpoints::add_subprotocol,
        endpoints::remove_subprotocol,
        nodes::list_nodes,
        rooms::list_rooms,
        rooms::get_room,
        rooms::publish,
        sessions::list_sessions,
        sessions::get_session,
        sessions::kick_session,
        sessions::send_to_session,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Probes and metrics; no token needed"),
        (name = "meta", description = "This API's description"),
        (name = "policy", description = "Endpoints, origins and subprotocols; changes apply \
            from the next handshake"),
        (name = "cluster", description = "The nodes of the cluster"),
        (name = "rooms", description = "Rooms: members on this node, and in cluster mode \
            member counts on every node"),
        (name = "sessions", description = "Sessions on this node; kick and send reach a \
            session on any node of the cluster"),
    )
)]
struct ApiDoc;

/// The name of the security scheme in the document.
const BEARER_SCHEME: &str = "bearer";

/// Declares the bearer scheme and attaches it, with its 401 answer, to exactly the operations
/// the middleware guards: those under `/admin/`. The rest are marked as needing nothing, so
/// the document follows the routing rather than a list kept beside it.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        guard_paths(
            openapi,
            "/admin/",
            "The admin token the hub was started with",
        );
    }
}

/// Declares the bearer scheme and attaches it, with its 401 answer, to the operations whose
/// path starts with `prefix` (those a bearer middleware guards); the rest are marked as
/// needing nothing.
pub(crate) fn guard_paths(
    openapi: &mut utoipa::openapi::OpenApi,
    prefix: &str,
    description: &'static str,
) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build(),
        ),
    );
    let unauthorized = ResponseBuilder::new()
        .description("The bearer token is missing or wrong (`unauthorized`)")
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .description(Some("Always `Bearer`"))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in openapi.paths.paths.iter_mut() {
        let guarded = path.starts_with(prefix);
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            if guarded {
                operation.security = Some(vec![SecurityRequirement::new(
                    BEARER_SCHEME,
                    Vec::<String>::new(),
                )]);
                operation
                    .responses
                    .responses
                    .insert("401".to_owned(), unauthorized.clone().into());
            } else {
                operation.security = Some(Vec::new());
            }
        }
    }
}
