//! The floor under llm-proxy's CPU per request: the same HTTP stack the proxy runs on
//! (hyper's HTTP/1 server and its pooled client on tokio, sized the same way), forwarding
//! each request body to one upstream and the reply back, with nothing else: no JSON, no
//! auth, routing, limits, logging, metrics or ledger. `bench/RESULTS.md` sets it beside
//! the proxy and nginx, to show how much of the proxy's cost is the stack and how much is
//! its own work.
//!
//! ```text
//! cargo run --release --example bare_forwarder -- 127.0.0.1:18091 http://127.0.0.1:18000
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Full<Bytes>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_forwarder LISTEN_ADDR UPSTREAM_BASE_URL";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: http::Uri = args.next().ok_or(usage)?.parse()?;
    // The proxy's own runtime, so the two are compared on the same scheduler.
    let rt = llm_proxy::server::runtime()?;
    rt.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: http::Uri) -> Result<(), Error> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(tcp);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bare_forwarder on http://{listen} -> {upstream}");
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
    let reply = client.request(out).await?;
    let (parts, body) = reply.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = parts.status;
    if let Some(v) = parts.headers.get(http::header::CONTENT_TYPE) {
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, v.clone());
    }
    Ok(resp)
}
