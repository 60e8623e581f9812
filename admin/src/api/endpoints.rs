//! Endpoints, and the origins and subprotocols an operator may change while the hub runs.
//!
//! Every change goes through [`PolicyStore::try_update`], so it is validated as a whole policy,
//! composes with concurrent changes, and applies from the next handshake; sessions already open
//! keep the terms they were admitted under. A change is then saved to the state file, if there
//! is one.

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ApiErrorCode, ErrorBody};
use super::model::{
    EndpointPath, JsonObject, NewOrigin, NewSubprotocol, OriginList, OriginQuery, SubprotocolList,
    SubprotocolPath,
};
use super::Admin;
use crate::origin::OriginRule;
use crate::policy::{
    is_http_token, Endpoint, Policy, PolicyError, PolicyStore, Subprotocol, MAX_ORIGINS,
};

/// Every endpoint of the live policy, in configuration order.
#[utoipa::path(
    get,
    path = "/admin/endpoints",
    tag = "policy",
    responses((status = 200, description = "Every endpoint", body = Vec<Endpoint>))
)]
pub(crate) async fn list_endpoints(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok().json(admin.hub.policy().load().endpoints())
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/admin/endpoints/{name}",
    tag = "policy",
    params(EndpointPath),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    )
)]
pub(crate) async fn get_endpoint(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
) -> Result<HttpResponse, ApiError> {
    let policy = admin.hub.policy().load();
    let endpoint = find(&policy, &path.name)?;
    Ok(HttpResponse::Ok().json(endpoint))
}

/// The origins allowed to open a WebSocket to an endpoint.
#[utoipa::path(
    get,
    path = "/admin/endpoints/{name}/origins",
    tag = "policy",
    params(EndpointPath),
    responses(
        (status = 200, description = "The endpoint's origin rules; empty allows every client",
            body = OriginList),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    )
)]
pub(crate) async fn list_origins(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
) -> Result<HttpResponse, ApiError> {
    let policy = admin.hub.policy().load();
    Ok(HttpResponse::Ok().json(origin_list(find(&policy, &path.name)?)))
}

/// Allows one more origin. Note that the first rule turns an open endpoint (no rules) into one
/// that refuses every other origin, and every client that sends no `Origin` header.
#[utoipa::path(
    post,
    path = "/admin/endpoints/{name}/origins",
    tag = "policy",
    params(EndpointPath),
    request_body = NewOrigin,
    responses(
        (status = 201, description = "Added; the endpoint's origin rules", body = OriginList),
        (status = 400, description = "The body is not JSON of this shape", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint already has this rule (compared in \
            canonical form)", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 422, description = "Not a valid origin rule (`invalid_origin`, the message \
            says why) or one rule too many (`limit_exceeded`)", body = ErrorBody),
        (status = 503, description = "Added, but not saved to the state file \
            (`persist_failed`)", body = ErrorBody),
    )
)]
pub(crate) async fn add_origin(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
    body: web::Json<JsonObject<NewOrigin>>,
) -> Result<HttpResponse, ApiError> {
    let JsonObject(body) = body.into_inner();
    let rule = parse_origin(&body.origin)?;
    let policy = edit_endpoint(admin.hub.policy(), &path.name, |endpoint| {
        if endpoint.origins.contains(&rule) {
            return Err(ApiError::conflict(format!(
                "endpoint {:?} already allows origin {rule}",
                endpoint.name
            )));
        }
        endpoint.origins.push(rule.clone());
        Ok(())
    })?;
    admin.persist().await?;
    Ok(HttpResponse::Created().json(origin_list(find(&policy, &path.name)?)))
}

/// Removes one origin rule.
#[utoipa::path(
    delete,
    path = "/admin/endpoints/{name}/origins",
    tag = "policy",
    params(EndpointPath, OriginQuery),
    responses(
        (status = 200, description = "Removed; the endpoint's origin rules", body = OriginList),
        (status = 400, description = "The `origin` query parameter is missing", body = ErrorBody),
        (status = 404, description = "No such endpoint, or it has no such rule", body = ErrorBody),
        (status = 422, description = "Not a valid origin rule (`invalid_origin`)",
            body = ErrorBody),
        (status = 503, description = "Removed, but not saved to the state file \
            (`persist_failed`)", body = ErrorBody),
    )
)]
pub(crate) async fn remove_origin(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
    query: web::Query<OriginQuery>,
) -> Result<HttpResponse, ApiError> {
    let rule = parse_origin(&query.origin)?;
    let policy = edit_endpoint(admin.hub.policy(), &path.name, |endpoint| {
        let before = endpoint.origins.len();
        endpoint.origins.retain(|r| r != &rule);
        if endpoint.origins.len() == before {
            return Err(ApiError::not_found(format!(
                "endpoint {:?} has no origin rule {rule}",
                endpoint.name
            )));
        }
        Ok(())
    })?;
    admin.persist().await?;
    Ok(HttpResponse::Ok().json(origin_list(find(&policy, &path.name)?)))
}

/// Replaces all of an endpoint's origin rules. Rules that are the same in canonical form are
/// kept once, in first-seen order; an empty list opens the endpoint to every client.
#[utoipa::path(
    put,
    path = "/admin/endpoints/{name}/origins",
    tag = "policy",
    params(EndpointPath),
    request_body = OriginList,
    responses(
        (status = 200, description = "Replaced; the endpoint's origin rules", body = OriginList),
        (status = 400, description = "The body is not JSON of this shape", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 422, description = "A rule is not a valid origin (`invalid_origin`) or there \
            are more than 1024 (`limit_exceeded`); nothing is changed", body = ErrorBody),
        (status = 503, description = "Replaced, but not saved to the state file \
            (`persist_failed`)", body = ErrorBody),
    )
)]
pub(crate) async fn replace_origins(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
    body: web::Json<JsonObject<OriginList>>,
) -> Result<HttpResponse, ApiError> {
    let JsonObject(body) = body.into_inner();
    // Counted before duplicates are dropped, so the limit is the one the document states.
    if body.origins.len() > MAX_ORIGINS {
        return Err(PolicyError::TooManyOrigins {
            endpoint: path.name.clone(),
            count: body.origins.len(),
        }
        .into());
    }
    let mut rules: Vec<OriginRule> = Vec::with_capacity(body.origins.len());
    for text in &body.origins {
        let rule = parse_origin(text)?;
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    let policy = edit_endpoint(admin.hub.policy(), &path.name, |endpoint| {
        endpoint.origins.clone_from(&rules);
        Ok(())
    })?;
    admin.persist().await?;
    Ok(HttpResponse::Ok().json(origin_list(find(&policy, &path.name)?)))
}

/// The subprotocols an endpoint accepts, and the mode each selects.
#[utoipa::path(
    get,
    path = "/admin/endpoints/{name}/subprotocols",
    tag = "policy",
    params(EndpointPath),
    responses(
        (status = 200, description = "The endpoint's subprotocols", body = SubprotocolList),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    )
)]
pub(crate) async fn list_subprotocols(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
) -> Result<HttpResponse, ApiError> {
    let policy = admin.hub.policy().load();
    Ok(HttpResponse::Ok().json(subprotocol_list(find(&policy, &path.name)?)))
}

/// Accepts one more subprotocol.
#[utoipa::path(
    post,
    path = "/admin/endpoints/{name}/subprotocols",
    tag = "policy",
    params(EndpointPath),
    request_body = NewSubprotocol,
    responses(
        (status = 201, description = "Added; the endpoint's subprotocols", body = SubprotocolList),
        (status = 400, description = "The body is not JSON of this shape (an unknown mode \
            included)", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint already accepts this subprotocol",
            body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 422, description = "The name is not an HTTP token (`invalid_subprotocol`) or \
            it is one subprotocol too many (`limit_exceeded`)", body = ErrorBody),
        (status = 503, description = "Added, but not saved to the state file \
            (`persist_failed`)", body = ErrorBody),
    )
)]
pub(crate) async fn add_subprotocol(
    admin: web::Data<Admin>,
    path: web::Path<EndpointPath>,
    body: web::Json<JsonObject<NewSubprotocol>>,
) -> Result<HttpResponse, ApiError> {
    let JsonObject(body) = body.into_inner();
    if !is_http_token(&body.name) {
        return Err(PolicyError::BadSubprotocol {
            endpoint: path.name.clone(),
            name: body.name.clone(),
        }
        .into());
    }
    let policy = edit_endpoint(admin.hub.policy(), &path.name, |endpoint| {
        if endpoint.subprotocols.iter().any(|p| p.name == body.name) {
            return Err(PolicyError::DuplicateSubprotocol {
                endpoint: endpoint.name.clone(),
                name: body.name.clone(),
            }
            .into());
        }
        let mode = body.mode.unwrap_or(endpoint.mode);
        endpoint.subprotocols.push(Subprotocol {
            name: body.name.clone(),
            mode,
        });
        Ok(())
    })?;
    admin.persist().await?;
    Ok(HttpResponse::Created().json(subprotocol_list(find(&policy, &path.name)?)))
}

/// Stops accepting a subprotocol. Clients that offer only that one are then refused (if the
/// endpoint requires a subprotocol or they offered one) from the next handshake.
#[utoipa::path(
    delete,
    path = "/admin/endpoints/{name}/subprotocols/{protocol}",
    tag = "policy",
    params(SubprotocolPath),
    responses(
        (status = 200, description = "Removed; the endpoint's subprotocols",
            body = SubprotocolList),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "No such endpoint, or it does not accept this subprotocol",
            body = ErrorBody),
        (status = 503, description = "Removed, but not saved to the state file \
            (`persist_failed`)", body = ErrorBody),
    )
)]
pub(crate) async fn remove_subprotocol(
    admin: web::Data<Admin>,
    path: web::Path<SubprotocolPath>,
) -> Result<HttpResponse, ApiError> {
    let policy = edit_endpoint(admin.hub.policy(), &path.name, |endpoint| {
        let before = endpoint.subprotocols.len();
        endpoint.subprotocols.retain(|p| p.name != path.protocol);
        if endpoint.subprotocols.len() == before {
            return Err(ApiError::not_found(format!(
                "endpoint {:?} does not accept subprotocol {:?}",
                endpoint.name, path.protocol
            )));
        }
        Ok(())
    })?;
    admin.persist().await?;
    Ok(HttpResponse::Ok().json(subprotocol_list(find(&policy, &path.name)?)))
}

fn find<'p>(policy: &'p Policy, name: &str) -> Result<&'p Endpoint, ApiError> {
    policy.endpoint(name).ok_or_else(|| {
        PolicyError::NotFound {
            name: name.to_owned(),
        }
        .into()
    })
}

fn parse_origin(text: &str) -> Result<OriginRule, ApiError> {
    text.parse()
        .map_err(|error| ApiError::unprocessable(ApiErrorCode::InvalidOrigin, format!("{error}")))
}

/// Applies `edit` to a copy of endpoint `name` and installs the result. `edit` may run more
/// than once (see [`PolicyStore::try_update`]) and so must only look at the endpoint it is
/// given.
fn edit_endpoint<F>(store: &PolicyStore, name: &str, mut edit: F) -> Result<Arc<Policy>, ApiError>
where
    F: FnMut(&mut Endpoint) -> Result<(), ApiError>,
{
    store.try_update(|policy| {
        let mut endpoint = find(policy, name)?.clone();
        edit(&mut endpoint)?;
        Ok(policy.with_endpoint_replaced(endpoint)?)
    })
}

fn origin_list(endpoint: &Endpoint) -> OriginList {
    OriginList {
        origins: endpoint.origins.iter().map(ToString::to_string).collect(),
    }
}

fn subprotocol_list(endpoint: &Endpoint) -> SubprotocolList {
    SubprotocolList {
        subprotocols: endpoint.subprotocols.clone(),
    }
}
