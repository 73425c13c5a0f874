//! The connections to one upstream (a scheme and authority), kept by the URLs a provider
//! calls on every request (its chat or messages endpoint, its per-model URLs).
//!
//! Why not hyper-util's pooled client, which other requests still use: its pool is keyed
//! by scheme and authority, hashed with SipHash a byte at a time on every checkout and
//! return; each request builds a checkout future and a lazy connect future, and after
//! every HTTP/1 reply it spawns a task that waits for the connection to be idle again.
//! Together that was about a tenth of the proxy's instructions per request. Here the URL
//! holds its upstream's connections: an HTTP/1 connection goes back into a list when the reply's body
//! has been read to the end (see [`UpstreamBody`]), an HTTP/2 connection is shared by
//! every request, and nothing is hashed or spawned per request.
//!
//! What it keeps from the pooled client: one connection task per connection, HTTP/2 when
//! the upstream offers it through ALPN, idle connections closed after the idle timeout
//! (checked whenever the URL is used; without traffic they last until the upstream closes
//! them, which servers do on their own timeouts), at most `pool_max_idle_per_host` kept,
//! and a request that a reused connection refused before writing it (the upstream closed
//! the connection meanwhile) sent again on another one. A reply whose body is dropped
//! before its end takes its connection with it: hyper closes it, which is how a client
//! that goes away cancels the upstream's generation.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use super::connect::DeadlineConnector;

pub type Connector = DeadlineConnector<HttpsConnector<HttpConnector>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type H1 = http1::SendRequest<Full<Bytes>>;
type H2 = http2::SendRequest<Full<Bytes>>;

/// Pooled connections that may fail one request (closed by the upstream a moment before)
/// before a new connection is opened for it.
const MAX_STALE: usize = 4;

/// Why a request got no reply head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (DNS, TCP, TLS, the connect deadline).
    Connect(BoxError),
    /// The connection failed while the request was sent or the reply head awaited.
    Send(hyper::Error),
}

/// One URL on an upstream: where its requests go, and the connections they go over,
/// shared by every URL with the same scheme and authority (see [`Route::sibling`]).
pub struct Route {
    /// The absolute URL: what HTTP/2 sends (scheme and authority become pseudo-headers).
    uri: http::Uri,
    /// The origin form (`/v1/chat/completions?…`): the HTTP/1 request line.
    origin: http::Uri,
    upstream: Arc<Upstream>,
}

/// One upstream's connections (a scheme and authority).
pub struct Upstream {
    /// Where connections are opened to (the first route's URL; only its scheme and
    /// authority matter).
    uri: http::Uri,
    /// `Host` for HTTP/1: the authority without its scheme's default port.
    host: HeaderValue,
    connector: Connector,
    idle_timeout: Duration,
    max_idle: usize,
    conns: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    /// HTTP/1 connections with no request on them, the longest idle first.
    idle: VecDeque<Idle>,
    /// The HTTP/2 connection, once the upstream has spoken HTTP/2, and when a request
    /// last took it (it is dropped after the idle timeout like the others).
    h2: Option<(H2, Instant)>,
}

struct Idle {
    sender: H1,
    since: Instant,
}

/// A connection to send one request on.
enum Conn {
    H1(H1),
    H2(H2),
}

type Request = http::Request<Full<Bytes>>;

/// What one try on a connection came to.
enum Try {
    Replied(http::Response<UpstreamBody>),
    /// The connection refused the request before writing any of it: it can go to
    /// another connection.
    Unsent(Request, hyper::Error),
    /// The request was (at least partly) written: it must not be sent again.
    Failed(hyper::Error),
}

impl From<TrySendError<Request>> for Try {
    fn from(mut e: TrySendError<Request>) -> Self {
        match e.take_message() {
            Some(unsent) => Try::Unsent(unsent, e.into_error()),
            None => Try::Failed(e.into_error()),
        }
    }
}

impl Route {
    /// A route with connections of its own. `None` when `uri` has no authority
    /// (`parse_url` refuses such URLs first).
    pub fn new(
        uri: &http::Uri,
        connector: Connector,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Option<Self> {
        let authority = uri.authority()?;
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = match authority.port_u16() {
            Some(p) if p == default_port => authority.host(),
            _ => authority.as_str(),
        };
        let upstream = Arc::new(Upstream {
            uri: uri.clone(),
            host: HeaderValue::from_str(host).ok()?,
            connector,
            idle_timeout,
            max_idle,
            conns: Mutex::new(Conns::default()),
        });
        Self::on(uri, upstream)
    }

    /// `uri` over this route's connections when it names the same scheme and authority,
    /// else `None`: a provider's per-model URLs share one upstream's connections.
    pub fn sibling(&self, uri: &http::Uri) -> Option<Self> {
        let same = uri.scheme() == self.uri.scheme() && uri.authority() == self.uri.authority();
        if same {
            Self::on(uri, self.upstream.clone())
        } else {
            None
        }
    }

    fn on(uri: &http::Uri, upstream: Arc<Upstream>) -> Option<Self> {
        let origin = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse()
            .ok()?;
        Some(Self {
            uri: uri.clone(),
            origin,
            upstream,
        })
    }

    /// The `Host` header HTTP/1 requests carry.
    #[cfg(test)]
    pub fn host(&self) -> &HeaderValue {
        &self.upstream.host
    }

    /// Whether two routes share their connections.
    #[cfg(test)]
    pub fn shares_connections_with(&self, other: &Route) -> bool {
        Arc::ptr_eq(&self.upstream, &other.upstream)
    }

    pub async fn send(&self, req: Request) -> Result<http::Response<UpstreamBody>, SendError> {
        self.upstream.send(self, req).await
    }
}

impl Upstream {
    /// Sends `req` to `route` (its URI and `Host` are set here, per the connection's
    /// version) and returns the reply head; the body streams from the connection.
    async fn send(
        self: &Arc<Self>,
        route: &Route,
        mut req: Request,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        // Each turn either takes a pooled connection (and drops it if it failed) or opens
        // a new one and returns; after a few pooled ones failed, a new one is opened at
        // once. Either way the loop ends.
        // A `Host` from the provider's configured headers (routing through an ingress by
        // address, say) is kept; otherwise HTTP/1 gets the URL's and HTTP/2 none.
        let own_host = !req.headers().contains_key(HOST);
        let mut stale = 0;
        loop {
            let pooled = if stale < MAX_STALE {
                self.checkout()
            } else {
                None
            };
            let (conn, reused) = match pooled {
                Some(conn) => (conn, true),
                // Boxed: the connect and handshake futures are large, and inline they
                // would make every request's future (moved several times) that large.
                None => (Box::pin(self.connect()).await?, false),
            };
            let tried = match conn {
                Conn::H1(sender) => self.try_h1(route, sender, req, own_host).await,
                Conn::H2(sender) => self.try_h2(route, sender, req, own_host).await,
            };
            match tried {
                Try::Replied(resp) => return Ok(resp),
                Try::Unsent(unsent, _) if reused => {
                    stale += 1;
                    req = unsent;
                }
                Try::Unsent(_, e) | Try::Failed(e) => return Err(SendError::Send(e)),
            }
        }
    }

    /// One try on an HTTP/1 connection: origin-form URI and `Host`; the connection goes
    /// back to the pool with the reply's body (see [`UpstreamBody`]).
    async fn try_h1(
        self: &Arc<Self>,
        route: &Route,
        mut sender: H1,
        mut req: Request,
        own_host: bool,
    ) -> Try {
        if let Err(e) = sender.ready().await {
            return Try::Unsent(req, e);
        }
        *req.uri_mut() = route.origin.clone();
        if own_host {
            req.headers_mut().insert(HOST, self.host.clone());
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let give_back = GiveBack {
                    sender,
                    upstream: Arc::clone(self),
                };
                Try::Replied(resp.map(|body| UpstreamBody::new(body, Some(give_back))))
            }
            Err(e) => Try::from(e),
        }
    }

    /// One try on the shared HTTP/2 connection: the absolute URI (it becomes the
    /// pseudo-headers) and no `Host`. A closed connection is dropped from the pool by the
    /// next checkout.
    async fn try_h2(&self, route: &Route, mut sender: H2, mut req: Request, own_host: bool) -> Try {
        if let Err(e) = sender.ready().await {
            return Try::Unsent(req, e);
        }
        *req.uri_mut() = route.uri.clone();
        if own_host {
            // Set by an HTTP/1 try before, on a connection that refused it.
            req.headers_mut().remove(HOST);
        }
        match sender.try_send_request(req).await {
            Ok(resp) => Try::Replied(resp.map(|body| UpstreamBody::new(body, None))),
            Err(e) => Try::from(e),
        }
    }

    /// A live pooled connection: the shared HTTP/2 one, else the HTTP/1 connection idle
    /// the shortest time that is ready for a request. Closed and expired ones are dropped
    /// on the way; one not ready yet (its connection still writing the previous request's
    /// body after an early reply, or about to take the next request) stays in the list.
    fn checkout(&self) -> Option<Conn> {
        let mut conns = self.lock();
        let now = Instant::now();
        if let Some((h2, used)) = &mut conns.h2 {
            if !h2.is_closed() && now.duration_since(*used) < self.idle_timeout {
                *used = now;
                return Some(Conn::H2(h2.clone()));
            }
            conns.h2 = None;
        }
        self.expire(&mut conns, now);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..conns.idle.len() {
            let Some(mut idle) = conns.idle.pop_back() else {
                break;
            };
            match idle.sender.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => return Some(Conn::H1(idle.sender)),
                Poll::Ready(Err(_)) => {}
                Poll::Pending => conns.idle.push_front(idle),
            }
        }
        None
    }

    /// Drops the idle connections past the idle timeout at `now` (they are at the front).
    fn expire(&self, conns: &mut Conns, now: Instant) {
        while conns
            .idle
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= self.idle_timeout)
        {
            conns.idle.pop_front();
        }
    }

    /// An HTTP/1 connection whose reply has been read to the end.
    fn put(&self, sender: H1) {
        if sender.is_closed() {
            return;
        }
        let mut conns = self.lock();
        let now = Instant::now();
        self.expire(&mut conns, now);
        if conns.idle.len() < self.max_idle {
            conns.idle.push_back(Idle { sender, since: now });
        }
    }

    /// A poisoned lock only means a panic elsewhere while it was held; the list itself is
    /// always consistent (every change is a single push or pop).
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a connection (within the connector's deadline) and starts its task.
    async fn connect(&self) -> Result<Conn, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(SendError::Send)?;
            run_connection(conn, "HTTP/2");
            // Requests that found no connection at once each open one; the first to
            // finish becomes the shared one and the others close after their request.
            let mut conns = self.lock();
            if conns.h2.as_ref().is_none_or(|(h2, _)| h2.is_closed()) {
                conns.h2 = Some((sender.clone(), Instant::now()));
            }
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(SendError::Send)?;
            run_connection(conn, "HTTP/1");
            Ok(Conn::H1(sender))
        }
    }
}

/// Runs a connection's I/O in a task of its own until it closes; how it ended is only
/// worth a debug line (the requests on it report their own failures).
fn run_connection<C>(conn: C, version: &'static str)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream {version} connection ended: {e}");
        }
    });
}

/// What returns an HTTP/1 connection to its upstream's list.
struct GiveBack {
    sender: H1,
    upstream: Arc<Upstream>,
}

/// A reply body from an upstream. For HTTP/1 it holds the connection's sender and puts it
/// back into the pool when the body has been read to its end; dropped earlier, it drops
/// the sender and hyper closes the connection.
pub struct UpstreamBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.give_back.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    fn new(inner: Incoming, give_back: Option<GiveBack>) -> Self {
        let mut body = Self { inner, give_back };
        // An empty body (content-length 0) is over before it is read.
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    /// A body from hyper-util's pooled client, which returns connections itself.
    pub fn pooled_elsewhere(inner: Incoming) -> Self {
        Self {
            inner,
            give_back: None,
        }
    }

    fn finish(&mut self) {
        if let Some(g) = self.give_back.take() {
            g.upstream.put(g.sender);
        }
    }

    /// For a reply complete by its content (a stream's `[DONE]`) whose body has not
    /// ended yet: what is left is normally only the body's framing (HTTP/1's last chunk).
    /// It is read here so the connection can go back to the pool; dropping the body
    /// instead would close the connection after every stream. The end is usually
    /// buffered already; if not, a task waits for it a short while (and for at most a
    /// little more data), then gives up and the connection closes.
    pub fn release(mut self) {
        if self.give_back.is_none() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut self).poll_frame(&mut cx) {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => return,
            Poll::Ready(Some(Ok(_))) if self.give_back.is_none() => return,
            _ => {}
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut left = RELEASE_BYTES;
                while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut self).await {
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    match left.checked_sub(len) {
                        Some(l) => left = l,
                        None => return,
                    }
                }
            };
            let _ = tokio::time::timeout(RELEASE_WAIT, drain).await;
        });
    }
}

/// How long [`UpstreamBody::release`] waits for the end of a body, and how much more of it
/// it reads: past either, the connection is not worth keeping.
const RELEASE_WAIT: Duration = Duration::from_secs(2);
const RELEASE_BYTES: usize = 64 << 10;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            // A failed body leaves the connection unusable: it goes with the sender.
            Poll::Ready(Some(Err(_))) => this.give_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
