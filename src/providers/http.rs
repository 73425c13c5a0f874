//! The one pooled HTTP client every provider shares, and the helpers that turn its replies
//! into [`UpstreamError`]s without ever echoing a secret.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

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

/// Builds the shared client: rustls with the `ring` provider and the platform's roots,
/// keep-alive pooling, HTTP/2 where the upstream offers it through ALPN, no proxies from the
/// environment (an LLM gateway must not silently route through one), no redirects.
pub fn build_client(settings: &ClientSettings) -> Result<reqwest::Client, ClientBuildError> {
    // Installing twice is harmless (tests build many clients); only the first call wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .tcp_nodelay(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientBuildError(e.to_string()))
}

/// An upstream URL parsed once, when the provider is built: parsing (host, IDNA) on every
/// request cost about as much CPU as the rest of building it. A URL that does not parse is
/// kept as written, and the client reports it on each request as a transport error.
#[derive(Debug, Clone)]
pub struct Endpoint {
    raw: String,
    parsed: Option<reqwest::Url>,
}

impl Endpoint {
    pub fn new(raw: String) -> Self {
        Self {
            parsed: reqwest::Url::parse(&raw).ok(),
            raw,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// A POST to this endpoint.
    pub fn post(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        match &self.parsed {
            Some(url) => client.post(url.clone()),
            None => client.post(self.raw.as_str()),
        }
    }
}

/// Sends a request and checks its status: transport failures and non-2xx replies become
/// [`UpstreamError`]s with `key` redacted from every message.
pub async fn send(
    rb: reqwest::RequestBuilder,
    key: Option<&Secret>,
) -> Result<reqwest::Response, UpstreamError> {
    let resp = rb.send().await.map_err(|e| transport_error(&e, key))?;
    if !resp.status().is_success() {
        return Err(status_error(resp, key).await);
    }
    Ok(resp)
}

/// Sends a request and reads its whole successful body.
pub async fn fetch(
    rb: reqwest::RequestBuilder,
    key: Option<&Secret>,
) -> Result<Bytes, UpstreamError> {
    let resp = send(rb, key).await?;
    read_ok_body(resp, key).await
}

/// Largest upstream body we read (non-streaming replies and error bodies).
const MAX_BODY: usize = 64 << 20;
/// How much of an error body is worth reading.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Maps a transport error from the client, redacting `key` from its text.
pub fn transport_error(err: &reqwest::Error, key: Option<&Secret>) -> UpstreamError {
    let text = redact(&error_chain(err), key.as_slice());
    if err.is_connect() {
        if err.is_timeout() {
            return UpstreamError::Timeout(TimeoutKind::Connect, Duration::ZERO);
        }
        UpstreamError::Connect(text)
    } else if err.is_timeout() {
        UpstreamError::Timeout(TimeoutKind::Total, Duration::ZERO)
    } else if err.is_body() || err.is_decode() {
        UpstreamError::Stream(text)
    } else {
        UpstreamError::Connect(text)
    }
}

/// The error and its causes, with the URL's query removed (it may carry a key).
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    if let Some(url) = err.url().filter(|u| u.query().is_some()) {
        let mut bare = url.clone();
        bare.set_query(None);
        out = out.replace(url.as_str(), bare.as_str());
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reads a body up to `limit` bytes; more is an error, not an allocation.
pub async fn read_body(
    resp: reqwest::Response,
    limit: usize,
    key: Option<&Secret>,
) -> Result<Bytes, UpstreamError> {
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| transport_error(&e, key))?;
        if buf.len() + piece.len() > limit {
            return Err(UpstreamError::Malformed(format!(
                "reply larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&piece);
    }
    Ok(buf.freeze())
}

/// Reads a whole successful reply.
pub async fn read_ok_body(
    resp: reqwest::Response,
    key: Option<&Secret>,
) -> Result<Bytes, UpstreamError> {
    read_body(resp, MAX_BODY, key).await
}

/// Turns a non-2xx reply into an error carrying the upstream's message and retry hint.
pub async fn status_error(resp: reqwest::Response, key: Option<&Secret>) -> UpstreamError {
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
