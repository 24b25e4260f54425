//! The one error type of the request path. Each variant knows its HTTP status and its
//! OpenAI-style `type`/`code`, and renders as `{"error": {"message", "type", "param", "code"}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no API key: send it in the `apikey` header or as `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key has expired")]
    KeyExpired,
    #[error("this API key has been revoked")]
    KeyRevoked,
    #[error("this API key was rotated and its grace period is over: use the new secret")]
    KeyRotated,
    /// The reason (expired, bad signature, wrong audience, ...) is for the log, not the client.
    #[error("invalid or expired bearer token")]
    InvalidToken(String),
    /// A trusted front end's signed user header is missing or does not verify; the reason
    /// is for the log.
    #[error("the front end's signed user header is missing or invalid")]
    InvalidSignedUser(String),
    #[error("route {route:?} requires membership in one of the groups: {groups}")]
    RouteForbidden { route: String, groups: String },
    #[error("you are not allowed to use model {0:?}")]
    ModelForbidden(String),
    #[error("the model {0:?} does not exist or is not served here")]
    ModelNotFound(String),
    #[error("you must provide a model parameter")]
    ModelMissing,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: u64 },
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The client went away before the answer's head was sent (only ever logged).
    #[error("the client closed the connection before the answer")]
    ClientClosed,
    /// The gateway shut down and its grace period ended before this answer did.
    #[error("the gateway shut down before the answer was complete")]
    ShutdownCut,
    #[error("{0}")]
    PromptBlocked(String),
    /// A limit policy refused the request; it was not sent.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
        headers: crate::policy::limits::LimitHeaders,
    },
    /// Rate limits are configured to fail closed and their store cannot be reached.
    #[error("rate limiting is unavailable; try again shortly")]
    LimiterUnavailable,
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The provider refused the prompt on safety grounds (Azure's `content_filter` shape).
    #[error("the prompt was blocked by the provider's safety filter ({0})")]
    ContentFiltered(String),
    /// Every target of the model is out (open circuits) for now.
    #[error("no target of model {model:?} is available right now")]
    NoTargetAvailable {
        model: String,
        retry_after: Option<Duration>,
    },
    /// The model's provider is configured but cannot be used (e.g. no API key).
    #[error("this model is unavailable: {0}")]
    ProviderUnavailable(String),
    #[error("upstream provider {provider:?} is unreachable")]
    UpstreamUnreachable { provider: String },
    #[error("upstream provider {provider:?} timed out ({phase})")]
    UpstreamTimeout {
        provider: String,
        phase: &'static str,
    },
    /// The upstream answered with an error status; `message` is already free of secrets.
    #[error("upstream provider {provider:?} answered {status}: {message}")]
    UpstreamStatus {
        provider: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The upstream answered something that is not what its protocol promises.
    #[error("upstream provider {provider:?} sent an invalid response: {detail}")]
    UpstreamProtocol { provider: String, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            MissingKey | InvalidKey | KeyExpired | KeyRevoked | KeyRotated | InvalidToken(_)
            | InvalidSignedUser(_) => StatusCode::UNAUTHORIZED,
            RouteForbidden { .. } | ModelForbidden(_) => StatusCode::FORBIDDEN,
            ModelNotFound(_) | NotFound(_) => StatusCode::NOT_FOUND,
            ModelMissing | InvalidRequest(_) | ContentFiltered(_) | PromptBlocked(_) => {
                StatusCode::BAD_REQUEST
            }
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProviderUnavailable(_) | NoTargetAvailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            // nginx's 499: no one receives it, but logs and metrics say what happened.
            ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ShutdownCut => StatusCode::SERVICE_UNAVAILABLE,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            UpstreamUnreachable { .. } | UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamStatus { status, .. } => upstream_status_for_client(*status),
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingKey | InvalidKey | KeyExpired | KeyRevoked | KeyRotated | InvalidToken(_)
            | InvalidSignedUser(_) => "authentication_error",
            RouteForbidden { .. } | ModelForbidden(_) => "permission_error",
            ModelNotFound(_)
            | NotFound(_)
            | ModelMissing
            | InvalidRequest(_)
            | BodyTooLarge { .. }
            | BodyTimeout(_)
            | ClientClosed
            | HeadersTooLarge { .. }
            | MethodNotAllowed { .. }
            | ContentFiltered(_)
            | PromptBlocked(_) => "invalid_request_error",
            RateLimited { .. } => "rate_limit_error",
            LimiterUnavailable => "api_error",
            UpstreamStatus { status, .. }
                if upstream_status_for_client(*status).is_client_error() =>
            {
                if *status == 429 {
                    "rate_limit_error"
                } else {
                    "invalid_request_error"
                }
            }
            ProviderUnavailable(_)
            | NoTargetAvailable { .. }
            | UpstreamUnreachable { .. }
            | UpstreamTimeout { .. }
            | UpstreamStatus { .. }
            | UpstreamProtocol { .. } => "upstream_error",
            Internal(_) | ShutdownCut => "api_error",
        }
    }

    /// OpenAI's `error.code`; also what the request log records.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingKey => "missing_api_key",
            InvalidKey => "invalid_api_key",
            KeyExpired => "api_key_expired",
            KeyRevoked => "api_key_revoked",
            KeyRotated => "api_key_rotated",
            InvalidToken(_) => "invalid_token",
            InvalidSignedUser(_) => "invalid_user_token",
            RouteForbidden { .. } => "route_forbidden",
            ModelForbidden(_) => "model_not_allowed",
            ModelNotFound(_) => "model_not_found",
            ModelMissing => "missing_model",
            InvalidRequest(_) => "invalid_request",
            BodyTooLarge { .. } => "body_too_large",
            BodyTimeout(_) => "body_timeout",
            ClientClosed => "client_disconnected",
            ShutdownCut => "shutdown",
            HeadersTooLarge { .. } => "headers_too_large",
            NotFound(_) => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            ContentFiltered(_) => "content_filter",
            PromptBlocked(_) => "prompt_blocked",
            RateLimited { .. } => "rate_limit_exceeded",
            LimiterUnavailable => "rate_limiter_unavailable",
            ProviderUnavailable(_) => "provider_unavailable",
            NoTargetAvailable { .. } => "no_target_available",
            UpstreamUnreachable { .. } => "upstream_unreachable",
            UpstreamTimeout { .. } => "upstream_timeout",
            UpstreamStatus { status: 429, .. } => "upstream_rate_limited",
            UpstreamStatus {
                status: 503 | 529, ..
            } => "upstream_overloaded",
            UpstreamStatus { .. } => "upstream_error",
            UpstreamProtocol { .. } => "upstream_protocol_error",
            Internal(_) => "internal_error",
        }
    }

    /// What the request log records: the client's message, or more where the client must not
    /// learn more (why a token was refused).
    pub fn log_detail(&self) -> String {
        match self {
            GatewayError::InvalidToken(reason) => format!("invalid bearer token: {reason}"),
            GatewayError::InvalidSignedUser(reason) => reason.clone(),
            other => other.to_string(),
        }
    }

    /// The OpenAI-style JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.error_type(),
                "param": null,
                "code": self.code(),
            }
        })
    }
}

/// What the client sees for an upstream error status: its own request's faults pass through,
/// the gateway's own problems with the upstream become 502/504.
fn upstream_status_for_client(status: u16) -> StatusCode {
    match status {
        // The client's request was at fault; the upstream's words help them fix it.
        400 | 404 | 409 | 413 | 422 | 429 => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        408 | 504 => StatusCode::GATEWAY_TIMEOUT,
        // Overloaded (Anthropic says 529): retryable, and clients know 503 for that.
        503 | 529 => StatusCode::SERVICE_UNAVAILABLE,
        // 401/403 mean the gateway's own provider key was refused: never tell the client its
        // key is bad. 5xx and anything unexpected are the upstream's failure.
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Marks `response` as the last on its connection (`Connection: close`): for answers given
/// before the request body was read whole, so that the client sends its next request on a
/// new connection rather than into one that is being closed.
pub fn close_connection(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let GatewayError::UpstreamStatus {
            retry_after: Some(after),
            ..
        }
        | GatewayError::NoTargetAvailable {
            retry_after: Some(after),
            ..
        } = &self
            && let Ok(v) = HeaderValue::from_str(&after.as_secs_f64().ceil().max(1.0).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let GatewayError::RateLimited {
            retry_after,
            headers,
            ..
        } = &self
        {
            let h = response.headers_mut();
            if let Ok(v) =
                HeaderValue::from_str(&retry_after.as_secs_f64().ceil().max(1.0).to_string())
            {
                h.insert(header::RETRY_AFTER, v);
            }
            for (name, value) in headers {
                h.insert(name.clone(), value.clone());
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_auth_failures_are_not_the_clients_fault() {
        let e = GatewayError::UpstreamStatus {
            provider: "p".into(),
            status: 401,
            message: "bad key".into(),
            retry_after: None,
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e.error_type(), "upstream_error");
        let e = GatewayError::UpstreamStatus {
            provider: "p".into(),
            status: 429,
            message: "slow".into(),
            retry_after: None,
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.error_type(), "rate_limit_error");
    }

    #[test]
    fn body_has_the_openai_shape() {
        let body = GatewayError::ModelForbidden("gemma3:1b".into()).body();
        assert_eq!(body["error"]["type"], "permission_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("gemma3:1b")
        );
    }
}
