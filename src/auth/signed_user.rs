//! A front end's signed statement of who its user is: OpenWebUI sends, with
//! `FORWARD_USER_INFO_HEADER_JWT_SECRET` set, `X-OpenWebUI-User-Jwt`: an HS256 JWT with `sub`,
//! `email`, `name`, `role`, `iss: open-webui`, `iat` and `exp`. With it, the front end's key
//! alone cannot name users: the signature must hold. The algorithm is pinned to HS256 for this
//! header only (OIDC tokens accept asymmetric algorithms only).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::SignedUserConfig;

pub struct SignedUserHeader {
    pub header: axum::http::HeaderName,
    pub required: bool,
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for SignedUserHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SignedUserHeader")
            .field("header", &self.header)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    email: String,
}

impl SignedUserHeader {
    pub fn new(config: &SignedUserConfig) -> Result<Self, String> {
        if config.secret.len() < 16 {
            return Err("the shared secret must be at least 16 characters".into());
        }
        let header = axum::http::HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| format!("{:?} is not a valid header name", config.header))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_aud = false;
        validation.leeway = 30;
        Ok(Self {
            header,
            required: config.required,
            key: DecodingKey::from_secret(config.secret.as_bytes()),
            validation,
        })
    }

    /// The user's email, if `token` is valid (signature, algorithm, issuer, expiry).
    pub fn verify(&self, token: &str) -> Result<String, String> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims.email.trim().to_ascii_lowercase())
            .map_err(|e| format!("the signed user header is invalid: {e}"))
    }
}
