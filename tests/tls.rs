//! HTTPS on the listeners, with certificates generated here (rcgen): HTTP/1.1 and HTTP/2 over
//! TLS, curl, a certificate rotated on disk while a stream is in flight (the stream completes,
//! new connections get the new certificate), a broken replacement refused, client
//! certificates (valid, missing, from another CA), and `check` naming bad TLS files.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;
use support::{TestGateway, mock_upstream, standard_config};

/// A CA and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for the gateway (127.0.0.1, localhost): (cert PEM, key PEM).
    fn server(&self, serial: u64) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.serial_number = Some(serial.into());
        params
            .distinguished_name
            .push(DnType::CommonName, format!("tollgate-{serial}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate: one PEM with the certificate and its key (what reqwest takes).
    fn client(&self, name: &str) -> String {
        let mut params = CertificateParams::new(vec![format!("{name}.clients.example")]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    }
}

/// Writes the files and starts the gateway with `tls` settings under `listen` (and a consumer
/// that the client certificate `alice` stands for).
async fn start(dir: tempfile::TempDir, tls: &str, upstream: &str) -> TestGateway {
    let config = dir.path().join("tollgate.yaml");
    let mut yaml = standard_config(upstream);
    if tls.contains("client_ca") {
        yaml = yaml.replace(
            "\nconsumers:\n",
            "\nconsumers:\n  cert-user: {client_certs: [alice], models: \"*\"}\n  san-user: {client_certs: [carol.clients.example], models: \"*\"}\n",
        );
    }
    std::fs::write(
        &config,
        format!("listen: {{proxy: 127.0.0.1:0, status: 127.0.0.1:0, tls: {tls}}}\n{yaml}"),
    )
    .unwrap();
    TestGateway::start_from(config, dir).await
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    // Written whole and renamed into place, as cert-manager's volume updates are atomic.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn client(ca: &Ca, identity: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap());
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// The certificate a new TLS connection to `addr` is given (its DER).
async fn presented(addr: std::net::SocketAddr, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn https_with_http1_http2_and_curl() {
    let upstream = mock_upstream::start().await;
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server(1);
    let cert_path = write(dir.path(), "tls.crt", &cert);
    let key_path = write(dir.path(), "tls.key", &key);
    let ca_path = write(dir.path(), "ca.crt", &ca.cert.pem());
    let gw = start(
        dir,
        &format!(
            "{{cert: {}, key: {}}}",
            cert_path.display(),
            key_path.display()
        ),
        &upstream.base_url(),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/ollama/v1/models", gw.addr.port());
    // reqwest negotiates HTTP/2 by ALPN.
    let response = client(&ca, None)
        .get(&url)
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    // The gateway's own answer headers, kept beside the map, reach hyper's connections too.
    assert!(response.headers().contains_key("x-request-id"));
    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap()
        .get(&url)
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (http1.status(), http1.version()),
        (reqwest::StatusCode::OK, reqwest::Version::HTTP_11)
    );
    assert!(http1.headers().contains_key("x-request-id"));
    // Plain HTTP to the TLS port gets nothing.
    assert!(
        support::client()
            .get(format!(
                "http://127.0.0.1:{}/ollama/v1/models",
                gw.addr.port()
            ))
            .send()
            .await
            .is_err()
    );
    // curl, as a user would, with a chat request over HTTP/2.
    let url = format!(
        "https://localhost:{}/ollama/v1/chat/completions",
        gw.addr.port()
    );
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args([
            "--cacert",
            ca_path.to_str().unwrap(),
            "-H",
            "apikey: dev-key-12345",
        ])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(
            json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_certificate_rotated_during_a_stream_and_a_broken_one_refused() {
    let upstream = mock_upstream::start().await;
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (cert_a, key_a) = ca.server(1);
    write(&root, "tls.crt", &cert_a);
    write(&root, "tls.key", &key_a);
    let gw = start(
        dir,
        &format!("{{cert: {0}/tls.crt, key: {0}/tls.key}}", root.display()),
        &upstream.base_url(),
    )
    .await;
    assert_eq!(presented(gw.addr, &ca).await, der_of(&cert_a));
    // A stream in flight on certificate A.
    let body = json!({"model": "slow-stream", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let stream = client(&ca, None)
        .post(format!(
            "https://127.0.0.1:{}/ollama/v1/chat/completions",
            gw.addr.port()
        ))
        .bearer_auth("admin-key-12345")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // cert-manager renews: key and certificate replaced in place.
    let (cert_b, key_b) = ca.server(2);
    write(&root, "tls.key", &key_b);
    write(&root, "tls.crt", &cert_b);
    let mut rotated = false;
    for _ in 0..50 {
        if presented(gw.addr, &ca).await == der_of(&cert_b) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "new connections did not get the new certificate");
    let text = stream.text().await.unwrap();
    assert!(
        text.contains("tick29") && text.trim_end().ends_with("data: [DONE]"),
        "the stream begun on the old certificate did not complete: {text}"
    );
    // A broken replacement is refused: B keeps serving.
    write(
        &root,
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(presented(gw.addr, &ca).await, der_of(&cert_b));
    // And a key that is not the certificate's, likewise.
    let (_, other_key) = ca.server(3);
    write(&root, "tls.crt", &cert_b);
    write(&root, "tls.key", &other_key);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(presented(gw.addr, &ca).await, der_of(&cert_b));
}

/// A gateway checking client certificates of a client CA (`mode`: required or optional): the
/// gateway, its upstream, the server CA, the client CA and the models URL.
async fn with_client_auth(
    mode: &str,
) -> (TestGateway, mock_upstream::MockUpstream, Ca, Ca, String) {
    let upstream = mock_upstream::start().await;
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server(1);
    let cert_path = write(dir.path(), "tls.crt", &cert);
    let key_path = write(dir.path(), "tls.key", &key);
    let client_ca = write(dir.path(), "clients.crt", &clients.cert.pem());
    let gw = start(
        dir,
        &format!(
            "{{cert: {}, key: {}, client_ca: {}, client_auth: {mode}}}",
            cert_path.display(),
            key_path.display(),
            client_ca.display()
        ),
        &upstream.base_url(),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/ollama/v1/models", gw.addr.port());
    (gw, upstream, ca, clients, url)
}

#[tokio::test]
async fn client_certificates_valid_missing_and_from_another_ca() {
    let (_gw, _upstream, ca, clients, url) = with_client_auth("required").await;
    let strangers = Ca::new("another CA");
    let call = |client: reqwest::Client| {
        let url = url.clone();
        async move { client.get(&url).bearer_auth("dev-key-12345").send().await }
    };
    let valid = call(client(&ca, Some(&clients.client("alice"))))
        .await
        .unwrap();
    assert_eq!(valid.status(), 200);
    assert!(
        call(client(&ca, None)).await.is_err(),
        "no client certificate got in"
    );
    assert!(
        call(client(&ca, Some(&strangers.client("mallory"))))
            .await
            .is_err(),
        "a certificate of another CA got in"
    );
    // The certificate alone identifies a consumer that names it (no key sent).
    let models = |cert: &str| {
        let url = url.clone();
        let client = client(&ca, Some(&clients.client(cert)));
        async move { client.get(&url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        models("alice").await,
        200,
        "alice's certificate is cert-user (its CN)"
    );
    assert_eq!(
        models("carol").await,
        200,
        "carol's certificate is san-user (its DNS name)"
    );
    assert_eq!(
        models("bob").await,
        401,
        "bob's certificate names no consumer, and no key"
    );
    // The same over HTTP/1.1 (chosen by ALPN: served by the gateway's own HTTP/1.1 loop).
    let http1 = |cert: &str| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(clients.client(cert).as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    for (cert, expected) in [("alice", 200), ("carol", 200), ("bob", 401)] {
        let response = http1(cert).get(&url).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.status().as_u16(), expected, "{cert} over HTTP/1.1");
        assert!(response.headers().contains_key("x-request-id"));
    }
}

/// `client_auth: optional`: a connection without a certificate gets in (and authenticates by
/// key); one from another CA still does not.
#[tokio::test]
async fn optional_client_certificates() {
    let (_gw, _upstream, ca, clients, url) = with_client_auth("optional").await;
    let status = |identity: Option<String>, key: bool| {
        let url = url.clone();
        let client = client(&ca, identity.as_deref());
        async move {
            let mut request = client.get(&url);
            if key {
                request = request.bearer_auth("dev-key-12345");
            }
            request.send().await.map(|r| r.status().as_u16())
        }
    };
    assert_eq!(status(None, true).await.unwrap(), 200);
    assert_eq!(status(None, false).await.unwrap(), 401);
    assert_eq!(
        status(Some(clients.client("alice")), false).await.unwrap(),
        200
    );
    let strangers = Ca::new("another CA");
    assert!(
        status(Some(strangers.client("mallory")), true)
            .await
            .is_err()
    );
}

#[test]
fn check_names_missing_mismatched_and_unreadable_files() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server(1);
    let (_, other_key) = ca.server(2);
    let cert_path = write(dir.path(), "tls.crt", &cert);
    write(dir.path(), "tls.key", &key);
    write(dir.path(), "other.key", &other_key);
    write(dir.path(), "garbage.key", "not a key at all");
    let check = |tls: String| {
        let config = dir.path().join("t.yaml");
        std::fs::write(
            &config,
            format!("listen: {{tls: {tls}}}\nproviders: {{p: {{type: mock}}}}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{tls} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let d = dir.path().display();
    let missing = check(format!("{{cert: {d}/nope.crt, key: {d}/tls.key}}"));
    assert!(
        missing.contains("listen.tls.cert") && missing.contains("nope.crt"),
        "{missing}"
    );
    let mismatched = check(format!(
        "{{cert: {}, key: {d}/other.key}}",
        cert_path.display()
    ));
    assert!(
        mismatched.contains("listen.tls.key") && mismatched.contains("is not the key"),
        "{mismatched}"
    );
    let unreadable = check(format!(
        "{{cert: {}, key: {d}/garbage.key}}",
        cert_path.display()
    ));
    assert!(
        unreadable.contains("listen.tls.key") && unreadable.contains("no usable private key"),
        "{unreadable}"
    );
    let no_ca = check(format!(
        "{{cert: {}, key: {d}/tls.key, client_auth: required}}",
        cert_path.display()
    ));
    assert!(no_ca.contains("listen.tls.client_ca"), "{no_ca}");
}

/// A TLS front for the mock upstream that requires a client certificate of `clients`: its
/// address.
async fn mtls_front(
    upstream: std::net::SocketAddr,
    server: &Ca,
    clients: &Ca,
) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = server.server(9);
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(clients.cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // No client certificate of the right CA: the handshake fails here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// Per provider: a private CA, a client certificate for mutual TLS, and the development-only
/// opt-out of verification.
#[tokio::test]
async fn mutual_tls_to_an_upstream_that_requires_a_client_certificate() {
    let upstream = mock_upstream::start().await;
    let server_ca = Ca::new("upstream CA");
    let clients = Ca::new("gateway clients CA");
    let front = mtls_front(upstream.addr, &server_ca, &clients).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "upstream-ca.crt", &server_ca.cert.pem());
    let identity = clients.client("tollgate");
    // The client PEM holds the certificate then the key.
    let split = identity.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let cert = write(dir.path(), "client.crt", &identity[..split]);
    let key = write(dir.path(), "client.key", &identity[split..]);
    let base = format!("https://127.0.0.1:{}/v1", front.port());
    let (ca, cert, key) = (ca.display(), cert.display(), key.display());
    let gw = TestGateway::start(&format!(
        r#"
providers:
  mtls: {{type: openai, base_url: "{base}", tls: {{ca: {ca}, cert: {cert}, key: {key}}}}}
  no-client-cert: {{type: openai, base_url: "{base}", tls: {{ca: {ca}}}}}
  public-roots: {{type: openai, base_url: "{base}", tls: {{cert: {cert}, key: {key}}}}}
  insecure: {{type: openai, base_url: "{base}", tls: {{insecure_skip_verify: true, cert: {cert}, key: {key}}}}}
models:
  via-mtls: {{provider: mtls, model: "llama3.2:1b"}}
  via-no-client-cert: {{provider: no-client-cert, model: "llama3.2:1b"}}
  via-public-roots: {{provider: public-roots, model: "llama3.2:1b"}}
  via-insecure: {{provider: insecure, model: "llama3.2:1b"}}
routes: {{ai: {{}}}}
consumers: {{dev: {{keys: [dev-key-12345], models: "*"}}}}
"#
    ))
    .await;
    let status = |model: &'static str| {
        let url = gw.url("/ai/v1/chat/completions");
        async move {
            support::client()
                .post(url)
                .bearer_auth("dev-key-12345")
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status("via-mtls").await,
        200,
        "with the CA and a client certificate"
    );
    assert_eq!(
        status("via-no-client-cert").await,
        502,
        "the upstream wants a client certificate"
    );
    assert_eq!(
        status("via-public-roots").await,
        502,
        "a private CA is not among the public roots"
    );
    assert_eq!(
        status("via-insecure").await,
        200,
        "verification off (development only)"
    );
}
