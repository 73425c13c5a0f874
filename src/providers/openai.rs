//! The `openai` provider kind: OpenAI itself and every server that speaks its dialect
//! (vLLM, Ollama's `/v1`, LM Studio, llama.cpp, DeepSeek, Mistral, Groq, OpenRouter, a
//! LiteLLM proxy). Requests keep every field the client sent; replies are forwarded as the
//! upstream wrote them, decoded on the side for usage, logging and other dialects.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::http::{
    Credential, Endpoint, FixedHeaders, HttpClient, ModelEndpoints, RequestBuilder, Response,
    fetch, read_ok_body, send,
};
use super::sse_stream::{EventDecoder, Step, decode_sse};
use super::{ChatProvider, EventStream, UpstreamError};
use crate::secret::Secret;
use crate::types::{ChatEvent, ChatRequest, ChatResponse, Raw, StreamChunk};
use crate::wire::openai::{DecodedChunk, StreamDecoder, decode_response, decode_response_summary};
use crate::wire::sse::SseEvent;

/// The `api-version` used for classic Azure deployment URLs when the config gives none: the
/// newest generally available version at the time of writing.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// How an OpenAI-dialect upstream is addressed and authenticated. Everything else (request
/// body, replies, streams) is the same wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// `{base}/chat/completions` with `Authorization: Bearer`.
    OpenAi,
    /// As OpenAI, but the models it has pulled are listed from its native `/api/tags`.
    Ollama,
    /// Azure OpenAI, classic: the model name is the deployment,
    /// `{base}/openai/deployments/{deployment}/chat/completions?api-version=…`, `api-key`.
    Azure { api_version: String },
    /// Azure OpenAI's v1 API (a base ending in `/openai/v1`): OpenAI's paths, `api-key`.
    AzureV1,
}

impl Flavor {
    fn is_azure(&self) -> bool {
        matches!(self, Flavor::Azure { .. } | Flavor::AzureV1)
    }
}

#[derive(Debug)]
pub struct OpenAiProvider {
    client: HttpClient,
    /// Base URL ending in the API version, e.g. `https://api.openai.com/v1`.
    base_url: String,
    chat_url: Endpoint,
    /// Classic Azure: one URL per deployment.
    deployment_urls: ModelEndpoints,
    flavor: Flavor,
    api_key: Option<Secret>,
    /// `Authorization: Bearer` (`api-key` for Azure), made once from `api_key`.
    credential: Option<Credential>,
    headers: http::HeaderMap,
    /// A chat request's headers, for replies in one piece and for streams.
    chat_headers: [FixedHeaders; 2],
}

impl OpenAiProvider {
    pub fn new(
        client: HttpClient,
        base_url: &str,
        api_key: Option<Secret>,
        headers: http::HeaderMap,
    ) -> Self {
        Self::with_flavor(client, base_url, Flavor::OpenAi, api_key, headers)
    }

    /// An Azure OpenAI resource. `base_url` is the resource endpoint
    /// (`https://NAME.openai.azure.com`), or its v1 API (`…/openai/v1`).
    pub fn azure(
        client: HttpClient,
        base_url: &str,
        api_version: Option<String>,
        api_key: Option<Secret>,
        headers: http::HeaderMap,
    ) -> Self {
        let base = base_url.trim_end_matches('/');
        let flavor = if base.ends_with("/openai/v1") {
            Flavor::AzureV1
        } else {
            Flavor::Azure {
                api_version: api_version.unwrap_or_else(|| AZURE_DEFAULT_API_VERSION.to_owned()),
            }
        };
        Self::with_flavor(client, base, flavor, api_key, headers)
    }

    pub fn with_flavor(
        client: HttpClient,
        base_url: &str,
        flavor: Flavor,
        api_key: Option<Secret>,
        headers: http::HeaderMap,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let credential = api_key.as_ref().map(|k| {
            if flavor.is_azure() {
                Credential::header(http::HeaderName::from_static("api-key"), k.expose())
            } else {
                Credential::bearer(k.expose())
            }
        });
        let chat_url = Endpoint::new(format!("{base_url}/chat/completions"), &client);
        let chat_headers = ["application/json", "text/event-stream"].map(|accept| {
            FixedHeaders::new(
                &headers,
                &[
                    (http::header::CONTENT_TYPE, "application/json"),
                    (http::header::ACCEPT, accept),
                ],
                credential.as_ref(),
            )
        });
        Self {
            chat_headers,
            deployment_urls: ModelEndpoints::sharing(&chat_url),
            chat_url,
            client,
            base_url,
            flavor,
            api_key,
            credential,
            headers,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn flavor(&self) -> &Flavor {
        &self.flavor
    }

    /// Where a chat request for `model` goes.
    pub fn chat_url(&self, model: &str) -> std::borrow::Cow<'_, str> {
        match &self.flavor {
            Flavor::Azure { api_version } => format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                self.base_url,
                urlencode_segment(model),
                urlencode_segment(api_version)
            )
            .into(),
            _ => self.chat_url.as_str().into(),
        }
    }

    fn authorize<'c>(&self, rb: RequestBuilder<'c>) -> RequestBuilder<'c> {
        match &self.credential {
            Some(c) => rb.credential(c),
            None => rb,
        }
    }

    fn post(
        &self,
        model: &str,
        body: Vec<u8>,
        stream: bool,
        traceparent: Option<&str>,
    ) -> RequestBuilder<'_> {
        let rb = match &self.flavor {
            // The deployment is part of the path: one URL per model.
            Flavor::Azure { .. } => self.deployment_urls.post(&self.client, model, false, || {
                self.chat_url(model).into_owned()
            }),
            _ => self.chat_url.post(&self.client),
        };
        let mut rb = rb
            .fixed_headers(&self.chat_headers[usize::from(stream)])
            .body(body);
        if let Some(tp) = traceparent {
            rb = rb.header(http::HeaderName::from_static("traceparent"), tp);
        }
        rb
    }

    async fn send(
        &self,
        req: &ChatRequest,
        model: &str,
        body: Vec<u8>,
        stream: bool,
    ) -> Result<Response, UpstreamError> {
        let rb = self.post(model, body, stream, req.traceparent.as_deref());
        send(rb, self.api_key.as_ref()).await
    }

    /// The URL models are listed from, and whether it answers in Ollama's native shape.
    fn models_url(&self) -> Option<(String, bool)> {
        match &self.flavor {
            Flavor::OpenAi | Flavor::AzureV1 => Some((format!("{}/models", self.base_url), false)),
            Flavor::Ollama => {
                let root = self.base_url.strip_suffix("/v1").unwrap_or(&self.base_url);
                Some((format!("{root}/api/tags"), true))
            }
            // Classic Azure serves deployments, which the config names; nothing to discover.
            Flavor::Azure { .. } => None,
        }
    }
}

/// Percent-encodes a URL path segment or query value (deployment names are usually plain,
/// but nothing from a config may break the URL).
fn urlencode_segment(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

impl ChatProvider for OpenAiProvider {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, UpstreamError> {
        let body = encode_request(req, model, false)?;
        let resp = self.send(req, model, body, false).await?;
        let bytes = read_ok_body(resp, self.api_key.as_ref()).await?;
        let decoded = if req.openai_reply_verbatim {
            decode_response_summary(bytes)
        } else {
            decode_response(bytes)
        };
        decoded.map_err(|e| UpstreamError::Malformed(e.to_string()))
    }

    async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<EventStream, UpstreamError> {
        let body = encode_request(req, model, true)?;
        let resp = self.send(req, model, body, true).await?;
        Ok(decode_stream(resp, self.api_key.clone()))
    }

    async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        let Some((url, ollama)) = self.models_url() else {
            return Ok(Vec::new());
        };
        let rb = self.authorize(self.client.get(&url).headers(&self.headers));
        let body = fetch(rb, self.api_key.as_ref()).await?;
        let ids = if ollama {
            crate::wire::openai::decode_ollama_tags(&body)
        } else {
            crate::wire::openai::decode_model_list(&body)
        };
        ids.map_err(|e| UpstreamError::Malformed(e.to_string()))
    }
}

/// Serializes the request for an OpenAI-compatible upstream without cloning it: `model`
/// becomes the upstream id, `stream` is set, and a stream always asks for the usage chunk
/// (the client's own `stream_options` are kept, `include_usage` forced on) so usage is known
/// even when the client did not ask; the API layer strips that chunk again for such clients.
struct OutboundBody<'a> {
    req: &'a ChatRequest,
    model: &'a str,
    stream: bool,
}

impl Serialize for OutboundBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.req;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        m.serialize_entry("messages", &r.messages)?;
        m.serialize_entry("stream", &self.stream)?;
        if self.stream {
            let mut opts = r.stream_options.clone().unwrap_or_default();
            opts.include_usage = Some(true);
            m.serialize_entry("stream_options", &opts)?;
        }
        macro_rules! opt {
            ($($f:ident),*) => {$(
                if let Some(v) = &r.$f { m.serialize_entry(stringify!($f), v)?; }
            )*};
        }
        opt!(
            temperature,
            top_p,
            max_tokens,
            max_completion_tokens,
            n,
            stop,
            tools,
            tool_choice
        );
        for (k, v) in &r.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

pub fn encode_request(
    req: &ChatRequest,
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, UpstreamError> {
    serde_json::to_vec(&OutboundBody { req, model, stream })
        .map_err(|e| UpstreamError::Malformed(format!("could not encode the request: {e}")))
}

/// The OpenAI stream vocabulary: one chunk per `data:` event, kept verbatim for OpenAI
/// clients; `[DONE]` ends it; a `data: {"error": …}` event is a mid-stream failure.
struct OpenAiEvents {
    decoder: StreamDecoder,
    finished: bool,
    key: Option<Secret>,
}

impl EventDecoder for OpenAiEvents {
    fn event(&mut self, ev: SseEvent) -> Step {
        if &ev.data[..] == b"[DONE]" {
            return Step::End;
        }
        match self.decoder.decode(&ev.data) {
            Ok(DecodedChunk::Events(events)) => {
                if events.iter().any(|e| matches!(e, ChatEvent::Finish(_))) {
                    self.finished = true;
                }
                Step::Chunk(StreamChunk {
                    events,
                    raw: Raw::OpenAi(ev.data),
                })
            }
            Ok(DecodedChunk::Error(msg)) => {
                let msg = crate::secret::redact(&msg, self.key.as_ref().as_slice());
                Step::Fail(UpstreamError::Stream(msg))
            }
            Err(e) => Step::Fail(UpstreamError::Malformed(format!("bad stream chunk: {e}"))),
        }
    }

    fn complete(&self) -> bool {
        self.finished
    }
}

fn decode_stream(resp: Response, key: Option<Secret>) -> EventStream {
    let decoder = OpenAiEvents {
        decoder: StreamDecoder::default(),
        finished: false,
        key: key.clone(),
    };
    decode_sse(resp, key, decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_body_renames_model_and_forces_usage() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"seed":3,
                "stream":true,"temperature":0.5,"stream_options":{"x":1}}"#,
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&encode_request(&req, "upstream-id", true).unwrap()).unwrap();
        assert_eq!(v["model"], "upstream-id");
        assert_eq!(v["seed"], 3);
        assert_eq!(v["temperature"], 0.5);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["x"], 1);
        let v: serde_json::Value =
            serde_json::from_slice(&encode_request(&req, "u", false).unwrap()).unwrap();
        assert_eq!(v["stream"], false);
        assert!(v.get("stream_options").is_none());
    }
}
