//! HTTPS on the listeners: a rustls server config built from PEM files (TLS 1.2 and 1.3, ALPN
//! h2 and http/1.1, optional client certificates against a CA bundle), swapped atomically when
//! the files change or on SIGHUP. A handshake uses the config current when it starts, so a
//! rotation drops no connection; a broken new certificate or key is refused and the old one
//! keeps serving.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

use crate::config::{ClientAuth, TlsConfig};

/// Why the TLS files cannot be used, with the field they come from.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    /// `cert`, `key` or `client_ca` (under `listen.tls`).
    pub field: &'static str,
    pub message: String,
}

fn error(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        field,
        message: message.into(),
    }
}

/// Reads and checks the files: the chain, the key (matching the leaf), the client CA.
pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&config.cert, "cert")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
        error(
            "key",
            format!("{}: no usable private key ({e})", config.key.display()),
        )
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| error("key", format!("{}: {e}", config.key.display())))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        error(
            "key",
            format!(
                "{} is not the key of the certificate in {}",
                config.key.display(),
                config.cert.display()
            ),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("cert", e.to_string()))?;
    let builder = match (&config.client_ca, config.client_auth) {
        (None, ClientAuth::Auto) => builder.with_no_client_auth(),
        (None, _) => return Err(error("client_ca", "client_auth needs client_ca")),
        (Some(ca), mode) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "client_ca")? {
                roots
                    .add(cert)
                    .map_err(|e| error("client_ca", format!("{}: {e}", ca.display())))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| error("client_ca", format!("{}: {e}", ca.display())))?,
            )
        }
    };
    let mut server = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn certificates(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certificates(path).map_err(|message| error(field, message))
}

/// Every certificate of a PEM file (at least one), for listeners and upstreams alike.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// What deserves a warning about the certificate (it still serves): expired, not valid yet,
/// or expiring within a week.
pub fn certificate_warnings(config: &TlsConfig) -> Vec<String> {
    let Ok(chain) = certificates(&config.cert, "cert") else {
        return Vec::new(); // the errors say it
    };
    let Some(Ok((_, leaf))) = chain
        .first()
        .map(|c| x509_parser::parse_x509_certificate(c))
    else {
        return Vec::new();
    };
    let now = x509_parser::time::ASN1Time::now();
    let validity = leaf.validity();
    let path = config.cert.display();
    if validity.not_after < now {
        vec![format!(
            "{path}: the certificate expired on {}",
            validity.not_after
        )]
    } else if validity.not_before > now {
        vec![format!(
            "{path}: the certificate is not valid before {}",
            validity.not_before
        )]
    } else if validity
        .time_to_expiration()
        .is_some_and(|left| left.whole_days() < 7)
    {
        vec![format!(
            "{path}: the certificate expires on {}",
            validity.not_after
        )]
    } else {
        Vec::new()
    }
}

/// The one certificate this listener presents (whatever name the client asks for).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS config in force, and where it comes from.
pub struct TlsServer {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl TlsServer {
    pub fn new(settings: &TlsConfig) -> Result<Self, TlsError> {
        for warning in certificate_warnings(settings) {
            tracing::warn!("listen.tls.cert: {warning}");
        }
        Ok(Self {
            current: ArcSwap::new(server_config(settings)?),
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &TlsConfig {
        &self.settings
    }

    /// Reads the files again; on a problem the config in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = server_config(&self.settings)?;
        for warning in certificate_warnings(&self.settings) {
            tracing::warn!("listen.tls.cert: {warning}");
        }
        self.current.store(next);
        Ok(())
    }

    /// An acceptor with the config in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}
