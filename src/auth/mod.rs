//! Turns request credentials into a [`Caller`]: which consumer is calling, which end user it
//! speaks for (trusted consumers only), and which models that leaves them.

pub mod consumer;
pub mod keys;
pub mod oidc;
pub mod signed_user;

use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName};

use crate::error::GatewayError;
use crate::policy::model_set::ModelSet;
use crate::snapshot::{Consumer, Snapshot};
use keys::{KeyDigest, ManagedKey};

/// The authenticated identity of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whose key authenticated the request.
    pub consumer: Arc<Consumer>,
    /// The end user a trusted consumer asserted, if any.
    pub end_user: Option<EndUser>,
    /// The stored key that authenticated the request, if it came from the store.
    pub key: Option<Arc<ManagedKey>>,
}

impl Caller {
    /// Whose groups and models apply: a trusted consumer acts as the known user it names, and
    /// as itself for an unknown user (who so never gets more than the trusted consumer has).
    pub fn acting(&self) -> &Arc<Consumer> {
        self.end_user
            .as_ref()
            .and_then(|u| u.consumer.as_ref())
            .unwrap_or(&self.consumer)
    }

    /// The models this request may use.
    pub fn models(&self) -> &ModelSet {
        &self.acting().models
    }
}

#[derive(Debug, Clone)]
pub struct EndUser {
    /// As sent (trimmed, lower-cased).
    pub email: String,
    /// The consumer whose `emails` hold it; `None` for an unknown user.
    pub consumer: Option<Arc<Consumer>>,
}

// Names built at compile time: a lookup by `&str` parses the name on every request.
const APIKEY: HeaderName = HeaderName::from_static("apikey");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The API key of a request: `apikey`, `Authorization: Bearer`, or Anthropic-style `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(APIKEY) {
        return v.to_str().ok().map(str::trim);
    }
    if let Some(v) = headers.get(AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The end user a trusted consumer names: from its signed header when it signs users (a
/// plain header is then refused while signing is required), else from the plain header.
fn named_user(consumer: &Consumer, headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let plain = consumer
        .user_header
        .as_ref()
        .and_then(|name| headers.get(name));
    if let Some(signed) = &consumer.signed_user {
        if let Some(token) = headers.get(&signed.header) {
            let token = token
                .to_str()
                .map_err(|_| GatewayError::InvalidSignedUser("not text".into()))?;
            return signed
                .verify(token)
                .map(Some)
                .map_err(GatewayError::InvalidSignedUser);
        }
        if signed.required {
            return match plain {
                Some(_) => Err(GatewayError::InvalidSignedUser(format!(
                    "an unsigned user header from a front end that must sign (expected {})",
                    signed.header
                ))),
                None => Ok(None),
            };
        }
    }
    Ok(plain
        .and_then(|v| v.to_str().ok())
        .map(|email| email.trim().to_ascii_lowercase()))
}

/// A bearer token to validate as a JWT: only when OIDC is configured, no `apikey` header is
/// sent, and the bearer value has a JWT's shape (anything else is an API key).
fn presented_token<'h>(snapshot: &Snapshot, headers: &'h HeaderMap) -> Option<&'h str> {
    snapshot.oidc.as_ref()?;
    if headers.contains_key(APIKEY) {
        return None;
    }
    presented_key(headers).filter(|v| oidc::looks_like_jwt(v))
}

/// The names of a verified client certificate: its subject's common name and its DNS, email
/// and URI alternative names.
#[derive(Debug, Clone, Default)]
pub struct ClientCertificate {
    pub names: Vec<String>,
}

impl ClientCertificate {
    pub fn from_der(der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        let mut names = Vec::new();
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            names.extend(
                cert.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
            );
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(n)
                        | GeneralName::RFC822Name(n)
                        | GeneralName::URI(n) => names.push((*n).to_owned()),
                        _ => {}
                    }
                }
            }
        }
        Self { names }
    }
}

/// 401 unless the request carries a key of a configured consumer, or (with OIDC) a valid
/// token of a known user (or of anyone, when an anonymous consumer is configured), or comes
/// over a connection whose verified client certificate names a consumer.
pub async fn authenticate(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    client_cert: Option<&ClientCertificate>,
) -> Result<Caller, GatewayError> {
    if let (Some(token), Some(verifier)) =
        (presented_token(snapshot, headers), snapshot.oidc.as_ref())
    {
        let identity = verifier
            .verify(token)
            .await
            .map_err(|e| GatewayError::InvalidToken(e.to_string()))?;
        let consumer = match snapshot.consumer_by_custom_id(&identity.username) {
            Some(c) => c,
            None => snapshot.anonymous_consumer().ok_or_else(|| {
                GatewayError::InvalidToken(format!(
                    "no consumer has custom_id {:?}",
                    identity.username
                ))
            })?,
        };
        // A token speaks for its own user: no trusted end-user header here.
        return Ok(Caller {
            consumer: snapshot.with_token_groups(consumer, &identity.groups),
            end_user: None,
            key: None,
        });
    }
    let Some(key) = presented_key(headers).filter(|k| !k.is_empty()) else {
        // No key and no token: the client certificate, if it names a consumer.
        return client_cert
            .and_then(|cert| snapshot.consumer_by_certificate(&cert.names))
            .map(|consumer| Caller {
                consumer,
                end_user: None,
                key: None,
            })
            .ok_or(GatewayError::MissingKey);
    };
    let entry = snapshot
        .key_entry(&KeyDigest::of(key))
        .ok_or(GatewayError::InvalidKey)?;
    entry.admit(crate::policy::limits::now_ms() as i64)?;
    let consumer = entry.consumer.clone();

    let end_user = named_user(&consumer, headers)?
        .filter(|email| !email.is_empty() && email.len() <= 320)
        .map(|email| EndUser {
            // A user outside what the front end may act for gets the front end's own rights.
            consumer: snapshot
                .consumer_by_email(&email)
                .filter(|user| consumer.may_act_for(user)),
            email,
        });
    Ok(Caller {
        consumer,
        end_user,
        key: entry.managed.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn key_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer abc-def-123"),
        );
        assert_eq!(presented_key(&h), Some("abc-def-123"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_key(&h), None);
        h.insert("apikey", HeaderValue::from_static("k1-k1-k1-k1"));
        assert_eq!(presented_key(&h), Some("k1-k1-k1-k1"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("anthropic-style"));
        assert_eq!(presented_key(&h), Some("anthropic-style"));
    }
}
