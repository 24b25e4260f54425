//! The admin API on `listen.admin`: consumers and keys in the store, budgets and spend, and
//! read-only views (effective config, targets, recent usage, audit log). JSON in and out,
//! errors in the OpenAI shape, described by the OpenAPI document at `/admin/v1/openapi.json`.
//!
//! Signed in with an admin token (`Authorization: Bearer`, compared by digest) or, with
//! `admin.oidc_group`, an OIDC token of a member of that group. Every write names its actor in
//! the audit log. Writes go to the database and are then compiled into this node's snapshot
//! before the answer, so a key created here works here as soon as it is returned.

pub mod client;
mod console;
mod consumers;
mod keys;
mod signin;
mod views;

pub use signin::{CALLBACK_PATH, ConsoleSessions};

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::auth::keys::KeyDigest;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::sync::StoreSync;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/admin/v1/openapi.json", get(views::openapi))
        .route(
            "/admin/v1/consumers",
            get(consumers::list).post(consumers::create),
        )
        .route(
            "/admin/v1/consumers/{name}",
            get(consumers::get)
                .patch(consumers::update)
                .delete(consumers::delete),
        )
        .route(
            "/admin/v1/consumers/{name}/keys",
            get(keys::list).post(keys::create),
        )
        .route("/admin/v1/keys/{id}", get(keys::get).patch(keys::update))
        .route("/admin/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/v1/keys/{id}/spend", get(keys::spend))
        .route("/admin/v1/config", get(views::config))
        .route("/admin/v1/targets", get(views::targets))
        .route("/admin/v1/usage", get(views::usage))
        .route("/admin/v1/audit", get(views::audit))
        .route("/admin/v1/export", get(views::export))
        .route("/admin/v1/overview", get(console::overview))
        .route("/admin/v1/logs", get(console::logs))
        .route("/admin/v1/usage/daily", get(console::usage_by_day))
        .route("/admin/v1/playground", post(console::playground))
        .route("/admin/v1/catalog", get(console::catalog))
        .route("/admin/v1/directory", get(console::directory))
        .route("/admin/v1/sign-in", get(signin::methods))
        .route("/console/oidc/login", get(signin::login))
        .route(CALLBACK_PATH, get(signin::callback))
        .route("/console/oidc/sign-out", post(signin::sign_out))
        .route("/", get(|| console::asset(None)))
        .route("/console/{file}", get(|p| console::asset(Some(p))))
        .fallback(|| async { AdminError::NotFound("no such admin endpoint".into()) })
        .with_state(state)
}

/// An admin API error: its status and OpenAI-style body.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no admin token: send `Authorization: Bearer <admin token>`")]
    MissingToken,
    #[error("invalid admin token")]
    InvalidToken,
    #[error("this identity is not an admin")]
    NotAdmin,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the admin API needs a store (`store:`)")]
    NoStore,
    #[error("the store is unavailable, nothing was changed: {0}")]
    StoreDown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdminError {
    fn status_and_code(&self) -> (StatusCode, &'static str, &'static str) {
        use AdminError::*;
        match self {
            MissingToken => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing_admin_token",
            ),
            InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_admin_token",
            ),
            NotAdmin => (StatusCode::FORBIDDEN, "permission_error", "not_admin"),
            Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "idempotency_key_reused",
            ),
            TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "body_too_large",
            ),
            NoStore => (StatusCode::SERVICE_UNAVAILABLE, "api_error", "no_store"),
            StoreDown(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "store_unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
            ),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => AdminError::StoreDown(m),
            StoreError::NotFound(what) => AdminError::NotFound(format!("{what} not found")),
            StoreError::Conflict(m) => AdminError::Conflict(m),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.status_and_code();
        let body = json!({"error": {"message": self.to_string(), "type": kind, "code": code}});
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, AdminError::TooLarge(_)) {
            crate::error::close_connection(&mut response);
        }
        response
    }
}

/// Who makes an admin request: `token:<name>` or `oidc:<user>`, as the audit log shows it.
pub struct Admin {
    pub actor: String,
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AdminError> {
        let snapshot = state.snapshot();
        let authorization = parts.headers.get(header::AUTHORIZATION);
        // The console signed in through the provider: its session cookie, with the header a
        // cross-site form cannot send.
        if authorization.is_none()
            && snapshot.admin.console_sign_in.is_some()
            && let Some(cookie) = signin::session_cookie(&parts.headers)
        {
            if !parts.headers.contains_key(signin::CONSOLE_HEADER) {
                return Err(AdminError::MissingToken);
            }
            let actor = state
                .console_sessions
                .actor(cookie)
                .ok_or(AdminError::InvalidToken)?;
            return Ok(Admin { actor });
        }
        let token = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(AdminError::MissingToken)?;
        if let Some(name) = snapshot.admin.tokens.get(&KeyDigest::of(token)) {
            return Ok(Admin {
                actor: format!("token:{name}"),
            });
        }
        if let (Some(group), Some(oidc)) = (&snapshot.admin.oidc_group, &snapshot.oidc)
            && crate::auth::oidc::looks_like_jwt(token)
        {
            let identity = oidc
                .verify(token)
                .await
                .map_err(|_| AdminError::InvalidToken)?;
            if !identity.groups.iter().any(|g| g == group) {
                return Err(AdminError::NotAdmin);
            }
            return Ok(Admin {
                actor: format!("oidc:{}", identity.username),
            });
        }
        Err(AdminError::InvalidToken)
    }
}

/// A JSON body, size-limited, read with the path of the field that is wrong on an error
/// (unknown fields are refused).
pub struct Body<T> {
    pub value: T,
    /// The raw body, for the `Idempotency-Key` fingerprint.
    pub raw: bytes::Bytes,
}

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<AppState>> for Body<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, AdminError> {
        let limit = state.snapshot().admin.max_body;
        let raw = axum::body::to_bytes(req.into_body(), limit as usize)
            .await
            .map_err(|_| AdminError::TooLarge(limit))?;
        let raw = if raw.iter().all(u8::is_ascii_whitespace) {
            bytes::Bytes::from_static(b"{}")
        } else {
            raw
        };
        let mut de = serde_json::Deserializer::from_slice(&raw);
        let value = serde_path_to_error::deserialize(&mut de).map_err(invalid_body)?;
        Ok(Body { value, raw })
    }
}

/// The store behind the admin API.
fn store_of(state: &AppState) -> Result<&Arc<StoreSync>, AdminError> {
    state.store.as_ref().ok_or(AdminError::NoStore)
}

/// After a write: this node compiles it in before answering. The write itself is done; if
/// compiling it in fails for now, the poll brings it in later.
async fn caught_up(state: &Arc<AppState>) {
    if let Some(sync) = &state.store
        && let Err(e) = sync.catch_up(state).await
    {
        tracing::warn!(error = %e, "an admin write is stored but not yet compiled in");
    }
}

/// Work over the request ring (it grows with the ring): on the blocking pool, never on the
/// async workers.
async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))
}

/// `?limit=` within 1..=1000 (default 100).
fn page_limit(limit: Option<i64>) -> Result<i64, AdminError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(AdminError::Invalid(format!(
            "limit must be between 1 and 1000, not {n}"
        ))),
    }
}

/// A duration as people write them (`90s`, `12h`, `30d`).
fn duration(field: &str, text: &str) -> Result<std::time::Duration, AdminError> {
    humantime::parse_duration(text).map_err(|e| {
        AdminError::Invalid(format!(
            "{field}: {text:?} is not a duration like 30s, 12h or 30d ({e})"
        ))
    })
}

/// An `Idempotency-Key` and the fingerprint of the request that came with it.
struct Idempotent {
    key: String,
    fingerprint: String,
}

impl Idempotent {
    /// The request's key, if it sent one (at most 255 visible characters).
    fn of(
        headers: &axum::http::HeaderMap,
        what: &str,
        raw: &[u8],
    ) -> Result<Option<Idempotent>, AdminError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                AdminError::Invalid("Idempotency-Key must be 1 to 255 visible characters".into())
            })?;
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(what.as_bytes());
        hash.update([0]);
        hash.update(raw);
        Ok(Some(Idempotent {
            key: key.to_owned(),
            fingerprint: hex::encode(hash.finalize()),
        }))
    }

    fn for_store(&self) -> crate::store::Idempotency<'_> {
        crate::store::Idempotency {
            key: &self.key,
            fingerprint: &self.fingerprint,
        }
    }

    /// The answer already given to this key: replayed for the same request (a key's secret
    /// is not kept, so it is not in the replay), refused for another.
    async fn replay(
        &self,
        sync: &StoreSync,
        status: StatusCode,
    ) -> Result<Option<Response>, AdminError> {
        match sync.store.idempotent_answer(&self.key).await? {
            None => Ok(None),
            Some((fingerprint, _, _)) if fingerprint != self.fingerprint => {
                Err(AdminError::IdempotencyMismatch)
            }
            Some((_, _, mut answer)) => {
                if let Some(object) = answer.as_object_mut()
                    && object.contains_key("prefix")
                {
                    object.insert("secret".into(), json!(null));
                    object.insert(
                        "note".into(),
                        json!(
                            "replayed: the secret is shown only once; rotate the key if it was lost"
                        ),
                    );
                }
                Ok(Some(
                    (
                        status,
                        [("idempotent-replayed", "true")],
                        axum::Json(answer),
                    )
                        .into_response(),
                ))
            }
        }
    }
}

/// A JSON value into `T`, with the path of the field that is wrong on an error.
fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, AdminError> {
    serde_path_to_error::deserialize(value).map_err(invalid_body)
}

/// A body that does not read, with the path of the field at fault.
fn invalid_body<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> AdminError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." {
        AdminError::Invalid(format!("invalid body: {inner}"))
    } else {
        AdminError::Invalid(format!("invalid body at {path}: {inner}"))
    }
}
