//! Bearer-token authentication for everything under `/admin/`.
//!
//! The presented token is hashed and the digests compared in constant time: comparing the
//! tokens themselves would stop at the first differing byte (or at a length mismatch) and let a
//! caller who can time responses recover the token byte by byte. Hashing first also keeps the
//! token's length out of the comparison.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The SHA-256 of the configured token: the only form of it the API keeps.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn digest(token: &[u8]) -> TokenDigest {
    Sha256::digest(token).into()
}

/// True when `authorization` is `Bearer <token>` with the token `expected` is the digest of.
///
/// The scheme name is matched without regard to case, as RFC 9110 requires; the token must be
/// exact.
pub(crate) fn bearer_matches(expected: &TokenDigest, authorization: Option<&HeaderValue>) -> bool {
    bearer_token(authorization).is_some_and(|token| bool::from(digest(token).ct_eq(expected)))
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case, surrounding
/// spaces trimmed); `None` for any other header or none.
pub(crate) fn bearer_token(authorization: Option<&HeaderValue>) -> Option<&[u8]> {
    let bytes = authorization?.as_bytes();
    let space = bytes.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = bytes.split_at(space);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The middleware body: lets the request through when no token is configured or the right one
/// is presented, and answers 401 otherwise without running the handler.
pub(crate) async fn require_bearer(
    expected: Option<TokenDigest>,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if let Some(expected) = &expected {
        if !bearer_matches(expected, req.headers().get(header::AUTHORIZATION)) {
            return Ok(req.into_response(ApiError::unauthorized().error_response()));
        }
    }
    next.call(req).await
}
