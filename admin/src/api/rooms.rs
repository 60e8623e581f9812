//! Rooms on this node, and publishing to them as the admin.

use actix_web::{web, HttpResponse};
use switchboard_protocol::{validate_room, Scope};

use super::error::{ApiError, ApiErrorCode, ErrorBody};
use super::model::{
    page_size, paginate, JsonObject, PublishRequest, Published, RoomPage, RoomPath, RoomQuery,
};
use super::Admin;
use crate::hub::{HubError, Publisher, RoomDetail};

/// Rooms with members on this node, in name order, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/rooms",
    tag = "rooms",
    params(RoomQuery),
    responses(
        (status = 200, description = "One page of rooms", body = RoomPage),
        (status = 400, description = "A query parameter has the wrong type", body = ErrorBody),
    )
)]
pub(crate) async fn list_rooms(
    admin: web::Data<Admin>,
    query: web::Query<RoomQuery>,
) -> HttpResponse {
    let size = page_size(query.limit);
    let prefix = query.prefix.as_deref().unwrap_or("");
    let mut items = admin
        .hub
        .rooms(prefix, query.cursor.as_deref(), size.saturating_add(1));
    let next_cursor = paginate(&mut items, size, |room| &room.name);
    HttpResponse::Ok().json(RoomPage { items, next_cursor })
}

/// One room's members on this node, and its member count on every node: in cluster mode each
/// node is asked, and a node that does not answer within a second is listed under `missing`
/// while the others' counts still come back.
#[utoipa::path(
    get,
    path = "/admin/rooms/{room}",
    tag = "rooms",
    params(RoomPath),
    responses(
        (status = 200, description = "The room, its members on this node and its member \
            count on every node", body = RoomDetail),
        (status = 400, description = "The path cannot be decoded", body = ErrorBody),
        (status = 404, description = "The room has no members on any node that answered",
            body = ErrorBody),
        (status = 422, description = "Not a valid room name (`invalid_room`)", body = ErrorBody),
    )
)]
pub(crate) async fn get_room(
    admin: web::Data<Admin>,
    path: web::Path<RoomPath>,
) -> Result<HttpResponse, ApiError> {
    check_room(&path.room)?;
    match admin.hub.room(&path.room).await {
        Some(detail) => Ok(HttpResponse::Ok().json(detail)),
        None => Err(ApiError::not_found(format!(
            "room {:?} has no members on any node that answered",
            path.room
        ))),
    }
}

/// Publishes to a room as a client would, with `from` set to `admin`. A room without members
/// is not an error: like any publish, the message reaches whoever is subscribed, here no one.
#[utoipa::path(
    post,
    path = "/admin/rooms/{room}/publish",
    tag = "rooms",
    params(RoomPath),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Published", body = Published),
        (status = 400, description = "The body is not JSON of this shape (an unknown scope \
            included) or the path cannot be decoded", body = ErrorBody),
        (status = 404, description = "The hub refused the room as unknown", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or the message over the hub's \
            message size limit", body = ErrorBody),
        (status = 422, description = "Not a valid room name (`invalid_room`)", body = ErrorBody),
        (status = 503, description = "The hub cannot publish now (`unavailable`)",
            body = ErrorBody),
    )
)]
pub(crate) async fn publish(
    admin: web::Data<Admin>,
    path: web::Path<RoomPath>,
    body: web::Json<JsonObject<PublishRequest>>,
) -> Result<HttpResponse, ApiError> {
    let JsonObject(body) = body.into_inner();
    check_room(&path.room)?;
    let scope = body.scope.map_or(Scope::default(), Scope::from);
    admin
        .hub
        .publish(&path.room, &body.data, scope, Publisher::Admin)
        .await
        .map_err(|error| match error {
            HubError::NotFound => ApiError::not_found(format!("no room {:?}", path.room)),
            other => other.into(),
        })?;
    Ok(HttpResponse::Ok().json(Published {
        published: path.into_inner().room,
    }))
}

fn check_room(room: &str) -> Result<(), ApiError> {
    validate_room(room)
        .map_err(|(_, reason)| ApiError::unprocessable(ApiErrorCode::InvalidRoom, reason))
}
