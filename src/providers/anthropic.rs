//! The `anthropic` provider kind: Anthropic's Messages API (`x-api-key` and
//! `anthropic-version` headers). Translation lives in [`crate::wire::anthropic`].

use super::http::{
    Credential, Endpoint, FixedHeaders, HttpClient, RequestBuilder, Response, fetch, read_ok_body,
    send,
};
use super::sse_stream::{EventDecoder, Step, decode_sse};
use super::{ChatProvider, EventStream, UpstreamError};
use crate::secret::Secret;
use crate::types::{ChatRequest, ChatResponse, Raw, StreamChunk};
use crate::wire::anthropic::{API_VERSION, StreamDecoder, decode_response, encode_request};
use crate::wire::sse::{SseEvent, named_frame};

#[derive(Debug)]
pub struct AnthropicProvider {
    client: HttpClient,
    messages_url: Endpoint,
    models_url: String,
    api_key: Option<Secret>,
    /// `x-api-key`, made once from `api_key`.
    credential: Option<Credential>,
    headers: http::HeaderMap,
    /// A messages request's headers.
    messages_headers: FixedHeaders,
}

impl AnthropicProvider {
    /// `base_url` is the host root (`https://api.anthropic.com`), as LiteLLM writes it; a
    /// base that already ends in `/v1` is accepted too.
    pub fn new(
        client: HttpClient,
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
        let credential = api_key
            .as_ref()
            .map(|k| Credential::header(http::HeaderName::from_static("x-api-key"), k.expose()));
        let messages_headers = FixedHeaders::new(
            &headers,
            &[
                (
                    http::HeaderName::from_static("anthropic-version"),
                    API_VERSION,
                ),
                (http::header::CONTENT_TYPE, "application/json"),
            ],
            credential.as_ref(),
        );
        Self {
            messages_url: Endpoint::new(format!("{v1}/messages"), &client),
            client,
            models_url: format!("{v1}/models"),
            credential,
            api_key,
            headers,
            messages_headers,
        }
    }

    fn request<'c>(&self, rb: RequestBuilder<'c>) -> RequestBuilder<'c> {
        let mut rb = rb.headers(&self.headers).static_header(
            http::HeaderName::from_static("anthropic-version"),
            API_VERSION,
        );
        if let Some(c) = &self.credential {
            rb = rb.credential(c);
        }
        rb
    }

    async fn send(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<Response, UpstreamError> {
        let mut rb = self
            .messages_url
            .post(&self.client)
            .fixed_headers(&self.messages_headers);
        if let Some(tp) = &req.traceparent {
            rb = rb.header(http::HeaderName::from_static("traceparent"), tp);
        }
        let body = match &req.anthropic_raw {
            // An Anthropic client's own request, as sent, with our model id.
            Some(raw) => {
                if let Some(beta) = &raw.beta {
                    rb = rb.header("anthropic-beta", beta);
                }
                serde_json::to_vec(&RawBody {
                    body: &raw.body,
                    model,
                    stream,
                })
            }
            None => {
                let translated = encode_request(req, model, stream).map_err(|e| {
                    UpstreamError::Untranslatable {
                        param: e.param.unwrap_or_else(|| "messages".into()),
                        message: e.message,
                    }
                })?;
                serde_json::to_vec(&translated)
            }
        }
        .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        send(rb.body(body), self.api_key.as_ref()).await
    }
}

/// A client's Anthropic request serialized as sent, except `model` (the upstream's id) and
/// `stream` (what the router asked for); no copy of the body is made.
struct RawBody<'a> {
    body: &'a serde_json::Map<String, serde_json::Value>,
    model: &'a str,
    stream: bool,
}

impl serde::Serialize for RawBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        for (k, v) in self.body {
            if k != "model" && k != "stream" {
                m.serialize_entry(k, v)?;
            }
        }
        if self.stream {
            m.serialize_entry("stream", &true)?;
        }
        m.end()
    }
}

impl ChatProvider for AnthropicProvider {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, UpstreamError> {
        let resp = self.send(req, model, false).await?;
        let body = read_ok_body(resp, self.api_key.as_ref()).await?;
        let mut out =
            decode_response(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        if req.anthropic_raw.is_some() {
            out.raw = Raw::Anthropic(body);
        }
        Ok(out)
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
            raw: req.anthropic_raw.is_some(),
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
    /// Keep each event's bytes for an Anthropic client (every event, pings included).
    raw: bool,
}

impl EventDecoder for AnthropicEvents {
    fn event(&mut self, ev: SseEvent) -> Step {
        match self.decoder.decode(&ev.data) {
            Ok(Ok(events)) if self.raw => {
                let name = ev.event.as_deref().unwrap_or("message");
                Step::Chunk(StreamChunk {
                    events,
                    raw: Raw::Anthropic(named_frame(name, &ev.data)),
                })
            }
            Ok(Ok(events)) if events.is_empty() => Step::Skip,
            Ok(Ok(events)) => Step::Chunk(StreamChunk {
                events,
                raw: Raw::None,
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
