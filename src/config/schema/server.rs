//! Listeners, request limits and reloading: how the gateway itself runs.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::*;

/// Addresses the gateway listens on. Changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The proxy (client-facing) listener.
    #[serde(default = "Listen::default_proxy")]
    pub proxy: SocketAddr,
    /// Health, readiness (and later metrics) on their own port, so they can stay internal.
    #[serde(default = "Listen::default_status")]
    pub status: SocketAddr,
    /// The admin API (keys and consumers at run time): off unless given. Keep it on a
    /// loopback or internal address.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// HTTPS on the listeners named in `tls.listeners` (plain HTTP without it).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Threads serving the proxy listener, each with its own event loop and its own upstream
    /// connections (a connection stays on the thread that accepted it, as in nginx's
    /// workers): no hand-offs between threads on the way through. Default: one per core.
    #[serde(default)]
    pub proxy_threads: Option<std::num::NonZeroUsize>,
}

/// A certificate chain and key (PEM files, reloaded when they change and on SIGHUP), and
/// optionally client certificates checked against a CA bundle.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// Which listeners speak TLS.
    #[serde(default = "TlsConfig::default_listeners")]
    pub listeners: Vec<ListenerName>,
    /// CA bundle (PEM) that client certificates must chain to.
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
    /// `required` (no certificate, no connection) or `optional`; needs `client_ca`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

impl TlsConfig {
    fn default_listeners() -> Vec<ListenerName> {
        vec![ListenerName::Proxy, ListenerName::Admin]
    }

    pub fn covers(&self, listener: ListenerName) -> bool {
        self.listeners.contains(&listener)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerName {
    Proxy,
    Status,
    Admin,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Required when `client_ca` is given, else none.
    #[default]
    Auto,
    Required,
    Optional,
}

impl Listen {
    /// How many threads serve the proxy listener.
    pub fn proxy_threads(&self) -> usize {
        self.proxy_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        )
    }

    /// The TLS settings in force: none when absent, or when `cert` and `key` are both empty
    /// (`cert: "${TLS_CERT:-}"` lets one file serve plain HTTP or HTTPS by environment).
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls
            .as_ref()
            .filter(|t| !(t.cert.as_os_str().is_empty() && t.key.as_os_str().is_empty()))
    }

    fn default_proxy() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    fn default_status() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8081))
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            proxy: Self::default_proxy(),
            status: Self::default_status(),
            admin: None,
            tls: None,
            proxy_threads: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (long agent contexts need several MiB).
    #[serde(default = "Limits::default_max_body")]
    pub max_body: ByteSize,
    /// Largest total size of request headers.
    #[serde(default = "Limits::default_max_headers")]
    pub max_headers: ByteSize,
    /// Largest non-streamed upstream response the gateway reads (it must read it to count usage).
    #[serde(default = "Limits::default_max_response")]
    pub max_response: ByteSize,
    /// How long a shutdown waits for requests and streams in flight.
    #[serde(default = "Limits::default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A request head must arrive whole within this, from its first byte (and a new
    /// connection must start one within it): slow-loris clients are cut off.
    #[serde(
        default = "Limits::default_header_read_timeout",
        with = "humantime_serde"
    )]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this (408 otherwise).
    #[serde(
        default = "Limits::default_body_read_timeout",
        with = "humantime_serde"
    )]
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    #[serde(default = "Limits::default_keepalive_idle", with = "humantime_serde")]
    pub keepalive_idle: Duration,
    /// A write of an answer that makes no progress for this long (a client that stopped
    /// reading) closes the connection.
    #[serde(default = "Limits::default_send_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Open client connections on the proxy listener; past it, new ones get a 503 and are
    /// closed (the status listener has its own allowance).
    #[serde(default = "Limits::default_max_connections")]
    pub max_connections: usize,
}

impl Limits {
    fn default_max_body() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_max_headers() -> ByteSize {
        ByteSize::kib(64)
    }
    fn default_max_response() -> ByteSize {
        ByteSize::mib(64)
    }
    fn default_shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    fn default_header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_body_read_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_keepalive_idle() -> Duration {
        Duration::from_secs(60)
    }
    fn default_send_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max_connections() -> usize {
        10_000
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: Self::default_max_body(),
            max_headers: Self::default_max_headers(),
            max_response: Self::default_max_response(),
            shutdown_grace: Self::default_shutdown_grace(),
            header_read_timeout: Self::default_header_read_timeout(),
            body_read_timeout: Self::default_body_read_timeout(),
            keepalive_idle: Self::default_keepalive_idle(),
            send_timeout: Self::default_send_timeout(),
            max_connections: Self::default_max_connections(),
        }
    }
}

/// How the gateway notices a new config. SIGHUP always reloads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the file changes on disk (read at start-up).
    #[serde(default = "default_true")]
    pub watch_file: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch_file: true }
    }
}
