//! Accepting client connections on the API port and serving each with the protocol it
//! speaks: HTTP/1.1, or HTTP/2 with prior knowledge (h2c, e.g. from a load balancer).
//!
//! Why not `axum::serve`: it serves every connection with hyper-util's auto-detecting
//! connection, whose future holds the state of both protocols — 1.5 KiB per connection
//! against hyper's 0.6 KiB for HTTP/1 alone — and an open stream is a connection, so that
//! was one of the largest parts of the proxy's own memory per stream. Here the first
//! bytes are peeked (the HTTP/2 preface starts `PRI `, which no HTTP/1 method is) and the
//! connection is served by hyper's HTTP/1 or HTTP/2 server alone. Graceful shutdown is
//! what `axum::serve` did: stop accepting, ask every connection to finish its requests in
//! flight and close, and return once all have.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::api::Api;

/// How long a connection may take to send the first bytes that tell its protocol apart
/// (only a client that sent part of `PRI ` waits; any other first byte decides at once).
const DETECT_FOR: Duration = Duration::from_secs(10);

/// Serves `api` on `listener` until `shutdown` resolves, then stops accepting and returns
/// once every connection has closed (idle ones at once, busy ones after their requests).
pub async fn serve(listener: TcpListener, api: Api, shutdown: impl Future<Output = ()>) {
    // Tells connections to shut down gracefully.
    let (signal, _) = watch::channel(());
    // Every connection holds a receiver: when none is left, all have closed.
    let (open, _) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            // A connection reset or aborted before it was accepted: that one is gone.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: not the listener's end, but retrying
                // at once would spin. Wait as axum::serve did.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // TCP_NODELAY on every client connection: a stream writes many small SSE frames,
        // and with Nagle's algorithm each could wait up to 40 ms for the client's ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
        let lane = api.lane(peer);
        let mut stop = signal.subscribe();
        let held = open.subscribe();
        tokio::spawn(async move {
            let h2 = tokio::select! {
                h2 = speaks_h2(&tcp) => h2,
                _ = stop.changed() => return,
            };
            let io = TokioIo::new(tcp);
            if h2 {
                let conn = http2::Builder::new(TokioExecutor::new()).serve_connection(io, lane);
                run(conn, stop, peer).await;
            } else {
                run(http1::Builder::new().serve_connection(io, lane), stop, peer).await;
            }
            drop(held);
        });
    }
    drop(listener);
    let _ = signal.send(());
    open.closed().await;
}

/// Drives one connection; on the shutdown signal asks it to finish and close.
async fn run<C>(conn: C, mut stop: watch::Receiver<()>, peer: SocketAddr)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Whether the connection opens with the HTTP/2 preface. Peeks, so the bytes stay for
/// the server that reads them; a connection closed before sending anything is left to
/// HTTP/1 (which closes it); one that sends nothing waits here as it would in hyper.
async fn speaks_h2(tcp: &TcpStream) -> bool {
    const PREFACE: &[u8; 4] = b"PRI ";
    let mut buf = [0u8; 4];
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(5);
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // Part of the preface so far: peeking again would return the same bytes at once,
        // so wait, longer each time (a dozen wake-ups over DETECT_FOR at most).
        if started.elapsed() > DETECT_FOR {
            return false;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}
