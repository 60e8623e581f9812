//! The nodes of the cluster.

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorBody};
use super::Admin;
use crate::hub::NodeInfo;

/// The nodes of the cluster, from the registry every node refreshes (an entry not refreshed for
/// 30 s is gone, so a crashed node disappears within a minute); a standalone node lists itself.
#[utoipa::path(
    get,
    path = "/admin/nodes",
    tag = "cluster",
    responses(
        (status = 200, description = "The nodes, in id order", body = Vec<NodeInfo>),
        (status = 503, description = "The registry is out of reach (`unavailable`)",
            body = ErrorBody),
    )
)]
pub(crate) async fn list_nodes(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let nodes = admin.hub.nodes().await?;
    Ok(HttpResponse::Ok().json(nodes))
}
