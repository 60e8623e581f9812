//! The one error shape of the admin API, `{"error":{"code":"..","message":".."}}`, and the
//! glue that makes actix-web's own failures (bad JSON, bad query strings, unknown routes and
//! methods) answer with it too, so a client needs a single error parser.

use std::fmt;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::web::{JsonConfig, PathConfig, QueryConfig};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hub::HubError;
use crate::policy::PolicyError;

/// The largest JSON request body accepted, in bytes. Every body the API takes is small except
/// the `data` of a send or publish, and the hub bounds those far lower anyway.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs to branch on.
    pub code: ApiErrorCode,
    /// For people; the wording may change.
    pub message: String,
}

/// What went wrong, in a form that does not change with the wording of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    /// The request could not be read: malformed JSON, a body of the wrong shape, a missing or
    /// wrong `Content-Type`, or a bad query or path parameter.
    BadRequest,
    /// The bearer token is missing or wrong.
    Unauthorized,
    /// No such route, endpoint, origin, subprotocol, room or session.
    NotFound,
    /// The route exists but not with this method; `Allow` lists the methods it has.
    MethodNotAllowed,
    /// The origin or subprotocol is already there.
    Conflict,
    /// The request body, or the message it carries, is over a size limit.
    TooLarge,
    /// The origin does not follow the origin grammar; the message says why.
    InvalidOrigin,
    /// The subprotocol name is not an HTTP token.
    InvalidSubprotocol,
    /// The room name is empty, too long or holds a control character.
    InvalidRoom,
    /// The change would put more origins or subprotocols on an endpoint than allowed.
    LimitExceeded,
    /// The change would make the policy invalid in some other way.
    InvalidPolicy,
    /// The hub cannot do this now (for example while draining).
    Unavailable,
    /// The change is in force but could not be written to the state file, so it will not
    /// survive a restart.
    PersistFailed,
}

/// An error response about to be sent.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ApiErrorCode,
    message: String,
    /// For 405: the value of the `Allow` header.
    allow: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ApiErrorCode::BadRequest, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthorized,
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ApiErrorCode::NotFound, message)
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ApiErrorCode::MethodNotAllowed,
                format!("method not allowed here; allowed: {allow}"),
            )
        }
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ApiErrorCode::Conflict, message)
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorCode::TooLarge,
            message,
        )
    }

    pub(crate) fn unprocessable(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub(crate) fn unavailable(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.code == ApiErrorCode::Unauthorized {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, allow));
        }
        response.json(self.body())
    }
}

impl From<PolicyError> for ApiError {
    fn from(error: PolicyError) -> Self {
        let message = error.to_string();
        match error {
            PolicyError::NotFound { .. } => Self::not_found(message),
            PolicyError::BadOrigin { .. } => {
                Self::unprocessable(ApiErrorCode::InvalidOrigin, message)
            }
            PolicyError::BadSubprotocol { .. } => {
                Self::unprocessable(ApiErrorCode::InvalidSubprotocol, message)
            }
            PolicyError::DuplicateSubprotocol { .. } => Self::conflict(message),
            PolicyError::TooManyOrigins { .. } | PolicyError::TooManySubprotocols { .. } => {
                Self::unprocessable(ApiErrorCode::LimitExceeded, message)
            }
            PolicyError::BadName { .. }
            | PolicyError::DuplicateEndpoint { .. }
            | PolicyError::MissingPath { .. }
            | PolicyError::BadPath { .. }
            | PolicyError::DuplicatePath { .. }
            | PolicyError::TooManyEndpoints { .. } => {
                Self::unprocessable(ApiErrorCode::InvalidPolicy, message)
            }
        }
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        let message = error.to_string();
        match error {
            HubError::NotFound => Self::not_found(message),
            HubError::TooLarge { .. } => Self::too_large(message),
            HubError::Unavailable(_) => Self::unavailable(ApiErrorCode::Unavailable, message),
        }
    }
}

pub(crate) fn json_config() -> JsonConfig {
    JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|error, _| json_error(error).into())
}

pub(crate) fn path_config() -> PathConfig {
    PathConfig::default().error_handler(|error, _| path_error(error).into())
}

pub(crate) fn query_config() -> QueryConfig {
    QueryConfig::default().error_handler(|error, _| query_error(error).into())
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::too_large(format!(
            "request body of {length} bytes is over the {limit}-byte limit"
        )),
        JsonPayloadError::Overflow { limit } => {
            ApiError::too_large(format!("request body is over the {limit}-byte limit"))
        }
        JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::too_large(format!(
            "request body is over the {MAX_BODY_BYTES}-byte limit"
        )),
        JsonPayloadError::ContentType => {
            ApiError::bad_request("the request body must be JSON (Content-Type: application/json)")
        }
        JsonPayloadError::Deserialize(error) => {
            ApiError::bad_request(format!("invalid JSON body: {error}"))
        }
        other => ApiError::bad_request(format!("cannot read the request body: {other}")),
    }
}

fn path_error(error: PathError) -> ApiError {
    match error {
        PathError::Deserialize(error) => {
            ApiError::bad_request(format!("invalid path parameter: {error}"))
        }
        other => ApiError::bad_request(format!("invalid path: {other}")),
    }
}

fn query_error(error: QueryPayloadError) -> ApiError {
    match error {
        QueryPayloadError::Deserialize(error) => {
            ApiError::bad_request(format!("invalid query string: {error}"))
        }
        other => ApiError::bad_request(format!("invalid query string: {other}")),
    }
}
