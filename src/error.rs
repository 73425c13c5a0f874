//! The one error type that reaches clients, with the stable codes they program against.

use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

/// Stable error codes. Each maps to exactly one HTTP status; clients switch on the code,
/// never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimit,
    /// A virtual key spent its `max_budget_usd` for the period (429).
    BudgetExceeded,
    ProviderError,
    Unavailable,
    Timeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimit,
        ErrorCode::BudgetExceeded,
        ErrorCode::ProviderError,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimit | ErrorCode::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ProviderError => StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimit => "RATE_LIMIT",
            ErrorCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ErrorCode::ProviderError => "PROVIDER_ERROR",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Timeout => "TIMEOUT",
        }
    }

    /// The OpenAI-style `type`, so SDKs that switch on it (e.g. to raise
    /// `AuthenticationError`) behave as they would against OpenAI itself.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::PayloadTooLarge => "invalid_request_error",
            ErrorCode::Unauthorized => "authentication_error",
            ErrorCode::Forbidden => "permission_error",
            ErrorCode::NotFound => "not_found_error",
            ErrorCode::RateLimit => "rate_limit_error",
            // OpenAI's type for a spent quota.
            ErrorCode::BudgetExceeded => "insufficient_quota",
            ErrorCode::ProviderError => "api_error",
            ErrorCode::Unavailable => "service_unavailable_error",
            ErrorCode::Timeout => "timeout_error",
        }
    }
}

/// An error on its way to a client: a code, a human message that never contains a secret,
/// and optionally the offending request field and the upstream's own status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProxyError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
    pub upstream_status: Option<u16>,
    pub retry_after: Option<Duration>,
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            upstream_status: None,
            retry_after: None,
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorCode::InvalidRequest, message);
        e.param = Some(param.into());
        e
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The error object (`message`, `type`, `code`, `param`, `request_id`,
    /// `upstream_status`) as clients see it.
    pub fn object<'a>(&'a self, request_id: &'a str) -> ErrorObject<'a> {
        ErrorObject {
            message: &self.message,
            kind: self.code.error_type(),
            code: self.code,
            param: self.param.as_deref(),
            request_id,
            upstream_status: self.upstream_status,
        }
    }

    /// The JSON envelope every error response and every stream error event carries.
    pub fn envelope(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({ "error": self.object(request_id) })
    }
}

/// The error object inside every error response (`{"error": …}`) and stream error event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorObject<'a> {
    /// Human-readable; never contains a secret.
    pub message: &'a str,
    /// OpenAI-style error type, so SDKs raise their usual exception classes.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The stable code to switch on.
    pub code: ErrorCode,
    /// The offending request field, for invalid requests.
    pub param: Option<&'a str>,
    /// The request (trace) id, also in the `x-request-id` header.
    pub request_id: &'a str,
    /// The upstream's HTTP status, when the upstream failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
}

/// `{"error": {…}}`: the body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorObject<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_status_and_name() {
        let expected = [
            (400, "INVALID_REQUEST"),
            (401, "UNAUTHORIZED"),
            (403, "FORBIDDEN"),
            (404, "NOT_FOUND"),
            (413, "PAYLOAD_TOO_LARGE"),
            (429, "RATE_LIMIT"),
            (429, "BUDGET_EXCEEDED"),
            (502, "PROVIDER_ERROR"),
            (503, "UNAVAILABLE"),
            (504, "TIMEOUT"),
        ];
        for (code, (status, name)) in ErrorCode::ALL.iter().zip(expected) {
            assert_eq!(code.status().as_u16(), status);
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            let env = ProxyError::new(*code, "m").envelope("rid-1");
            assert_eq!(env["error"]["code"], name);
            assert_eq!(env["error"]["request_id"], "rid-1");
            assert_eq!(env["error"]["message"], "m");
            assert!(env["error"]["type"].is_string());
        }
    }
}
