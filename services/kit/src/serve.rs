//! The HTTP server loop every service runs: HTTP/1.1 and HTTP/2 (cleartext, by preface) on
//! one listener, with the limits `axum::serve` does not expose — a deadline for reading a
//! request's headers (slowloris: a client trickling headers holds a connection, and with
//! enough of them every worker), a bound on header bytes and count — and graceful shutdown
//! that stops accepting, lets open requests finish and closes idle keep-alive connections.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::shutdown::Shutdown;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time to receive a request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Largest header section: HTTP/1.1 read buffer and HTTP/2 header list, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request.
    pub max_headers: usize,
}

/// Serves `router` on `listener` until `stop` triggers, then drains open connections.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: Shutdown) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's floor for the read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(remote));
                    request
                });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
