//! HTTP plumbing shared by the adapters that call a remote upstream: the pooled clients,
//! bounded body reads, error translation and secret redaction.
//!
//! The clients are hyper's own, not a convenience client: a gateway needs none of redirects
//! or cookies, and their layers cost more per request (two URL parses, a redirect policy) than
//! the rest of the upstream call. Plain-HTTP upstreams (local models) use the proxy thread's
//! HTTP/1 pool ([`super::http1_pool`]); TLS, HTTP/2 and egress proxies hyper-util's pooled
//! client over rustls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use super::FrameStream;
use super::event_stream::EventStream;
use super::http1_pool::{Http1Body, Http1Pools, SendError};
use super::http1_wire::RequestHead;
use super::translate::StreamTranslator;
use crate::config::{Timeouts, UpstreamTls};
use crate::error::GatewayError;
use crate::telemetry::redact;

type HttpClient = Client<HttpsConnector<Egress>, Full<Bytes>>;

/// How connections leave the gateway: straight to the upstream, or for `https` upstreams
/// through the egress proxy the environment names (`HTTPS_PROXY`/`ALL_PROXY`, minus
/// `NO_PROXY`, read as curl reads them) with a CONNECT tunnel, TLS then running end to end.
/// Plain-HTTP upstreams (local models) are always reached directly.
#[derive(Clone)]
struct Egress {
    direct: HttpConnector,
    proxies: Arc<hyper_util::client::proxy::matcher::Matcher>,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<Uri> for Egress {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let proxy = match dst.scheme_str() {
            Some("https") => self.proxies.intercept(&dst),
            _ => None,
        };
        match proxy {
            Some(proxy) => {
                let mut tunnel = hyper_util::client::legacy::connect::proxy::Tunnel::new(
                    proxy.uri().clone(),
                    self.direct.clone(),
                );
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
            }
            None => {
                let mut direct = self.direct.clone();
                Box::pin(async move { direct.call(dst).await.map_err(Into::into) })
            }
        }
    }
}

/// An upstream's answer: its head, and a body bounded by the exchange's total deadline.
pub type UpstreamResponse = Response<UpstreamBody>;

/// Why an upstream body stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The exchange's total deadline passed.
    Deadline,
    /// The connection broke or the body was malformed.
    Broken,
}

/// A response body that ends with [`BodyError::Deadline`] once the exchange's total time is
/// up. The clock is read at the first frame of each burst, and every [`CLOCK_EVERY`] frames of
/// a long one (a timer polled at every pending read costs more than the frame's own work, and
/// so did reading the clock for every frame); silence is bounded by the readers' idle
/// timeouts, and [`read_limited`] waits no longer than the deadline.
pub struct UpstreamBody {
    source: Source,
    deadline: Instant,
    /// Frames given since the deadline was last checked (0: check at the next one).
    unchecked: u8,
}

enum Source {
    /// From hyper-util's pooled client (TLS, HTTP/2, egress proxies).
    Live(hyper::body::Incoming),
    /// From a plain-HTTP upstream's connection, read as it is polled.
    Plain(Http1Body),
    /// A body made in a test (bytes split as a test needs them).
    #[cfg(test)]
    Made(http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>),
}

impl UpstreamBody {
    /// Whether this frame is one to read the clock at.
    fn clock_due(&mut self) -> bool {
        let due = self.unchecked == 0;
        self.unchecked = (self.unchecked + 1) % CLOCK_EVERY;
        due
    }

    fn new(source: Source, deadline: Instant) -> Self {
        Self {
            source,
            deadline,
            unchecked: 0,
        }
    }

    #[cfg(test)]
    pub fn made<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        Self {
            source: Source::Made(body.map_err(|never| match never {}).boxed_unsync()),
            deadline: Instant::now() + Duration::from_secs(3600),
            unchecked: 0,
        }
    }
}

/// Most frames of one burst given between two readings of the clock.
const CLOCK_EVERY: u8 = 32;

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Live(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|_| BodyError::Broken))),
            Source::Plain(body) => body.poll_data(cx).map(|data| {
                data.map(|data| {
                    data.map(http_body::Frame::data)
                        .map_err(|_| BodyError::Broken)
                })
            }),
            #[cfg(test)]
            Source::Made(body) => Pin::new(body).poll_frame(cx),
        };
        match polled {
            Poll::Pending => {
                this.unchecked = 0;
                Poll::Pending
            }
            Poll::Ready(Some(Ok(_))) if this.clock_due() && Instant::now() >= this.deadline => {
                Poll::Ready(Some(Err(BodyError::Deadline)))
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Live(body) => body.is_end_stream(),
            Source::Plain(body) => body.is_end_stream(),
            #[cfg(test)]
            Source::Made(body) => body.is_end_stream(),
        }
    }
}

/// One remote upstream: its pooled client (with the connect timeout), the headers sent with
/// every request (auth marked sensitive), and the secrets to redact from anything it says.
/// The other timeouts come with each call, as they may differ per target.
pub struct HttpUpstream {
    pub name: String,
    /// One client (with its own connection pool) per proxy thread, and one for the rest, so
    /// that a request uses connections driven by its own thread (see `server::workers`).
    clients: Box<[HttpClient]>,
    headers: HeaderMap,
    connect_timeout: Duration,
    /// Plain-HTTP requests to the upstream's own authority: their `Host` header and their
    /// per-thread connection pools, made at the first such request.
    plain: std::sync::OnceLock<Option<PlainHttp>>,
}

/// The fast path to a plain-HTTP upstream (see [`http1_pool`]).
struct PlainHttp {
    authority: String,
    host: HeaderValue,
    pools: Http1Pools,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// TLS to an upstream: the Mozilla roots (as shipped in `webpki-roots`) or the provider's own
/// CA bundle, an optional client certificate, TLS 1.2 and 1.3, ALPN for HTTP/2 and HTTP/1.1.
fn tls_config(name: &str, tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read_certs = |path: &std::path::Path| {
        crate::server::tls::read_certificates(path).map_err(|e| format!("tls: {e}"))
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(
            provider = name,
            "INSECURE: tls.insecure_skip_verify is on — this provider's certificate is NOT verified; for development only"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("tls.ca: {}: {e}", path.display()))?;
                }
            }
            None => roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert, &tls.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.key: {}: no usable private key ({e})", key.display()))?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key)
                .map_err(|e| format!("tls.cert/key: {e}"))
        }
        _ => Err("tls: cert and key go together".into()),
    }
}

/// `insecure_skip_verify`: any certificate is taken, but the handshake's signatures are still
/// checked (so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl HttpUpstream {
    pub fn new(
        name: &str,
        timeouts: &Timeouts,
        extra_headers: &indexmap::IndexMap<String, String>,
        tls: &UpstreamTls,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))),
        );
        for (k, v) in extra_headers {
            let header =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
            headers.insert(header, value);
        }
        // Every body the gateway sends is JSON, whatever the configured headers say.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeouts.connect));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(name, tls)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Egress {
                direct: tcp,
                proxies: Arc::new(hyper_util::client::proxy::matcher::Matcher::from_env()),
            });
        let clients = (0..crate::server::workers::slot_count())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_timer(TokioTimer::new())
                    .build(connector.clone())
            })
            .collect();
        Ok(Self {
            name: name.to_owned(),
            clients,
            headers,
            connect_timeout: timeouts.connect,
            plain: std::sync::OnceLock::new(),
        })
    }

    /// The plain-HTTP path for `url`: for an `http` URL with the authority of the first such
    /// URL seen (every URL an upstream builds shares its base's), else `None`.
    fn plain_http(&self, url: &Url) -> Option<&PlainHttp> {
        if url.scheme() != "http" {
            return None;
        }
        let plain = self.plain.get_or_init(|| {
            let host = match url.host()? {
                url::Host::Domain(name) => name.to_owned(),
                url::Host::Ipv4(ip) => ip.to_string(),
                url::Host::Ipv6(ip) => ip.to_string(),
            };
            // `host[:port]`, the port only when not the scheme's default.
            let header = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str()?),
                None => url.host_str()?.to_owned(),
            };
            Some(PlainHttp {
                authority: url.authority().to_owned(),
                host: HeaderValue::from_str(&header).ok()?,
                pools: Http1Pools::new(&host, url.port_or_known_default()?, self.connect_timeout),
            })
        });
        plain
            .as_ref()
            .filter(|plain| plain.authority == url.authority())
    }

    /// The calling thread's client.
    fn client(&self) -> &HttpClient {
        let slot = crate::server::workers::current_slot();
        // Built with at least one client; a thread numbered past them shares the last.
        &self.clients[slot.min(self.clients.len() - 1)]
    }

    /// Sends `secret` in `header` (e.g. `authorization: Bearer <key>`, `x-api-key: <key>`) and
    /// redacts `secret` from every upstream message.
    pub fn with_secret_header(
        mut self,
        header: &'static str,
        value: String,
        secret: &str,
    ) -> Result<Self, String> {
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "api_key holds characters not allowed in a header".to_owned())?;
        value.set_sensitive(true);
        self.headers.insert(header, value);
        redact::register_provider_secret(secret);
        Ok(self)
    }

    /// Redacts `secret` (e.g. a key sent in the URL) from every upstream message.
    pub fn with_secret(self, secret: &str) -> Self {
        redact::register_provider_secret(secret);
        self
    }

    pub fn add_header(&mut self, header: &'static str, value: &str) -> Result<(), String> {
        let value = HeaderValue::from_str(value).map_err(|e| format!("header {header:?}: {e}"))?;
        self.headers.insert(header, value);
        Ok(())
    }

    /// POSTs a JSON body and waits for the response head (bounded by the first-byte timeout);
    /// an error status becomes a [`GatewayError`] carrying the upstream's (redacted) message.
    pub async fn post_json(
        &self,
        url: &Url,
        body: &impl serde::Serialize,
        timeouts: &Timeouts,
    ) -> Result<UpstreamResponse, GatewayError> {
        let bytes = serde_json::to_vec(body).map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.post_bytes(url, Bytes::from(bytes), timeouts).await
    }

    /// POSTs a JSON body that is already serialised (a client's body passed through).
    pub async fn post_bytes(
        &self,
        url: &Url,
        bytes: Bytes,
        timeouts: &Timeouts,
    ) -> Result<UpstreamResponse, GatewayError> {
        self.post_bytes_with(url, bytes, timeouts, HeaderMap::new())
            .await
    }

    /// Like [`Self::post_bytes`], with per-request headers that override the configured ones
    /// (a client's `anthropic-version` and `anthropic-beta` on a pass-through).
    pub async fn post_bytes_with(
        &self,
        url: &Url,
        bytes: Bytes,
        timeouts: &Timeouts,
        extra: HeaderMap,
    ) -> Result<UpstreamResponse, GatewayError> {
        // The total deadline covers the head and the whole body (streams included); the
        // first byte may not take longer than either.
        let deadline = Instant::now() + timeouts.total;
        let (head_wait, phase) = match timeouts.first_byte < timeouts.total {
            true => (timeouts.first_byte, "first byte"),
            false => (timeouts.total, "total"),
        };
        let timed_out = |_| GatewayError::UpstreamTimeout {
            provider: self.name.clone(),
            phase,
        };
        let response = match self.plain_http(url) {
            // Plain HTTP is sent in origin form (`/path?query`) on the thread's own pool.
            Some(plain) => {
                let head = RequestHead {
                    method: &Method::POST,
                    target: &url[url::Position::BeforePath..],
                    host: &plain.host,
                    headers: &self.headers,
                    overrides: &extra,
                };
                let sent = plain.pools.send(head, bytes);
                tokio::time::timeout(head_wait, sent)
                    .await
                    .map_err(timed_out)?
                    .map_err(|e| self.send_error(&e))?
                    .map(|body| UpstreamBody::new(Source::Plain(body), deadline))
            }
            None => {
                let uri = Uri::try_from(url.as_str())
                    .map_err(|e| GatewayError::Internal(format!("upstream URL: {e}")))?;
                let mut request = Request::new(Full::new(bytes));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = uri;
                let headers = request.headers_mut();
                headers.clone_from(&self.headers);
                headers.extend(extra);
                tokio::time::timeout(head_wait, self.client().request(request))
                    .await
                    .map_err(timed_out)?
                    .map_err(|e| transport_error(&self.name, &e))?
                    .map(|body| UpstreamBody::new(Source::Live(body), deadline))
            }
        };
        if !response.status().is_success() {
            return Err(status_error(&self.name, response).await);
        }
        Ok(response)
    }

    /// A plain-HTTP request that failed: an answer that is not HTTP/1.1 is the upstream's
    /// protocol error (502 with what was wrong), the rest as the pooled client's failures.
    fn send_error(&self, error: &SendError) -> GatewayError {
        match error {
            SendError::Wire(wire) => {
                tracing::debug!(provider = %self.name, error = %wire, "upstream call failed");
                GatewayError::UpstreamProtocol {
                    provider: self.name.clone(),
                    detail: wire.to_string(),
                }
            }
            other => transport_error(&self.name, other),
        }
    }

    /// Reads a whole response body, bounded by `limit` bytes and `idle` silence.
    pub async fn read_body(
        &self,
        response: UpstreamResponse,
        limit: u64,
        idle: Duration,
    ) -> Result<Bytes, GatewayError> {
        read_limited(&self.name, response, limit, idle)
            .await
            .map(redact::provider_secrets_in_bytes)
    }

    /// Parses a whole JSON response body.
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: UpstreamResponse,
        limit: u64,
        idle: Duration,
    ) -> Result<T, GatewayError> {
        let body = self.read_body(response, limit, idle).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.protocol_error(format!("unexpected response: {e}")))
    }

    pub fn protocol_error(&self, detail: impl Into<String>) -> GatewayError {
        GatewayError::UpstreamProtocol {
            provider: self.name.clone(),
            detail: detail.into(),
        }
    }

    /// Feeds an SSE response through `translator`, frame by frame as events arrive.
    pub fn event_stream<T: StreamTranslator>(
        &self,
        response: UpstreamResponse,
        translator: T,
    ) -> Result<FrameStream, GatewayError> {
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(
                self.protocol_error("a streamed request was not answered with an event stream")
            );
        }
        Ok(Box::pin(EventStream::new(
            response.into_body(),
            translator,
            self.name.clone(),
            MAX_EVENT_BYTES,
        )))
    }
}

/// The longest event-stream line or event accepted from an upstream.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// `base` with path segments appended (each percent-encoded as needed) and query pairs added.
/// Parses a configured base URL once, when the provider is built: per request only segments
/// are appended to a copy (no re-parsing, no IDNA work on the hot path).
pub fn parse_base(base: &str) -> Result<Url, String> {
    let url = Url::parse(base).map_err(|e| format!("bad base URL {base:?}: {e}"))?;
    if url.cannot_be_a_base() {
        return Err(format!("{base:?} cannot be a base URL"));
    }
    Ok(url)
}

pub fn build_url(
    base: &Url,
    segments: &[&str],
    query: &[(&str, &str)],
) -> Result<Url, GatewayError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| GatewayError::Internal("base URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// How much of an upstream error body is read to find its message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// How much of an upstream's message is passed on.
const MESSAGE_LIMIT: usize = 500;

/// Reads a whole body, refusing one larger than `limit` or silent for longer than `idle`.
pub async fn read_limited(
    provider: &str,
    response: UpstreamResponse,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
    let announced = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut body = response.into_body();
    let deadline = body.deadline;
    let mut buf = BytesMut::with_capacity(announced.min(limit) as usize);
    loop {
        // Silence ends at the idle timeout, or at the total deadline if that comes first.
        let idle_ends = Instant::now() + idle;
        let (wait_until, phase) = match deadline < idle_ends {
            true => (deadline, "total"),
            false => (idle_ends, IDLE),
        };
        let frame = tokio::time::timeout_at(wait_until.into(), body.frame())
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                provider: provider.to_owned(),
                phase,
            })?;
        let chunk = match frame {
            None => return Ok(buf.freeze()),
            Some(Err(e)) => return Err(body_error(provider, e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_trailers) => continue,
            },
        };
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(GatewayError::UpstreamProtocol {
                provider: provider.to_owned(),
                detail: format!("response larger than {limit} bytes"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
}

/// The phase named by idle timeouts.
pub const IDLE: &str = "idle between chunks";

pub(super) fn body_error(provider: &str, error: BodyError) -> GatewayError {
    match error {
        BodyError::Deadline => GatewayError::UpstreamTimeout {
            provider: provider.to_owned(),
            phase: "total",
        },
        BodyError::Broken => GatewayError::UpstreamProtocol {
            provider: provider.to_owned(),
            detail: "the response body broke off".into(),
        },
    }
}

/// Maps a failed request without leaking its URL (which may carry a key in its query).
/// Either client's errors are connection-level (no URL in them), so they are logged at debug.
pub fn transport_error(provider: &str, e: &(dyn std::error::Error + 'static)) -> GatewayError {
    tracing::debug!(provider, error = %e, "upstream call failed");
    let provider = provider.to_owned();
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return GatewayError::UpstreamTimeout {
                provider,
                phase: "connect",
            };
        }
        source = cause.source();
    }
    GatewayError::UpstreamUnreachable { provider }
}

/// Translates a non-2xx upstream response into an error whose message is the upstream's own
/// (OpenAI, Ollama and plain-text shapes understood), with `secrets` redacted.
pub async fn status_error(provider: &str, resp: UpstreamResponse) -> GatewayError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_limited(provider, resp, ERROR_BODY_LIMIT, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    let retry_after = retry_after.or_else(|| retry_delay_in_body(&body));
    let message = redact::provider_secrets(&error_message(&body)).into_owned();
    GatewayError::UpstreamStatus {
        provider: provider.to_owned(),
        status,
        message,
        retry_after,
    }
}

/// Google's retry hint: `{"error": {"details": [{"@type": "...RetryInfo", "retryDelay": "37s"}]}}`.
fn retry_delay_in_body(body: &[u8]) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/details")?
        .as_array()?
        .iter()
        .find_map(|d| d.get("retryDelay")?.as_str())
        .and_then(|s| humantime::parse_duration(s).ok())
}

/// The human message in an error body: `{"error": {"message"}}` (OpenAI), `{"error": "..."}`
/// (Ollama), `{"message"}`, or the text itself.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let m = v
                .pointer("/error/message")
                .or_else(|| v.get("error").filter(|e| e.is_string()))
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str());
            m.map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_owned();
    }
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_and_encoded() {
        assert_eq!(
            build_url(
                &parse_base("http://h:1/v1").unwrap(),
                &["chat/completions"],
                &[]
            )
            .unwrap()
            .as_str(),
            "http://h:1/v1/chat%2Fcompletions"
        );
        assert_eq!(
            build_url(&parse_base("http://h:1/v1/").unwrap(), &["embeddings"], &[])
                .unwrap()
                .as_str(),
            "http://h:1/v1/embeddings"
        );
        assert_eq!(
            build_url(
                &parse_base("https://r.openai.azure.com").unwrap(),
                &["openai", "deployments", "gpt 4o", "embeddings"],
                &[("api-version", "2024-10-21")]
            )
            .unwrap()
            .as_str(),
            "https://r.openai.azure.com/openai/deployments/gpt%204o/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            build_url(
                &parse_base("http://h/v1beta").unwrap(),
                &["models", "gemini-2.5-flash:streamGenerateContent"],
                &[("alt", "sse")]
            )
            .unwrap()
            .as_str(),
            "http://h/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn finds_messages_in_common_shapes() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad","type":"x"}}"#),
            "bad"
        );
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(b"Internal Server Error"),
            "Internal Server Error"
        );
        assert_eq!(error_message(b""), "(no message)");
    }

    #[test]
    fn redacts_whole_and_abbreviated_keys() {
        let key = "sk-proj-abcdefghijklmnop1234";
        redact::register_provider_secret(key);
        let msg = format!("Incorrect API key provided: {key}. Also sk-proj-a***********p1234");
        let out = redact::provider_secrets(&msg);
        assert!(
            !out.contains(key) && !out.contains("sk-proj-") && !out.contains("mnop1234"),
            "{out}"
        );
    }
}

#[cfg(test)]
mod stream_tests {
    use futures_util::StreamExt;
    use serde_json::Value;

    use super::*;
    use crate::providers::anthropic::AnthropicStream;
    use crate::providers::gemini::GeminiStream;

    /// A response whose body arrives one byte at a time: every event boundary and every
    /// multi-byte character is split.
    fn byte_by_byte(body: &str) -> UpstreamResponse {
        let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = body
            .bytes()
            .map(|b| Ok(http_body::Frame::data(Bytes::from(vec![b]))))
            .collect();
        event_stream_response(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )))
    }

    fn event_stream_response<B>(body: B) -> UpstreamResponse
    where
        B: http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        axum::http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(UpstreamBody::made(body))
            .unwrap()
    }

    fn upstream() -> HttpUpstream {
        HttpUpstream::new(
            "p",
            &Timeouts::default(),
            &Default::default(),
            &Default::default(),
        )
        .unwrap()
    }

    async fn text_of(frames: FrameStream) -> String {
        let frames: Vec<_> = frames.collect().await;
        frames
            .into_iter()
            .map(|f| f.unwrap())
            .filter(|f| !f.is_done())
            .filter_map(|f| {
                serde_json::from_slice::<Value>(&f.data).unwrap()["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    #[tokio::test]
    async fn anthropic_events_split_at_every_byte() {
        let body = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"日本語 ✓ \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"grüße 🎉\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let frames = upstream()
            .event_stream(byte_by_byte(body), AnthropicStream::new("p"))
            .unwrap();
        assert_eq!(text_of(frames).await, "日本語 ✓ grüße 🎉");
    }

    /// What a Messages client receives for `frames`, through `encoder`.
    async fn encoded(
        frames: FrameStream,
        mut encoder: Box<dyn crate::dialect::StreamEncoder>,
    ) -> String {
        let frames: Vec<_> = frames.collect().await;
        let mut out = BytesMut::new();
        for frame in frames {
            encoder.frame(&frame.unwrap(), &mut out);
        }
        encoder.finish(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    const MESSAGES_EVENTS: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"日本語 ✓ grüße 🎉\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    /// A Messages stream passed through to a Messages client arrives exactly as it was sent,
    /// however the upstream's bytes were split, and its usage is read on the way.
    #[tokio::test]
    async fn messages_passed_through_split_at_every_byte_arrive_unchanged() {
        use crate::providers::anthropic::NativeStream;
        let frames = upstream()
            .event_stream(byte_by_byte(MESSAGES_EVENTS), NativeStream::new("p"))
            .unwrap();
        let frames: Vec<_> = frames.collect::<Vec<_>>().await;
        let usage = frames
            .iter()
            .filter_map(|f| f.as_ref().unwrap().usage)
            .last()
            .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 5));
        let whole = upstream()
            .event_stream(byte_by_byte(MESSAGES_EVENTS), NativeStream::new("p"))
            .unwrap();
        let out = encoded(
            whole,
            Box::new(crate::dialect::messages::answer::NativeEncoder),
        )
        .await;
        assert_eq!(out, MESSAGES_EVENTS);
    }

    /// A chat stream translated for a Messages client gives the same events whether the
    /// upstream's bytes came whole or one at a time.
    #[tokio::test]
    async fn chat_chunks_translated_to_messages_split_at_every_byte() {
        use crate::dialect::messages::answer::MessagesEncoder;
        let body = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"日本語 ✓ \"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": \\\"é\\\"}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}\n\n",
            "data: [DONE]\n\n",
        );
        let at_once = encoded(
            upstream()
                .event_stream(
                    event_stream_response(Full::new(Bytes::from(body))),
                    crate::providers::openai::PassThrough,
                )
                .unwrap(),
            Box::new(MessagesEncoder::new("m", 1)),
        )
        .await;
        let split = encoded(
            upstream()
                .event_stream(byte_by_byte(body), crate::providers::openai::PassThrough)
                .unwrap(),
            Box::new(MessagesEncoder::new("m", 1)),
        )
        .await;
        assert_eq!(at_once, split);
        assert!(
            split.contains("\"partial_json\":\"{\\\"a\\\": \\\"é\\\"}\""),
            "{split}"
        );
        assert!(split.contains("\"output_tokens\":6"), "{split}");
        assert!(split.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    #[tokio::test]
    async fn gemini_events_with_crlf_framing_split_at_every_byte() {
        let body = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"héllo \"}]}}]}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"wörld ✓\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":2}}\r\n\r\n",
        );
        let frames = upstream()
            .event_stream(byte_by_byte(body), GeminiStream::new("p", "g"))
            .unwrap();
        assert_eq!(text_of(frames).await, "héllo wörld ✓");
    }

    #[tokio::test]
    async fn a_stream_cut_short_ends_with_an_error() {
        let body =
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"partial\"}]}}]}\r\n\r\n";
        let frames: Vec<_> = upstream()
            .event_stream(byte_by_byte(body), GeminiStream::new("p", "g"))
            .unwrap()
            .collect()
            .await;
        assert!(frames.last().unwrap().is_err());
    }

    /// A body of `frames` one-byte frames, all ready at once, that sleeps `pause_at` frames in
    /// (the clock moves on in the middle of a burst).
    fn burst(frames: usize, pause_at: usize, pause: Duration, deadline: Instant) -> UpstreamBody {
        let items = futures_util::stream::iter(0..frames).map(move |i| {
            if i == pause_at {
                std::thread::sleep(pause);
            }
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"x")))
        });
        let mut body = UpstreamBody::made(http_body_util::StreamBody::new(items));
        body.deadline = deadline;
        body
    }

    /// Frames read until the body ends or fails: (how many were given, whether it failed).
    async fn read_all(mut body: UpstreamBody) -> (usize, Option<BodyError>) {
        let mut given = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(_) => given += 1,
                Err(e) => return (given, Some(e)),
            }
        }
        (given, None)
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_fails_at_the_next_burst_or_within_a_long_one() {
        let soon = Instant::now() + Duration::from_millis(30);
        // Past the deadline from the start: the first frame already fails.
        let (given, failed) = read_all(burst(5, usize::MAX, Duration::ZERO, Instant::now())).await;
        assert_eq!((given, failed), (0, Some(BodyError::Deadline)));
        // Within the deadline: the whole burst goes.
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            read_all(burst(100, usize::MAX, Duration::ZERO, far)).await,
            (100, None)
        );
        // The deadline passes in the middle of a long burst: it is noticed within
        // CLOCK_EVERY frames.
        let (given, failed) = read_all(burst(1000, 3, Duration::from_millis(50), soon)).await;
        assert_eq!(failed, Some(BodyError::Deadline));
        assert!((3..=usize::from(CLOCK_EVERY)).contains(&given), "{given}");
    }
}
