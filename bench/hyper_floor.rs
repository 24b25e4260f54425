//! The floor under any hyper-based proxy, for the benchmark: hyper's HTTP/1 server in front of
//! hyper's HTTP/1 client, nothing else (no routing, auth, limits, logs, metrics, parsing).
//! Built as Tollgate's proxy is: one single-threaded event loop per thread, a client
//! connection's requests answered on an upstream connection of that same thread (here one per
//! client connection, opened when it is accepted), bodies streamed both ways, jemalloc.
//!
//! `cargo run --release --example hyper-floor -- LISTEN UPSTREAM` (both `host:port`;
//! `FLOOR_THREADS`, default 2, event-loop threads).
//!
//! Its CPU and instructions per request, beside nginx's and Tollgate's in one run, split
//! Tollgate's overhead over nginx into what hyper's server and client cost by themselves and
//! what the gateway's own work adds.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper-floor LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let (Ok(listen), Ok(upstream)) = (listen.parse::<SocketAddr>(), upstream.parse::<SocketAddr>())
    else {
        eprintln!("LISTEN and UPSTREAM are host:port");
        std::process::exit(2);
    };
    let threads: usize = std::env::var("FLOOR_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let listener = std::net::TcpListener::bind(listen).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.try_clone().expect("clone the listener");
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, accept(listener, upstream));
            })
        })
        .collect();
    println!("hyper-floor listening on http://{listen}, upstream {upstream}");
    for handle in handles {
        let _ = handle.join();
    }
}

async fn accept(listener: std::net::TcpListener, upstream: SocketAddr) {
    let listener = TcpListener::from_std(listener).expect("listener");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::task::spawn_local(async move {
            let Ok(sender) = connect(upstream).await else {
                return;
            };
            let sender = Rc::new(RefCell::new(sender));
            let service = service_fn(move |request: Request<Incoming>| {
                let sender = sender.clone();
                async move { forward(&sender, request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

/// An upstream connection, driven by a task of its own (as hyper's client examples do).
async fn connect(
    upstream: SocketAddr,
) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}

/// The client's request as it came (origin-form URI, its own headers), its answer as it goes.
async fn forward(
    sender: &Rc<RefCell<SendRequest<Incoming>>>,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, hyper::Error> {
    // The previous answer was read to its end before this request was read, so the
    // connection is ready (or about to be: its task sees the end first).
    std::future::poll_fn(|cx| sender.borrow_mut().poll_ready(cx)).await?;
    let response = sender.borrow_mut().send_request(request);
    response.await
}
