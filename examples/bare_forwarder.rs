//! The floor under llm-proxy's CPU per request: the same HTTP stack the proxy runs on
//! (hyper's HTTP/1 server and its pooled client on tokio, sized the same way), forwarding
//! each request body to one upstream and the reply back, with nothing else: no JSON, no
//! auth, routing, limits, logging, metrics or ledger. `bench/RESULTS.md` sets it beside
//! the proxy and nginx, to show how much of the proxy's cost is the stack and how much is
//! its own work.
//!
//! With `--inline` the upstream side is not hyper_util's pooled client (a spawned task
//! per connection, a channel hop per request and reply) but plain HTTP/1 connections from
//! `hyper::client::conn::http1` kept in a list and driven inside the request's own task.
//! It measures what that design would save the proxy (bench/floor.sh prints both); it is
//! a measuring tool, not a client: no TLS, no idle timeout, no retry of a request a
//! reused connection closed under.
//!
//! ```text
//! cargo run --release --example bare_forwarder -- 127.0.0.1:18091 http://127.0.0.1:18000 [--inline]
//! ```

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Pooled = Client<HttpConnector, Full<Bytes>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_forwarder LISTEN_ADDR UPSTREAM_BASE_URL [--inline]";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: http::Uri = args.next().ok_or(usage)?.parse()?;
    let inline = args.next().is_some_and(|a| a == "--inline");
    // The proxy's own runtime, so the two are compared on the same scheduler.
    let rt = llm_proxy::server::runtime()?;
    rt.block_on(serve(listen, upstream, inline))
}

/// Where requests go: hyper_util's pooled client, or connections driven inline.
#[derive(Clone)]
enum Upstream {
    Pooled(Arc<Pooled>),
    Inline(Inline),
}

async fn serve(listen: SocketAddr, upstream: http::Uri, inline: bool) -> Result<(), Error> {
    let client = if inline {
        let addr = upstream.authority().ok_or("the upstream URL has no host")?;
        Upstream::Inline(Inline {
            addr: addr.to_string(),
            idle: Arc::default(),
        })
    } else {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        Upstream::Pooled(Arc::new(
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(tcp),
        ))
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bare_forwarder on http://{listen} -> {upstream} (inline: {inline})");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends the request's body to the upstream at the same path and answers with its reply.
async fn forward(
    client: Upstream,
    upstream: http::Uri,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match try_forward(&client, &upstream, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(e.to_string())));
            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
            resp
        }
    })
}

async fn try_forward(
    client: &Upstream,
    upstream: &http::Uri,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("{}{}", upstream.to_string().trim_end_matches('/'), path);
    let mut out = Request::post(uri).body(Full::new(body))?;
    for name in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    let (status, content_type, body) = match client {
        Upstream::Pooled(c) => {
            let reply = c.request(out).await?;
            let (parts, body) = reply.into_parts();
            let body = body.collect().await?.to_bytes();
            (
                parts.status,
                parts.headers.get(http::header::CONTENT_TYPE).cloned(),
                body,
            )
        }
        Upstream::Inline(pool) => pool.send(out).await?,
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Some(v) = content_type {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

type Conn = http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

/// One upstream connection: its sender and the connection future that does its I/O.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<Conn>>,
}

/// Upstream connections kept in a list and driven by whichever request uses them.
#[derive(Clone)]
struct Inline {
    addr: String,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl Inline {
    async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Option<http::HeaderValue>, Bytes), Error> {
        req.headers_mut()
            .insert(http::header::HOST, self.addr.parse()?);
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut c = match taken {
            Some(c) => c,
            None => {
                let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
                tcp.set_nodelay(true)?;
                let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
                Idle {
                    sender,
                    conn: Box::pin(conn),
                }
            }
        };
        drive(&mut c.conn, c.sender.ready()).await??;
        let reply = drive(&mut c.conn, c.sender.send_request(req)).await??;
        let (parts, body) = reply.into_parts();
        let body = drive(&mut c.conn, body.collect()).await??.to_bytes();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        Ok((
            parts.status,
            parts.headers.get(http::header::CONTENT_TYPE).cloned(),
            body,
        ))
    }
}

/// Runs `fut` while driving the connection's I/O in the same task; the connection
/// ending first is an error.
async fn drive<F: Future>(conn: &mut Pin<Box<Conn>>, fut: F) -> Result<F::Output, Error> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Err(format!("upstream connection ended: {r:?}").into())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
