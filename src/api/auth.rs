//! Inbound authentication: `Authorization: Bearer`, `x-api-key` (Anthropic SDK style) and
//! the predecessor's `x-internal-auth` all carry the same key, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, RequestCtx};
use crate::error::{ErrorCode, ProxyError};
use crate::keys::AuthFailure;

/// Every key the request presents, from every accepted header.
fn presented_keys(headers: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .into_iter()
        .filter_map(|v| {
            let b = v.as_bytes();
            (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ")).then(|| b[7..].trim_ascii())
        });
    let plain = ["x-api-key", "x-internal-auth"]
        .into_iter()
        .flat_map(move |h| {
            headers
                .get_all(h)
                .into_iter()
                .map(|v| v.as_bytes().trim_ascii())
        });
    bearer.chain(plain).filter(|k| !k.is_empty())
}

/// Identifies the caller (master key, virtual key, or anonymous when no key is
/// configured) and hands the principal to the handler; anything else is a 401.
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    ctx: RequestCtx,
    mut req: Request,
    next: Next,
) -> Response {
    match state.keys.identify(presented_keys(req.headers())) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(failure) => {
            let message = match failure {
                AuthFailure::Invalid => "invalid API key",
                AuthFailure::Missing => {
                    "missing API key: send `Authorization: Bearer <key>`, `x-api-key: <key>` or `x-internal-auth: <key>`"
                }
            };
            ApiError::new(ProxyError::new(ErrorCode::Unauthorized, message), &ctx).into_response()
        }
    }
}
