//! The HTTP client every provider shares, and the helpers that turn its replies into
//! [`UpstreamError`]s without ever echoing a secret.
//!
//! The URLs called on every request ([`Endpoint`]s: chat completions, messages) keep their
//! own connections (see `pool`); everything else (model lists, Gemini's per-model URLs)
//! goes through hyper-util's pooled client. Both use the same rustls connector, with no
//! general-purpose client on top: its middleware (redirect policy re-parsing the URL,
//! retry bookkeeping cloning the client, default-header merging) cost about a tenth of the
//! proxy's CPU per request and did nothing for us — we never follow redirects, retries are
//! the router's job, and each provider sets its own headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connect::DeadlineConnector;
pub use super::pool::UpstreamBody;
use super::pool::{Connector, Route, SendError};
use super::{TimeoutKind, UpstreamError};
use crate::secret::{Secret, redact};

/// Settings of the shared client, from `routing.*` in the config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// A reply whose body has not been read yet.
pub type Response = http::Response<UpstreamBody>;

/// The shared upstream client. Cloning it is cheap (the pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<Connector, Full<Bytes>>,
    /// For [`Endpoint`]s, which keep their own connections (see `pool`).
    connector: Connector,
    settings: ClientSettings,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// Builds the shared client: rustls with the `ring` provider and the platform's certificate
/// verifier, keep-alive pooling, HTTP/2 where the upstream offers it through ALPN, no
/// proxies from the environment (an LLM gateway must not silently route through one), no
/// redirects.
pub fn build_client(settings: &ClientSettings) -> Result<HttpClient, ClientBuildError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier)
        .map_err(|e| ClientBuildError(e.to_string()))?
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    // The TLS layer decides the scheme; the TCP connector must accept `https` URLs.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(settings.connect_timeout));
    // Long streams through NATs and load balancers need the connection kept visibly
    // alive, and a peer that vanished noticed within a minute.
    tcp.set_keepalive(Some(Duration::from_secs(15)));
    tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
    tcp.set_keepalive_retries(Some(3));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let connector = DeadlineConnector::new(connector, settings.connect_timeout);
    let inner = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector.clone());
    Ok(HttpClient {
        inner,
        connector,
        settings: settings.clone(),
    })
}

impl HttpClient {
    /// A POST to `url` (parsed here; see [`Endpoint`] for URLs used on every request).
    pub fn post(&self, url: &str) -> RequestBuilder<'_> {
        self.request(http::Method::POST, parse_url(url))
    }

    /// A GET of `url`.
    pub fn get(&self, url: &str) -> RequestBuilder<'_> {
        self.request(http::Method::GET, parse_url(url))
    }

    fn request(&self, method: http::Method, uri: Result<http::Uri, String>) -> RequestBuilder<'_> {
        let (uri, error) = match uri {
            Ok(u) => (u, None),
            Err(e) => (http::Uri::default(), Some(e)),
        };
        let mut head = http::Request::new(());
        *head.method_mut() = method;
        *head.uri_mut() = uri;
        RequestBuilder {
            client: self,
            upstream: None,
            head,
            body: Bytes::new(),
            error,
        }
    }
}

/// Parses an upstream URL: absolute `http`/`https` with a host and, if given, a valid
/// port. Credentials in the URL are refused rather than sent in the clear in the
/// authority: keys go in `api_key` or a configured header. Used by config validation
/// too, so a URL that passes validation is one the client can send to.
pub fn parse_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("invalid upstream URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("invalid upstream URL: not an absolute http(s) URL".into());
    }
    let Some(authority) = uri.authority() else {
        return Err("invalid upstream URL: no host".into());
    };
    if authority.as_str().contains('@') {
        return Err(
            "credentials in the URL are not supported: give the key as api_key or a header".into(),
        );
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("invalid upstream URL: no host".into());
    }
    // `http::Uri` accepts any text after the colon and then ignores it.
    if authority.as_str().len() > host.len() && authority.port_u16().is_none() {
        return Err("invalid upstream URL: the port is not a number from 0 to 65535".into());
    }
    Ok(uri)
}

/// A request being put together for an upstream. A header that cannot be sent (a value
/// with a newline, say) is remembered and reported when the request is sent, never as a
/// panic and never with the value in the message.
pub struct RequestBuilder<'c> {
    client: &'c HttpClient,
    /// Set for an [`Endpoint`]'s requests: sent on its upstream's connections.
    upstream: Option<Arc<Route>>,
    head: http::Request<()>,
    body: Bytes,
    error: Option<String>,
}

impl RequestBuilder<'_> {
    pub fn header(mut self, name: impl TryInto<HeaderName>, value: &str) -> Self {
        match (name.try_into(), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => {
                self.head.headers_mut().insert(n, v);
            }
            _ => self.fail("a header name or value is not valid"),
        }
        self
    }

    /// A header whose value is a constant of the code: made without a copy or a check on
    /// every request.
    pub fn static_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.head
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
        self
    }

    /// The provider's credential header.
    pub fn credential(mut self, credential: &Credential) -> Self {
        match &credential.0 {
            Some((name, value)) => {
                self.head.headers_mut().insert(name.clone(), value.clone());
            }
            None => self.fail(UNUSABLE_CREDENTIAL),
        }
        self
    }

    /// Starts the headers from `fixed` (see [`FixedHeaders`]); headers added before are
    /// dropped, so this comes first.
    pub fn fixed_headers(mut self, fixed: &FixedHeaders) -> Self {
        *self.head.headers_mut() = fixed.map.clone();
        if fixed.unusable_credential {
            self.fail(UNUSABLE_CREDENTIAL);
        }
        self
    }

    /// Adds every header of `extra` (the provider's configured headers).
    pub fn headers(mut self, extra: &http::HeaderMap) -> Self {
        let map = self.head.headers_mut();
        for (name, value) in extra {
            map.insert(name.clone(), value.clone());
        }
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    fn fail(&mut self, why: &str) {
        self.error.get_or_insert_with(|| why.to_owned());
    }
}

/// Why every request of a provider whose key cannot be a header value fails; it names
/// the problem, never the key.
const UNUSABLE_CREDENTIAL: &str = "the API key cannot be sent in a header";

/// The headers every request of one kind to a provider carries, put together once when
/// the provider is built: its configured headers, then the code's constants, then the
/// credential (a later one wins, so a configured header cannot replace the key or the
/// content type). A request starts from a copy of the map: one clone instead of a hashed
/// insert per header, about 1k instructions per request (bench/RESULTS.md). Headers that
/// depend on the request (`traceparent`, `Host`) are inserted after.
#[derive(Debug, Clone)]
pub struct FixedHeaders {
    map: http::HeaderMap,
    /// The credential cannot be a header value: every request fails, saying so.
    unusable_credential: bool,
}

impl FixedHeaders {
    /// `configured`, then `constants`, then `credential`'s header, each replacing a
    /// header of the same name before it.
    pub fn new(
        configured: &http::HeaderMap,
        constants: &[(HeaderName, &'static str)],
        credential: Option<&Credential>,
    ) -> Self {
        // Room for the per-request headers: a copy keeps its index table's size, so
        // adding them never rehashes (the entry list, copied at its length, still grows
        // once).
        let per_request = 4;
        let mut map =
            http::HeaderMap::with_capacity(configured.len() + constants.len() + 1 + per_request);
        for (name, value) in configured {
            map.insert(name.clone(), value.clone());
        }
        for (name, value) in constants {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        let mut unusable_credential = false;
        match credential.map(|c| &c.0) {
            Some(Some((name, value))) => {
                map.insert(name.clone(), value.clone());
            }
            Some(None) => unusable_credential = true,
            None => {}
        }
        Self {
            map,
            unusable_credential,
        }
    }
}

/// A provider's credential header, checked and marked sensitive (kept out of debug output)
/// once, when the provider is built, not formatted and validated on every request. A key
/// that cannot be a header value (a newline in it) stays that fact and fails each request
/// without echoing the key.
#[derive(Debug, Clone)]
pub struct Credential(Option<(HeaderName, HeaderValue)>);

impl Credential {
    pub fn header(name: HeaderName, value: &str) -> Self {
        Self(HeaderValue::from_str(value).ok().map(|mut v| {
            v.set_sensitive(true);
            (name, v)
        }))
    }

    pub fn bearer(token: &str) -> Self {
        Self::header(AUTHORIZATION, &format!("Bearer {token}"))
    }
}

/// An upstream URL parsed once, when the provider is built, with its own connections:
/// parsing it on every request cost about as much CPU as the rest of building the
/// request, and the shared client's pool about a tenth of a request (see `pool`). A URL
/// that does not parse is reported on each request as a transport error (config
/// validation rejects most before).
#[derive(Clone)]
pub struct Endpoint {
    raw: String,
    parsed: Result<http::Uri, String>,
    route: Option<Arc<Route>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Endpoint").field(&self.raw).finish()
    }
}

impl Endpoint {
    /// An endpoint with connections of its own.
    pub fn new(raw: String, client: &HttpClient) -> Self {
        Self::sharing(raw, client, None)
    }

    /// An endpoint over `other`'s connections when both name the same scheme and
    /// authority, else with its own.
    pub fn sharing(raw: String, client: &HttpClient, other: Option<&Endpoint>) -> Self {
        let parsed = parse_url(&raw);
        let route = parsed.as_ref().ok().and_then(|uri| {
            other
                .and_then(|o| o.route.as_ref())
                .and_then(|r| r.sibling(uri))
                .or_else(|| {
                    Route::new(
                        uri,
                        client.connector.clone(),
                        client.settings.pool_idle_timeout,
                        client.settings.pool_max_idle_per_host,
                    )
                })
                .map(Arc::new)
        });
        Self { raw, parsed, route }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// A POST to this endpoint.
    pub fn post<'c>(&self, client: &'c HttpClient) -> RequestBuilder<'c> {
        let mut rb = client.request(http::Method::POST, self.parsed.clone());
        rb.upstream = self.route.clone();
        rb
    }
}

/// Endpoints for URLs that depend on the model (Azure deployments, Gemini's per-model
/// methods), made on a model's first request and kept, so that those URLs too are parsed
/// once; all of a provider's share one upstream's connections (with the provider's fixed
/// endpoint too, when given one). Models come from the config, so this stays small; past
/// [`MAX_MODEL_ENDPOINTS`] models (a wildcard route passing any name through) further
/// ones are not kept and go through the shared pooled client.
#[derive(Default)]
pub struct ModelEndpoints {
    /// Per model: the endpoint for plain requests and the one for streams.
    by_model: std::sync::Mutex<std::collections::HashMap<String, [Option<Endpoint>; 2]>>,
    /// Whose connections new endpoints share (else the first endpoint made's).
    base: Option<Endpoint>,
}

/// How many models' endpoints a provider keeps.
const MAX_MODEL_ENDPOINTS: usize = 256;

impl std::fmt::Debug for ModelEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelEndpoints")
    }
}

impl ModelEndpoints {
    /// Endpoints that share `base`'s connections (when they name its authority).
    pub fn sharing(base: &Endpoint) -> Self {
        Self {
            by_model: Default::default(),
            base: Some(base.clone()),
        }
    }

    /// A POST to `model`'s URL (`url` makes it the first time).
    pub fn post<'c>(
        &self,
        client: &'c HttpClient,
        model: &str,
        stream: bool,
        url: impl FnOnce() -> String,
    ) -> RequestBuilder<'c> {
        let mut map = self.by_model.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(ep)) = map.get(model).map(|e| &e[usize::from(stream)]) {
            return ep.post(client);
        }
        let url = url();
        if map.len() >= MAX_MODEL_ENDPOINTS && !map.contains_key(model) {
            drop(map);
            return client.post(&url);
        }
        let base = self
            .base
            .as_ref()
            .or_else(|| map.values().flatten().flatten().next());
        let ep = Endpoint::sharing(url, client, base);
        let rb = ep.post(client);
        map.entry(model.to_owned()).or_default()[usize::from(stream)] = Some(ep);
        rb
    }
}

/// Sends a request and checks its status: transport failures and non-2xx replies become
/// [`UpstreamError`]s with `key` redacted from every message.
pub async fn send(rb: RequestBuilder<'_>, key: Option<&Secret>) -> Result<Response, UpstreamError> {
    if let Some(why) = rb.error {
        return Err(UpstreamError::Connect(why));
    }
    let (parts, ()) = rb.head.into_parts();
    // Kept to say which upstream failed (hyper's errors do not); a reference count, no copy.
    let authority = parts.uri.authority().cloned();
    let req = http::Request::from_parts(parts, Full::new(rb.body));
    let resp = match &rb.upstream {
        Some(upstream) => upstream.send(req).await.map_err(|e| match e {
            SendError::Connect(e) => transport_error(&*e, true, authority.as_ref(), key),
            SendError::Send(e) => transport_error(&e, false, authority.as_ref(), key),
        })?,
        None => rb
            .client
            .inner
            .request(req)
            .await
            .map_err(|e| transport_error(&e, e.is_connect(), authority.as_ref(), key))?
            .map(UpstreamBody::pooled_elsewhere),
    };
    if !resp.status().is_success() {
        return Err(status_error(resp, key).await);
    }
    Ok(resp)
}

/// Sends a request and reads its whole successful body.
pub async fn fetch(rb: RequestBuilder<'_>, key: Option<&Secret>) -> Result<Bytes, UpstreamError> {
    let resp = send(rb, key).await?;
    read_ok_body(resp, key).await
}

/// Largest upstream body we read (non-streaming replies and error bodies).
const MAX_BODY: usize = 64 << 20;
/// How much of an error body is worth reading.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Maps a failure to get a reply (connect, TLS, the connection closing before the reply)
/// to an [`UpstreamError`], redacting `key` from its text.
fn transport_error(
    err: &(dyn std::error::Error + 'static),
    connecting: bool,
    authority: Option<&http::uri::Authority>,
    key: Option<&Secret>,
) -> UpstreamError {
    if connecting && timed_out(err) {
        return UpstreamError::Timeout(TimeoutKind::Connect, Duration::ZERO);
    }
    let text = match authority {
        Some(a) => format!("{a}: {}", error_chain(err)),
        None => error_chain(err),
    };
    UpstreamError::Connect(redact(&text, key.as_slice()))
}

/// Maps an error while reading a reply's body.
pub fn body_error(err: &hyper::Error, key: Option<&Secret>) -> UpstreamError {
    UpstreamError::Stream(redact(&error_chain(err), key.as_slice()))
}

fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes, one line. hyper's errors never contain the URL.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some layers repeat their cause's text; say each thing once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads a body up to `limit` bytes; more is an error, not an allocation. A body that
/// arrives in one piece (most replies) is returned as it is, without a copy.
pub async fn read_body(
    resp: Response,
    limit: usize,
    key: Option<&Secret>,
) -> Result<Bytes, UpstreamError> {
    let mut body = resp.into_body();
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e, key))?;
        let Ok(piece) = frame.into_data() else {
            continue; // trailers
        };
        len += piece.len();
        if len > limit {
            return Err(UpstreamError::Malformed(format!(
                "reply larger than {limit} bytes"
            )));
        }
        match first.take() {
            None if rest.is_empty() => first = Some(piece),
            earlier => {
                if let Some(earlier) = earlier {
                    rest.extend_from_slice(&earlier);
                }
                rest.extend_from_slice(&piece);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// Reads a whole successful reply.
pub async fn read_ok_body(resp: Response, key: Option<&Secret>) -> Result<Bytes, UpstreamError> {
    read_body(resp, MAX_BODY, key).await
}

/// Turns a non-2xx reply into an error carrying the upstream's message and retry hint.
pub async fn status_error(resp: Response, key: Option<&Secret>) -> UpstreamError {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = read_body(resp, MAX_ERROR_BODY, key)
        .await
        .unwrap_or_default();
    let message = redact(
        &crate::wire::openai::error_message_from_body(&body),
        key.as_slice(),
    );
    if status == 400 && crate::wire::openai::is_content_filter_error(&body) {
        return UpstreamError::ContentFilter(message);
    }
    UpstreamError::Status {
        status,
        message,
        retry_after,
    }
}

/// The upstream's retry hint: `retry-after-ms` / `x-ms-retry-after-ms` (Azure) or
/// `retry-after` in seconds. HTTP dates are rare from LLM APIs and are ignored.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e12)
        {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;

    #[tokio::test]
    async fn unsendable_requests_fail_without_echoing_what_was_wrong() {
        let client = build_client(&ClientSettings::default()).unwrap();
        let key = Secret::new("sk-line\nbreak".to_owned());
        let rb = client
            .post("http://127.0.0.1:9/v1/chat/completions")
            .credential(&Credential::bearer(key.expose()));
        let err = send(rb, Some(&key)).await.unwrap_err();
        assert!(matches!(&err, UpstreamError::Connect(m) if !m.contains("sk-line")));

        for bad in ["not a url", "ftp://host/x", "/relative/path"] {
            let err = send(client.post(bad), None).await.unwrap_err();
            assert!(
                matches!(&err, UpstreamError::Connect(m) if m.contains("invalid upstream URL")),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        // Bind, learn the port, close: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = build_client(&ClientSettings::default()).unwrap();
        let url = format!("http://127.0.0.1:{port}/v1/models");
        let err = fetch(client.get(&url), None).await.unwrap_err();
        // The message names the upstream: hyper's own errors do not.
        let host = format!("127.0.0.1:{port}");
        assert!(
            matches!(&err, UpstreamError::Connect(m) if m.contains(&host)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_connect_deadline_covers_the_tls_handshake() {
        // Accepts TCP (the kernel completes the handshake) but never answers the TLS hello.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let client = build_client(&ClientSettings {
            connect_timeout: Duration::from_millis(200),
            ..ClientSettings::default()
        })
        .unwrap();
        let url = format!("https://127.0.0.1:{port}/v1/chat/completions");
        let started = std::time::Instant::now();
        let err = send(client.post(&url).body("{}"), None).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::Timeout(TimeoutKind::Connect, _)),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(silent);
    }

    #[test]
    fn upstream_urls_are_checked_as_the_client_will_use_them() {
        for ok in [
            "https://api.openai.com/v1",
            "http://localhost:11434",
            "http://[::1]:8000/v1",
            " https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21\n",
        ] {
            let uri = parse_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            // A bare host gets the path `/`; nothing else changes.
            assert_eq!(uri.to_string().trim_end_matches('/'), ok.trim(), "{ok}");
        }
        for (bad, why) in [
            ("https://user:sk-secret@api.example.com/v1", "credentials"),
            ("https://api.example.com:99999/v1", "port"),
            ("http://api.example.com:8o80", "port"),
            ("ftp://example.com", "http(s)"),
            ("api.example.com/v1", "invalid upstream URL"),
            ("http:///v1", "invalid"),
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("sk-secret"), "{err}");
        }
    }

    /// The configured headers, then the constants, then the credential: a configured
    /// header cannot replace the key or the content type; a key that cannot be a header
    /// fails each request without echoing it.
    #[tokio::test]
    async fn fixed_headers_keep_their_order_of_precedence() {
        let client = build_client(&ClientSettings::default()).unwrap();
        let mut configured = http::HeaderMap::new();
        configured.insert("x-team", HeaderValue::from_static("search"));
        configured.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        configured.insert(AUTHORIZATION, HeaderValue::from_static("Bearer configured"));
        let constants = [(CONTENT_TYPE, "application/json")];
        let fixed = FixedHeaders::new(
            &configured,
            &constants,
            Some(&Credential::bearer("sk-real")),
        );
        let rb = client
            .post("http://127.0.0.1:9/v1/chat/completions")
            .header("x-dropped", "set before the fixed headers")
            .fixed_headers(&fixed)
            .header("traceparent", "00-1-2-01");
        let h = rb.head.headers();
        assert_eq!(h["x-team"], "search");
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h[AUTHORIZATION], "Bearer sk-real");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert_eq!(h["traceparent"], "00-1-2-01");
        assert!(!h.contains_key("x-dropped"));
        assert_eq!(h.len(), 4);

        let unusable = FixedHeaders::new(
            &configured,
            &constants,
            Some(&Credential::bearer("sk-bad\nkey")),
        );
        let err = send(
            client.post("http://127.0.0.1:9/").fixed_headers(&unusable),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains(UNUSABLE_CREDENTIAL), "{err}");
        assert!(!err.contains("sk-bad"), "{err}");
    }

    #[test]
    fn the_host_header_is_the_one_the_client_would_write() {
        let client = build_client(&ClientSettings::default()).unwrap();
        for (url, host) in [
            ("https://api.openai.com/v1", "api.openai.com"),
            ("http://127.0.0.1:18000/v1", "127.0.0.1:18000"),
            ("http://[::1]:8000/v1", "[::1]:8000"),
            ("http://example.com:443/v1", "example.com:443"),
            // A scheme's default port is left out, as clients write it.
            ("https://api.openai.com:443/v1", "api.openai.com"),
            ("http://localhost:80", "localhost"),
        ] {
            let ep = Endpoint::new(url.to_owned(), &client);
            assert_eq!(ep.route.unwrap().host().to_str().unwrap(), host, "{url}");
        }
        assert!(
            Endpoint::new("not a url".to_owned(), &client)
                .route
                .is_none()
        );
    }

    /// An upstream over raw TCP that answers one request with `{}` and hands back the
    /// request's head, lowercased.
    async fn head_recording_upstream() -> (u16, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the head ended");
                head.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await
                .unwrap();
            String::from_utf8(head).unwrap().to_ascii_lowercase()
        });
        (port, server)
    }

    /// A default client and its chat endpoint on a local test upstream.
    fn local_chat_endpoint(port: u16) -> (HttpClient, Endpoint) {
        let client = build_client(&ClientSettings::default()).unwrap();
        let ep = Endpoint::new(
            format!("http://127.0.0.1:{port}/v1/chat/completions"),
            &client,
        );
        (client, ep)
    }

    /// The request line is in origin form and the precomputed Host arrives, once, on a
    /// real connection.
    #[tokio::test]
    async fn an_upstream_gets_exactly_one_host_header() {
        let (port, server) = head_recording_upstream().await;
        let (client, ep) = local_chat_endpoint(port);
        fetch(ep.post(&client).body("{}"), None).await.unwrap();
        let head = server.await.unwrap();
        let hosts: Vec<_> = head.lines().filter(|l| l.starts_with("host:")).collect();
        assert_eq!(hosts, [format!("host: 127.0.0.1:{port}")], "{head}");
        assert!(
            head.starts_with("post /v1/chat/completions http/1.1\r\n"),
            "{head}"
        );
    }

    /// An upstream over raw TCP that counts connections. Each request is answered by its
    /// `x-mode` header: `close` closes the connection after the reply (without saying so),
    /// `stream` sends the first chunk of a body that never ends, anything else `{}`.
    async fn counting_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < end + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + len);
                        if head.contains("x-mode: sse") {
                            // A stream complete by its content, its last chunk after it
                            // (at once, or a moment later).
                            let events = b"data: {}\n\ndata: [DONE]\n\n";
                            let chunk = format!("{:x}\r\n", events.len());
                            let mut reply =
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                            reply.extend_from_slice(chunk.as_bytes());
                            reply.extend_from_slice(events);
                            reply.extend_from_slice(b"\r\n");
                            let late = head.contains("x-mode: sse-late");
                            if !late {
                                reply.extend_from_slice(b"0\r\n\r\n");
                            }
                            if sock.write_all(&reply).await.is_err() {
                                return;
                            }
                            if late {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                if sock.write_all(b"0\r\n\r\n").await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        if head.contains("x-mode: stream") {
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n")
                                .await;
                            let mut rest = [0u8; 64];
                            while matches!(sock.read(&mut rest).await, Ok(n) if n > 0) {}
                            return;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if sock.write_all(ok).await.is_err() || head.contains("x-mode: close") {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn endpoint_connections_are_reused_until_closed_abandoned_or_expired() {
        use std::sync::atomic::Ordering;
        let (port, accepted) = counting_upstream().await;
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let client = build_client(&ClientSettings::default()).unwrap();
        let ep = Endpoint::new(url.clone(), &client);
        let call =
            |mode: &'static str| fetch(ep.post(&client).header("x-mode", mode).body("{}"), None);

        for _ in 0..3 {
            assert_eq!(call("plain").await.unwrap(), "{}");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three requests"
        );

        // The upstream closes the connection after a reply without a word: the next
        // request does not fail, it gets a new connection.
        assert_eq!(call("close").await.unwrap(), "{}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(call("plain").await.unwrap(), "{}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // A reply dropped before its end takes its connection along (the one reused
        // here): the next request opens a new one.
        let resp = send(ep.post(&client).header("x-mode", "stream").body("{}"), None)
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "{}");
        drop(body);
        assert_eq!(call("plain").await.unwrap(), "{}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "the abandoned one not reused"
        );

        // Idle past the timeout: closed, and the next request opens a new one.
        let brief = build_client(&ClientSettings {
            pool_idle_timeout: Duration::from_millis(400),
            ..ClientSettings::default()
        })
        .unwrap();
        let ep = Endpoint::new(url, &brief);
        let call = || fetch(ep.post(&brief).body("{}"), None);
        call().await.unwrap();
        call().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_millis(800)).await;
        call().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    /// A stream read up to its `[DONE]` and released gives its connection back, whether
    /// the body's last chunk had arrived already or comes a moment later.
    #[tokio::test]
    async fn a_released_stream_gives_its_connection_back() {
        use std::sync::atomic::Ordering;
        let (port, accepted) = counting_upstream().await;
        let (client, ep) = local_chat_endpoint(port);
        for mode in ["sse", "sse-late", "sse", "sse-late"] {
            let resp = send(ep.post(&client).header("x-mode", mode).body("{}"), None)
                .await
                .unwrap();
            let mut body = resp.into_body();
            let events = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(events.ends_with(b"data: [DONE]\n\n"), "{events:?}");
            body.release();
            // The connection is back once its task has read the last chunk.
            let wait = if mode == "sse-late" { 300 } else { 50 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            assert_eq!(
                fetch(ep.post(&client).header("x-mode", "plain").body("{}"), None)
                    .await
                    .unwrap(),
                "{}"
            );
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection throughout"
        );
    }

    /// A `Host` among the provider's configured headers is what the upstream gets.
    #[tokio::test]
    async fn a_configured_host_header_is_kept() {
        let (port, server) = head_recording_upstream().await;
        let (client, ep) = local_chat_endpoint(port);
        let mut configured = http::HeaderMap::new();
        configured.insert(http::header::HOST, HeaderValue::from_static("llm.internal"));
        fetch(ep.post(&client).headers(&configured).body("{}"), None)
            .await
            .unwrap();
        let head = server.await.unwrap();
        let hosts: Vec<_> = head.lines().filter(|l| l.starts_with("host:")).collect();
        assert_eq!(hosts, ["host: llm.internal"], "{head}");
    }

    #[tokio::test]
    async fn model_urls_are_made_once_and_share_their_upstreams_connections() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (port, accepted) = counting_upstream().await;
        let client = build_client(&ClientSettings::default()).unwrap();
        let eps = ModelEndpoints::default();
        let made = AtomicUsize::new(0);
        let url = |model: &str| {
            made.fetch_add(1, Ordering::SeqCst);
            format!("http://127.0.0.1:{port}/models/{model}")
        };
        for _ in 0..3 {
            for model in ["m", "n"] {
                for stream in [false, true] {
                    let rb = eps.post(&client, model, stream, || url(model));
                    assert_eq!(fetch(rb.body("{}"), None).await.unwrap(), "{}");
                }
            }
        }
        assert_eq!(
            made.load(Ordering::SeqCst),
            4,
            "one URL per model and method"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");

        // A base endpoint's connections are shared when the authority is the same.
        let base = Endpoint::new(format!("http://127.0.0.1:{port}/v1/chat"), &client);
        let other = Endpoint::new("http://127.0.0.2:9/v1".to_owned(), &client);
        let eps2 = ModelEndpoints::sharing(&base);
        let _ = eps2.post(&client, "m", false, || url("m"));
        let _ = eps2.post(&client, "o", false, || "http://127.0.0.2:9/o".to_owned());
        {
            let map = eps2.by_model.lock().unwrap();
            let route = |m: &str| map[m][0].as_ref().unwrap().route.clone().unwrap();
            let base_route = base.route.clone().unwrap();
            assert!(route("m").shares_connections_with(&base_route));
            assert!(!route("o").shares_connections_with(&base_route));
            assert!(!route("o").shares_connections_with(other.route.as_ref().unwrap()));
        }

        // Past the limit, a model's requests still go out, through the shared client.
        for i in 1..MAX_MODEL_ENDPOINTS {
            let _ = eps.post(&client, &format!("m{i}"), false, || url("x"));
        }
        let rb = eps.post(&client, "one-too-many", false, || url("one-too-many"));
        assert!(rb.upstream.is_none());
        assert_eq!(fetch(rb.body("{}"), None).await.unwrap(), "{}");
        assert_eq!(eps.by_model.lock().unwrap().len(), MAX_MODEL_ENDPOINTS);
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut bad = http::HeaderMap::new();
        bad.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&bad), None);
        bad.insert("retry-after", "-1".parse().unwrap());
        assert_eq!(retry_after(&bad), None);
    }
}
