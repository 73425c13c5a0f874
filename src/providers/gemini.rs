//! The `gemini` provider kind: the Gemini API with an AI Studio key (`x-goog-api-key`).
//! Translation lives in [`crate::wire::gemini`].

use super::http::{
    Credential, FixedHeaders, HttpClient, ModelEndpoints, RequestBuilder, Response, fetch,
    read_ok_body, send,
};
use super::sse_stream::{EventDecoder, Step, decode_sse};
use super::{ChatProvider, EventStream, UpstreamError};
use crate::secret::Secret;
use crate::types::{ChatRequest, ChatResponse, Raw, StreamChunk};
use crate::wire::gemini::{StreamDecoder, decode_response, encode_request};
use crate::wire::sse::SseEvent;

#[derive(Debug)]
pub struct GeminiProvider {
    client: HttpClient,
    /// Ends in the API version, e.g. `https://generativelanguage.googleapis.com/v1beta`.
    base_url: String,
    api_key: Option<Secret>,
    /// `x-goog-api-key`, made once from `api_key`.
    credential: Option<Credential>,
    headers: http::HeaderMap,
    /// One URL per model and method.
    model_urls: ModelEndpoints,
    /// A generation request's headers.
    generate_headers: FixedHeaders,
}

impl GeminiProvider {
    pub fn new(
        client: HttpClient,
        base_url: &str,
        api_key: Option<Secret>,
        headers: http::HeaderMap,
    ) -> Self {
        let credential = api_key.as_ref().map(|k| {
            Credential::header(http::HeaderName::from_static("x-goog-api-key"), k.expose())
        });
        let generate_headers = FixedHeaders::new(
            &headers,
            &[(http::header::CONTENT_TYPE, "application/json")],
            credential.as_ref(),
        );
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            credential,
            api_key,
            headers,
            model_urls: ModelEndpoints::default(),
            generate_headers,
        }
    }

    /// `models/{model}:{method}`; the model may be given with or without `models/`.
    pub fn url(&self, model: &str, stream: bool) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if stream {
            format!(
                "{}/models/{model}:streamGenerateContent?alt=sse",
                self.base_url
            )
        } else {
            format!("{}/models/{model}:generateContent", self.base_url)
        }
    }

    fn request<'c>(&self, rb: RequestBuilder<'c>) -> RequestBuilder<'c> {
        let rb = rb.headers(&self.headers);
        match &self.credential {
            Some(c) => rb.credential(c),
            None => rb,
        }
    }

    async fn send(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<Response, UpstreamError> {
        let body = serde_json::to_vec(&encode_request(req))
            .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let mut rb = self
            .model_urls
            .post(&self.client, model, stream, || self.url(model, stream))
            .fixed_headers(&self.generate_headers)
            .body(body);
        if let Some(tp) = &req.traceparent {
            rb = rb.header(http::HeaderName::from_static("traceparent"), tp);
        }
        send(rb, self.api_key.as_ref()).await
    }
}

impl ChatProvider for GeminiProvider {
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
        let decoder = GeminiEvents {
            decoder: StreamDecoder::new(),
            key: self.api_key.clone(),
        };
        Ok(decode_sse(resp, self.api_key.clone(), decoder))
    }

    /// `GET /models`, ids without their `models/` prefix (first page: enough to list what
    /// the key can use in a model picker; configured models are always listed anyway).
    async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        let url = format!("{}/models?pageSize=1000", self.base_url);
        let body = fetch(self.request(self.client.get(&url)), self.api_key.as_ref()).await?;
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            models: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
        }
        let list: List =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        Ok(list
            .models
            .into_iter()
            .map(|m| m.name.trim_start_matches("models/").to_owned())
            .collect())
    }
}

struct GeminiEvents {
    decoder: StreamDecoder,
    key: Option<Secret>,
}

impl EventDecoder for GeminiEvents {
    fn event(&mut self, ev: SseEvent) -> Step {
        match self.decoder.decode(&ev.data) {
            Ok(Ok(events)) if events.is_empty() => Step::Skip,
            Ok(Ok(events)) => Step::Chunk(StreamChunk {
                events,
                raw: Raw::None,
            }),
            Ok(Err(e)) => {
                let message = crate::secret::redact(&e.message, self.key.as_ref().as_slice());
                Step::Fail(match e.status {
                    Some(status) => UpstreamError::Status {
                        status,
                        message,
                        retry_after: None,
                    },
                    None => UpstreamError::Stream(message),
                })
            }
            Err(e) => Step::Fail(UpstreamError::Malformed(format!("bad stream event: {e}"))),
        }
    }

    fn complete(&self) -> bool {
        self.decoder.finished()
    }
}
