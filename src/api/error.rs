//! Rendering [`ProxyError`] as the JSON envelope, with the request id.

use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use super::RequestCtx;
use crate::error::ProxyError;

/// An error bound to the request it answers.
pub struct ApiError {
    pub error: ProxyError,
    pub request_id: std::sync::Arc<str>,
}

impl ApiError {
    pub fn new(error: ProxyError, ctx: &RequestCtx) -> Self {
        Self {
            error,
            request_id: ctx.id.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.error.envelope(&self.request_id).to_string();
        let mut resp = (
            self.error.code.status(),
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(after) = self.error.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        if self.error.code == crate::error::ErrorCode::Unauthorized {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
