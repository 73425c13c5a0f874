//! The `anthropic` provider kind: Anthropic's Messages API (`x-api-key` and
//! `anthropic-version` headers). Translation lives in [`crate::wire::anthropic`].

use super::http::{fetch, read_ok_body, send};
use super::sse_stream::{EventDecoder, Step, decode_sse};
use super::{ChatProvider, EventStream, UpstreamError};
use crate::secret::Secret;
use crate::types::{ChatRequest, ChatResponse, StreamChunk};
use crate::wire::anthropic::{API_VERSION, StreamDecoder, decode_response, encode_request};
use crate::wire::sse::SseEvent;

#[derive(Debug)]
pub struct AnthropicProvider {
    client: reqwest::Client,
    messages_url: String,
    models_url: String,
    api_key: Option<Secret>,
    headers: http::HeaderMap,
}

impl AnthropicProvider {
    /// `base_url` is the host root (`https://api.anthropic.com`), as LiteLLM writes it; a
    /// base that already ends in `/v1` is accepted too.
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<Secret>,
        headers: http::HeaderMap,
    ) -> Self {
        let base = base_url.trim_end_matches('/');
        let v1 = if base.ends_with("/v1") {
            base.to_owned()
        } else {
            format!("{base}/v1")
        };
        Self {
            client,
            messages_url: format!("{v1}/messages"),
            models_url: format!("{v1}/models"),
            api_key,
            headers,
        }
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut rb = rb
            .headers(self.headers.clone())
            .header("anthropic-version", API_VERSION);
        if let Some(k) = &self.api_key {
            rb = rb.header("x-api-key", k.expose());
        }
        rb
    }

    async fn send(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body =
            encode_request(req, model, stream).map_err(|e| UpstreamError::Untranslatable {
                param: e.param.unwrap_or_else(|| "messages".into()),
                message: e.message,
            })?;
        let body =
            serde_json::to_vec(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let rb = self
            .request(self.client.post(&self.messages_url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        send(rb, self.api_key.as_ref()).await
    }
}

impl ChatProvider for AnthropicProvider {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, UpstreamError> {
        let resp = self.send(req, model, false).await?;
        let body = read_ok_body(resp, self.api_key.as_ref()).await?;
        decode_response(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))
    }

    async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<EventStream, UpstreamError> {
        let resp = self.send(req, model, true).await?;
        let decoder = AnthropicEvents {
            decoder: StreamDecoder::new(),
            key: self.api_key.clone(),
        };
        Ok(decode_sse(resp, self.api_key.clone(), decoder))
    }

    async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        let rb = self.request(self.client.get(&self.models_url));
        let body = fetch(rb, self.api_key.as_ref()).await?;
        crate::wire::openai::decode_model_list(&body)
            .map_err(|e| UpstreamError::Malformed(e.to_string()))
    }
}

/// Anthropic's `error` event types in HTTP terms, so retry rules apply to them as to the
/// same failure reported as a status (529 overloaded, 429, 500 are retryable).
fn stream_error(kind: &str, message: String) -> UpstreamError {
    let status = match kind {
        "overloaded_error" => 529,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        _ => return UpstreamError::Stream(format!("{kind}: {message}")),
    };
    UpstreamError::Status {
        status,
        message,
        retry_after: None,
    }
}

struct AnthropicEvents {
    decoder: StreamDecoder,
    key: Option<Secret>,
}

impl EventDecoder for AnthropicEvents {
    fn event(&mut self, ev: SseEvent) -> Step {
        match self.decoder.decode(&ev.data) {
            Ok(Ok(events)) if events.is_empty() => Step::Skip,
            Ok(Ok(events)) => Step::Chunk(StreamChunk {
                events,
                raw_openai: None,
            }),
            Ok(Err(e)) => {
                let msg = crate::secret::redact(&e.message, self.key.as_ref().as_slice());
                Step::Fail(stream_error(&e.kind, msg))
            }
            Err(e) => Step::Fail(UpstreamError::Malformed(format!("bad stream event: {e}"))),
        }
    }

    fn complete(&self) -> bool {
        self.decoder.finished()
    }
}
