//! The console's browser sign-in through the OIDC provider (`admin.console_sign_in`): the
//! authorization-code flow with PKCE, the gateway exchanging the code and checking the ID
//! token, then a console session for the browser in an HttpOnly, SameSite=Strict cookie.
//! The page never holds a provider token and never talks to anything but the gateway (the
//! provider's sign-in page is a top-level navigation).
//!
//! Sessions live in this process (bounded), so a restart signs everyone out; with several
//! replicas behind one address, the console needs sticky sessions. A request signed in by the
//! cookie must also carry `X-Tollgate-Console` (a header a cross-site form cannot send).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::oidc::CodeExchange;
use crate::state::AppState;

/// Where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/console/oidc/callback";
/// The session cookie's name.
const COOKIE: &str = "tollgate_console";
/// A sign-in's `state`, bound to the browser that started it (against login CSRF: a callback
/// URL from someone else's sign-in does not sign this browser in).
const SIGN_IN_COOKIE: &str = "tollgate_signin";
/// The header that must come with a cookie-signed request.
pub const CONSOLE_HEADER: &str = "x-tollgate-console";
/// How long a sign-in may take at the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 1_000;
const MAX_SESSIONS: usize = 10_000;

/// A sign-in under way at the provider, by its `state`.
struct Pending {
    code_verifier: String,
    nonce: String,
    redirect_uri: String,
    started: Instant,
}

struct Session {
    actor: String,
    expires: Instant,
}

/// The sign-ins under way and the sessions, by the SHA-256 of their cookie (the cookie itself
/// is never kept).
#[derive(Default)]
pub struct ConsoleSessions {
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl ConsoleSessions {
    /// The admin a session cookie stands for, while it lasts.
    pub fn actor(&self, cookie: &str) -> Option<String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let digest = digest(cookie);
        match sessions.get(&digest) {
            Some(s) if s.expires > Instant::now() => Some(s.actor.clone()),
            Some(_) => {
                sessions.remove(&digest);
                None
            }
            None => None,
        }
    }

    fn start(&self, state: String, pending: Pending) -> Result<(), SignInError> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PENDING {
            map.retain(|_, p| p.started.elapsed() < PENDING_TTL);
        }
        if map.len() >= MAX_PENDING {
            return Err(SignInError::Busy);
        }
        map.insert(state, pending);
        Ok(())
    }

    fn finish(&self, state: &str) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(state)
            .filter(|p| p.started.elapsed() < PENDING_TTL)
    }

    /// A new session; returns its cookie value.
    fn open(&self, actor: String, ttl: Duration) -> Result<String, SignInError> {
        let cookie = random_token(32)?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&cookie),
            Session {
                actor,
                expires: now + ttl,
            },
        );
        Ok(cookie)
    }

    fn close(&self, cookie: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(cookie));
    }
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn random_token(bytes: usize) -> Result<String, SignInError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| SignInError::NoRandomness)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The console session cookie of a request, if it sends one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie_value(headers, COOKIE)
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// Why a sign-in failed: shown to the person signing in on the sign-in form.
#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error("OIDC sign-in is not configured (admin.console_sign_in)")]
    NotConfigured,
    #[error("too many sign-ins under way; try again in a moment")]
    Busy,
    #[error("this sign-in expired or was already used; start again")]
    UnknownState,
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the provider could not be reached: {0}")]
    Provider(String),
    #[error("the provider's ID token was refused: {0}")]
    BadToken(String),
    #[error("{0} is not in the admin group")]
    NotAdmin(String),
    #[error("the system's random generator failed")]
    NoRandomness,
    #[error("this sign-in was not started in this browser; start again")]
    NotStartedHere,
}

/// A redirect (303) to `location`.
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Back to the sign-in form with the reason shown.
fn back_with(error: &SignInError) -> Response {
    tracing::warn!(error = %error, "console sign-in failed");
    let message: String =
        url::form_urlencoded::byte_serialize(error.to_string().as_bytes()).collect();
    see_other(&format!("/?sign_in_error={message}"))
}

/// `GET /admin/v1/sign-in`: which ways of signing in the console offers (no sign-in needed).
pub async fn methods(State(state): State<Arc<AppState>>) -> Response {
    let oidc = state.snapshot().admin.console_sign_in.is_some();
    axum::Json(serde_json::json!({"token": true, "oidc": oidc})).into_response()
}

/// `GET /console/oidc/login`: off to the provider, with a fresh state, nonce and PKCE pair.
pub async fn login(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match start_login(&state, &headers).await {
        Ok((location, state_token)) => {
            let mut response = see_other(&location);
            // Lax: the provider's redirect back is a cross-site top-level navigation.
            let cookie = format!(
                "{SIGN_IN_COOKIE}={state_token}; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age={}",
                PENDING_TTL.as_secs()
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => back_with(&e),
    }
}

async fn start_login(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, String), SignInError> {
    let snapshot = state.snapshot();
    let (Some(settings), Some(oidc)) = (&snapshot.admin.console_sign_in, &snapshot.oidc) else {
        return Err(SignInError::NotConfigured);
    };
    let endpoints = oidc
        .sign_in_endpoints()
        .await
        .map_err(SignInError::Provider)?;
    let redirect_uri = match &settings.redirect_uri {
        Some(uri) => uri.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                })
                .ok_or_else(|| SignInError::Refused("the request names no usable Host".into()))?;
            // The admin listener's own scheme: HTTPS when listen.tls covers it.
            let https = state
                .tls
                .as_ref()
                .is_some_and(|t| t.settings().covers(crate::config::ListenerName::Admin));
            let scheme = if https { "https" } else { "http" };
            format!("{scheme}://{host}{CALLBACK_PATH}")
        }
    };
    let code_verifier = random_token(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
    let state_token = random_token(16)?;
    let nonce = random_token(16)?;
    let mut scopes = settings.scopes.clone();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let mut url = url::Url::parse(&endpoints.authorization)
        .map_err(|e| SignInError::Provider(format!("authorization_endpoint: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &state_token)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    state.console_sessions.start(
        state_token.clone(),
        Pending {
            code_verifier,
            nonce,
            redirect_uri,
            started: Instant::now(),
        },
    )?;
    Ok((url.into(), state_token))
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /console/oidc/callback`: the provider's answer. The code is exchanged, the ID token
/// checked (signature, issuer, audience = our client, nonce, times) and the user's groups
/// must hold `admin.oidc_group`; then a session cookie and back to the console.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let started_here = cookie_value(&headers, SIGN_IN_COOKIE);
    let result = match (started_here, q.state.as_deref()) {
        (Some(mine), Some(theirs)) if bool::from(mine.as_bytes().ct_eq(theirs.as_bytes())) => {
            finish_login(&state, q).await
        }
        _ => Err(SignInError::NotStartedHere),
    };
    let mut response = match result {
        Ok((cookie, ttl, secure)) => {
            let mut response = see_other("/");
            let cookie = format!(
                "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                ttl.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => back_with(&e),
    };
    // The sign-in is over either way.
    if let Ok(clear) = HeaderValue::from_str(&format!(
        "{SIGN_IN_COOKIE}=; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age=0"
    )) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

async fn finish_login(
    state: &AppState,
    q: CallbackQuery,
) -> Result<(String, Duration, bool), SignInError> {
    let snapshot = state.snapshot();
    let (Some(settings), Some(oidc), Some(group)) = (
        &snapshot.admin.console_sign_in,
        &snapshot.oidc,
        &snapshot.admin.oidc_group,
    ) else {
        return Err(SignInError::NotConfigured);
    };
    let pending = q
        .state
        .as_deref()
        .and_then(|s| state.console_sessions.finish(s))
        .ok_or(SignInError::UnknownState)?;
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(SignInError::Refused(
            format!("{error} {detail}").trim().to_owned(),
        ));
    }
    let code = q
        .code
        .ok_or_else(|| SignInError::Refused("no code in the answer".into()))?;
    let id_token = oidc
        .exchange_code(CodeExchange {
            code: &code,
            code_verifier: &pending.code_verifier,
            redirect_uri: &pending.redirect_uri,
            client_id: &settings.client_id,
            client_secret: settings.client_secret.as_deref(),
        })
        .await
        .map_err(SignInError::Provider)?;
    let (identity, claims) = oidc
        .verify_for(&id_token, std::slice::from_ref(&settings.client_id))
        .await
        .map_err(|e| SignInError::BadToken(e.to_string()))?;
    let nonce = claims.get("nonce").and_then(|n| n.as_str());
    if nonce != Some(pending.nonce.as_str()) {
        return Err(SignInError::BadToken(
            "its nonce is not this sign-in's".into(),
        ));
    }
    if !identity.groups.iter().any(|g| g == group) {
        return Err(SignInError::NotAdmin(identity.username));
    }
    let actor = format!("oidc:{}", identity.username);
    tracing::info!(target: "tollgate::audit", actor = %actor, "signed in to the console");
    let cookie = state.console_sessions.open(actor, settings.session_ttl)?;
    Ok((
        cookie,
        settings.session_ttl,
        pending.redirect_uri.starts_with("https:"),
    ))
}

/// `POST /console/oidc/sign-out`: ends the session and clears its cookie.
pub async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(cookie) = session_cookie(&headers) {
        state.console_sessions.close(cookie);
    }
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "tollgate_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        )],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let sessions = ConsoleSessions::default();
        let cookie = sessions
            .open("oidc:ann".into(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(sessions.actor(&cookie).as_deref(), Some("oidc:ann"));
        assert_eq!(sessions.actor("someone-else's"), None);
        sessions.close(&cookie);
        assert_eq!(sessions.actor(&cookie), None);
        let short = sessions.open("oidc:bob".into(), Duration::ZERO).unwrap();
        assert_eq!(sessions.actor(&short), None);
    }

    #[test]
    fn a_sign_in_state_is_used_once() {
        let sessions = ConsoleSessions::default();
        let pending = || Pending {
            code_verifier: "v".into(),
            nonce: "n".into(),
            redirect_uri: "http://x/console/oidc/callback".into(),
            started: Instant::now(),
        };
        sessions.start("s1".into(), pending()).unwrap();
        assert!(sessions.finish("s1").is_some());
        assert!(sessions.finish("s1").is_none());
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_console=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("tollgate_console="),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}
