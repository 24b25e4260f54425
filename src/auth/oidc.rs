//! OIDC bearer tokens: the provider's keys come from its discovery document and JWKS, are
//! cached, refreshed periodically and when a token names an unknown key (at most every
//! `min_refresh_interval`), and a failed fetch keeps the cached keys working. A token is
//! accepted only with an allowed asymmetric algorithm (never `none` or HS*), a valid signature,
//! the configured issuer, one of the audiences, and valid times (with leeway).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::OidcConfig;

/// Why a token was refused (for the log; the client only hears that it was).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("no key {0:?} in the provider's JWKS")]
    UnknownKey(String),
    #[error("the provider's keys could not be fetched yet")]
    NoKeys,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("invalid claims: {0}")]
    Claims(String),
}

/// The provider's endpoints for a browser sign-in.
#[derive(Debug, Clone)]
pub struct SignInEndpoints {
    pub authorization: String,
    pub token: String,
}

/// What an authorization-code exchange sends.
pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub code_verifier: &'a str,
    pub redirect_uri: &'a str,
    pub client_id: &'a str,
    pub client_secret: Option<&'a str>,
}

/// What a valid token says about its user.
#[derive(Debug, Clone)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
}

pub struct OidcVerifier {
    config: OidcConfig,
    algorithms: Vec<Algorithm>,
    client: reqwest::Client,
    keys: ArcSwap<HashMap<String, (Algorithm, DecodingKey)>>,
    jwks_uri: Mutex<Option<String>>,
    /// The browser sign-in endpoints, once discovered.
    sign_in: Mutex<Option<SignInEndpoints>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Serialises fetches, so a burst of unknown-key tokens makes one request.
    fetching: tokio::sync::Mutex<()>,
    /// Failed discovery or JWKS fetches.
    pub fetch_errors: AtomicU64,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Algorithms a JWKS key can verify; symmetric ones never qualify.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "RS384" => Some(Algorithm::RS384),
        "RS512" => Some(Algorithm::RS512),
        "PS256" => Some(Algorithm::PS256),
        "PS384" => Some(Algorithm::PS384),
        "PS512" => Some(Algorithm::PS512),
        "ES256" => Some(Algorithm::ES256),
        "ES384" => Some(Algorithm::ES384),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

impl OidcVerifier {
    /// Starts fetching the keys in the background (inside a tokio runtime).
    pub fn start(config: &OidcConfig) -> Arc<Self> {
        let verifier = Arc::new(Self {
            algorithms: config
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a))
                .collect(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            keys: ArcSwap::from_pointee(HashMap::new()),
            jwks_uri: Mutex::new(config.jwks_uri.clone()),
            sign_in: Mutex::new(None),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetch_errors: AtomicU64::new(0),
            config: config.clone(),
        });
        tokio::spawn(refresh_periodically(
            Arc::downgrade(&verifier),
            config.refresh_interval,
        ));
        verifier
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Fetches the keys (discovering the JWKS address first if needed) and swaps them in. On
    /// failure the cached keys stay.
    async fn fetch_keys(&self) -> Result<(), String> {
        let _one_at_a_time = self.fetching.lock().await;
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let result = self.fetch_keys_inner().await;
        if let Err(e) = &result {
            self.fetch_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(issuer = %self.config.issuer, error = %e, "cannot fetch the OIDC provider's keys; cached keys stay in use");
        }
        result
    }

    async fn fetch_keys_inner(&self) -> Result<(), String> {
        let known = self
            .jwks_uri
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let jwks_uri = match known {
            Some(uri) => uri,
            None => {
                let uri = self
                    .discovery()
                    .await?
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("no jwks_uri in the discovery document")?
                    .to_owned();
                *self.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(uri.clone());
                uri
            }
        };
        let set: JwkSet = serde_json::from_value(self.get_json(&jwks_uri).await?)
            .map_err(|e| format!("bad JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            // A key that names no algorithm serves the algorithms of its key type.
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| parse_algorithm(&a.to_string()))
                .unwrap_or_else(|| infer_family(jwk));
            keys.insert(kid, (alg, key));
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable key".into());
        }
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// The provider's discovery document, checked to name this issuer.
    async fn discovery(&self) -> Result<Value, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc: Value = self.get_json(&url).await?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err("the discovery document names another issuer".into());
        }
        Ok(doc)
    }

    /// Where a browser signs in and where its code is exchanged, from the discovery document
    /// (fetched once, then kept).
    pub async fn sign_in_endpoints(&self) -> Result<SignInEndpoints, String> {
        if let Some(known) = self
            .sign_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(known);
        }
        let doc = self.discovery().await?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name} in the discovery document"))
        };
        let endpoints = SignInEndpoints {
            authorization: field("authorization_endpoint")?,
            token: field("token_endpoint")?,
        };
        *self.sign_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoints.clone());
        Ok(endpoints)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for the provider's tokens and
    /// returns the ID token. A confidential client authenticates with HTTP Basic.
    pub async fn exchange_code(&self, exchange: CodeExchange<'_>) -> Result<String, String> {
        let endpoints = self.sign_in_endpoints().await?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", exchange.code)
            .append_pair("redirect_uri", exchange.redirect_uri)
            .append_pair("code_verifier", exchange.code_verifier)
            .append_pair("client_id", exchange.client_id)
            .finish();
        let mut request = self
            .client
            .post(&endpoints.token)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        if let Some(secret) = exchange.client_secret {
            // RFC 6749 2.3.1: both parts form-encoded before Basic.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(exchange.client_id), Some(encode(secret)));
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(format!("token endpoint: HTTP {status} ({error})"));
        }
        body.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                "the token endpoint returned no id_token (is `openid` in the scopes?)".into()
            })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// Whether a fetch triggered by an unknown key may run now.
    fn may_refetch(&self) -> bool {
        self.last_fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= self.config.min_refresh_interval)
    }

    /// An access token: for one of the configured audiences.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_for(token, &self.config.audiences)
            .await
            .map(|(identity, _)| identity)
    }

    /// A token for one of `audiences` (an ID token: the client id), with all its claims.
    pub async fn verify_for(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(Identity, Map<String, Value>), TokenError> {
        // The header's `alg` as written, so `none` (which the JWT library cannot even parse)
        // is refused by name.
        let alg = raw_alg(token).ok_or(TokenError::Malformed)?;
        if !self.config.algorithms.contains(&alg) {
            return Err(TokenError::Algorithm(alg));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let mut entry = self.keys.load().get(&kid).map(|(a, k)| (*a, k.clone()));
        if entry.is_none() && self.may_refetch() {
            let _ = self.fetch_keys().await;
            entry = self.keys.load().get(&kid).map(|(a, k)| (*a, k.clone()));
        }
        let Some((key_alg, key)) = entry else {
            return Err(if self.keys.load().is_empty() {
                TokenError::NoKeys
            } else {
                TokenError::UnknownKey(kid)
            });
        };
        if !same_family(key_alg, header.alg) {
            return Err(TokenError::Algorithm(format!(
                "{:?} with a {key_alg:?} key",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(audiences);
        validation.required_spec_claims = ["exp", "iss", "aud"]
            .map(String::from)
            .into_iter()
            .collect();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{:?}", header.alg)),
                other => TokenError::Claims(format!("{other:?}")),
            })?
            .claims;
        let username = claim(&claims, &self.config.username_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Claims(format!("no {} claim", self.config.username_claim)))?
            .to_owned();
        let groups = self
            .config
            .groups_claim
            .as_deref()
            .and_then(|c| claim(&claims, c))
            .and_then(Value::as_array)
            .map(|gs| {
                gs.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok((Identity { username, groups }, claims))
    }
}

fn raw_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next()?)
        .ok()?;
    serde_json::from_slice::<Value>(&header)
        .ok()?
        .get("alg")?
        .as_str()
        .map(str::to_owned)
}

/// A claim by dotted path (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// The key type's representative algorithm, for keys whose JWK names none.
fn infer_family(jwk: &jsonwebtoken::jwk::Jwk) -> Algorithm {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    match &jwk.algorithm {
        P::EllipticCurve(_) => Algorithm::ES256,
        P::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => Algorithm::RS256,
    }
}

fn same_family(a: Algorithm, b: Algorithm) -> bool {
    use Algorithm::*;
    let family = |x| match x {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => 0,
        ES256 | ES384 => 1,
        EdDSA => 2,
        _ => 3,
    };
    family(a) == family(b) && family(a) != 3
}

async fn refresh_periodically(verifier: Weak<OidcVerifier>, every: Duration) {
    let mut retry = Duration::from_secs(2);
    loop {
        // Stops once the config that made this verifier is gone.
        let Some(v) = verifier.upgrade() else { return };
        let failed = v.fetch_keys().await.is_err();
        drop(v);
        // While the provider cannot be reached, retry with a growing pause; else wait the interval.
        let pause = if failed {
            retry = (retry * 2).min(every);
            retry
        } else {
            retry = Duration::from_secs(2);
            every
        };
        tokio::time::sleep(pause).await;
    }
}

/// Whether a bearer value looks like a JWT (three base64url parts), rather than an API key.
pub fn looks_like_jwt(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_tokens_from_keys_and_refuses_symmetric_algorithms() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(
            looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
            "alg none has an empty signature"
        );
        assert!(!looks_like_jwt("dev-key-12345"));
        assert!(!looks_like_jwt("sk-proj.abc"));
        assert!(parse_algorithm("HS256").is_none() && parse_algorithm("none").is_none());
        assert!(
            same_family(Algorithm::RS256, Algorithm::PS256)
                && !same_family(Algorithm::RS256, Algorithm::ES256)
        );
    }
}
