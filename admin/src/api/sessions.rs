//! Sessions on this node: listing them, closing one, sending one a message.

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorBody};
use super::model::{
    page_size, paginate, JsonObject, Kicked, SendRequest, Sent, SessionPage, SessionPath,
    SessionQuery,
};
use super::Admin;
use crate::hub::{HubError, SessionInfo};

/// Sessions on this node, in id order, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/sessions",
    tag = "sessions",
    params(SessionQuery),
    responses(
        (status = 200, description = "One page of sessions", body = SessionPage),
        (status = 400, description = "A query parameter has the wrong type", body = ErrorBody),
    )
)]
pub(crate) async fn list_sessions(
    admin: web::Data<Admin>,
    query: web::Query<SessionQuery>,
) -> HttpResponse {
    let size = page_size(query.limit);
    let mut items = admin
        .hub
        .sessions(query.cursor.as_deref(), size.saturating_add(1));
    let next_cursor = paginate(&mut items, size, |session| &session.id);
    HttpResponse::Ok().json(SessionPage { items, next_cursor })
}

/// One session.
#[utoipa::path(
    get,
    path = "/admin/sessions/{id}",
    tag = "sessions",
    params(SessionPath),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub(crate) async fn get_session(
    admin: web::Data<Admin>,
    path: web::Path<SessionPath>,
) -> Result<HttpResponse, ApiError> {
    match admin.hub.session(&path.id) {
        Some(session) => Ok(HttpResponse::Ok().json(session)),
        None => Err(no_session(&path.id)),
    }
}

/// Closes a session with close code 4001 `kicked`. The client may reconnect; revoke its token
/// or change the policy to keep it out.
#[utoipa::path(
    delete,
    path = "/admin/sessions/{id}",
    tag = "sessions",
    params(SessionPath),
    responses(
        (status = 200, description = "The session is being closed", body = Kicked),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub(crate) async fn kick_session(
    admin: web::Data<Admin>,
    path: web::Path<SessionPath>,
) -> Result<HttpResponse, ApiError> {
    if !admin.hub.kick(&path.id).await {
        return Err(no_session(&path.id));
    }
    Ok(HttpResponse::Ok().json(Kicked {
        kicked: path.into_inner().id,
    }))
}

/// Sends one session a `direct` frame with `from` set to `admin`.
#[utoipa::path(
    post,
    path = "/admin/sessions/{id}/send",
    tag = "sessions",
    params(SessionPath),
    request_body = SendRequest,
    responses(
        (status = 200, description = "Queued for the session", body = Sent),
        (status = 400, description = "The body is not JSON of this shape or the path cannot \
            be decoded", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or the message over the hub's \
            message size limit", body = ErrorBody),
        (status = 503, description = "The hub cannot deliver now (`unavailable`)",
            body = ErrorBody),
    )
)]
pub(crate) async fn send_to_session(
    admin: web::Data<Admin>,
    path: web::Path<SessionPath>,
    body: web::Json<JsonObject<SendRequest>>,
) -> Result<HttpResponse, ApiError> {
    let JsonObject(body) = body.into_inner();
    admin
        .hub
        .send(&path.id, &body.data)
        .await
        .map_err(|error| match error {
            HubError::NotFound => no_session(&path.id),
            other => other.into(),
        })?;
    Ok(HttpResponse::Ok().json(Sent {
        sent: path.into_inner().id,
    }))
}

fn no_session(id: &str) -> ApiError {
    ApiError::not_found(format!("no session {id:?}"))
}
