//! A TCP proxy in front of a real server (Redis, PostgreSQL) that a test can cut and
//! restore, to show what the gateway does when the server goes away and comes back (without
//! restarting the machine's server, which other tests use).
#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const REDIS: &str = "127.0.0.1:6379";

/// Whether the real Redis answers. With `CI` set an unreachable Redis fails the test instead
/// of skipping it.
pub async fn redis_available() -> bool {
    match TcpStream::connect(REDIS).await {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("Redis at {REDIS} is unreachable and CI is set: {e}")
        }
        Err(e) => {
            eprintln!("skipping: Redis at {REDIS} is unreachable ({e})");
            false
        }
    }
}

/// The proxy in front of the real Redis.
pub type RedisProxy = TcpProxy;

pub struct TcpProxy {
    pub addr: SocketAddr,
    target: &'static str,
    stop: Option<CancellationToken>,
}

impl TcpProxy {
    /// A proxy to the real Redis.
    pub async fn start() -> TcpProxy {
        Self::start_to(REDIS).await
    }

    /// A proxy to `target` (`host:port`).
    pub async fn start_to(target: &'static str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = TcpProxy {
            addr,
            target,
            stop: None,
        };
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.stop = Some(stop.clone());
        let target = self.target;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = stop.cancelled() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = stop.cancelled() => {} // both sockets close: "Redis went away"
                    }
                });
            }
        });
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }

    /// Accepts connections again, on the same address.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}
