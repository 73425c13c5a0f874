//! The `openai` provider kind: OpenAI itself and every server that speaks its dialect
//! (vLLM, Ollama's `/v1`, LM Studio, llama.cpp, DeepSeek, Mistral, Groq, OpenRouter, a
//! LiteLLM proxy). Requests keep every field the client sent; replies are forwarded as the
//! upstream wrote them, decoded on the side for usage, logging and other dialects.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::http::{read_ok_body, status_error, transport_error};
use super::{ChatProvider, EventStream, UpstreamError};
use crate::secret::Secret;
use crate::types::{ChatEvent, ChatRequest, ChatResponse, StreamChunk};
use crate::wire::openai::{DecodedChunk, decode_chunk, decode_response};
use crate::wire::sse::{SseDecoder, SseEvent};

/// Largest single SSE event we accept from an upstream.
const MAX_EVENT: usize = 8 << 20;

#[derive(Debug)]
pub struct OpenAiProvider {
    client: reqwest::Client,
    /// Base URL ending in the API version, e.g. `https://api.openai.com/v1`.
    base_url: String,
    chat_url: String,
    api_key: Option<Secret>,
    headers: http::HeaderMap,
}

impl OpenAiProvider {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<Secret>,
        headers: http::HeaderMap,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            chat_url: format!("{base_url}/chat/completions"),
            client,
            base_url,
            api_key,
            headers,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn post(&self, body: Vec<u8>, stream: bool) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .post(&self.chat_url)
            .headers(self.headers.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body);
        if let Some(key) = &self.api_key {
            rb = rb.bearer_auth(key.expose());
        }
        rb
    }

    async fn send(&self, body: Vec<u8>, stream: bool) -> Result<reqwest::Response, UpstreamError> {
        let key = self.api_key.as_ref();
        let resp = self
            .post(body, stream)
            .send()
            .await
            .map_err(|e| transport_error(&e, key))?;
        if !resp.status().is_success() {
            return Err(status_error(resp, key).await);
        }
        Ok(resp)
    }
}

impl ChatProvider for OpenAiProvider {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, UpstreamError> {
        let body = encode_request(req, model, false)?;
        let resp = self.send(body, false).await?;
        let bytes = read_ok_body(resp, self.api_key.as_ref()).await?;
        decode_response(bytes).map_err(|e| UpstreamError::Malformed(e.to_string()))
    }

    async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<EventStream, UpstreamError> {
        let body = encode_request(req, model, true)?;
        let resp = self.send(body, true).await?;
        Ok(decode_stream(resp, self.api_key.clone()))
    }

    async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        let key = self.api_key.as_ref();
        let mut rb = self
            .client
            .get(format!("{}/models", self.base_url))
            .headers(self.headers.clone());
        if let Some(k) = key {
            rb = rb.bearer_auth(k.expose());
        }
        let resp = rb.send().await.map_err(|e| transport_error(&e, key))?;
        if !resp.status().is_success() {
            return Err(status_error(resp, key).await);
        }
        let body = read_ok_body(resp, key).await?;
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
        }
        let list: List =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        Ok(list.data.into_iter().map(|e| e.id).collect())
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

struct StreamState {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: SseDecoder,
    pending: VecDeque<SseEvent>,
    scratch: Vec<SseEvent>,
    finished: bool,
    done: bool,
    key: Option<Secret>,
}

/// Decodes an upstream SSE body into canonical chunks, one per upstream event, as each
/// arrives. Dropping the returned stream drops the response and so closes the connection:
/// a client that goes away cancels the upstream generation.
fn decode_stream(resp: reqwest::Response, key: Option<Secret>) -> EventStream {
    let state = StreamState {
        body: resp.bytes_stream().boxed(),
        decoder: SseDecoder::new(MAX_EVENT),
        pending: VecDeque::new(),
        scratch: Vec::new(),
        finished: false,
        done: false,
        key,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(ev) = st.pending.pop_front() {
                if &ev.data[..] == b"[DONE]" {
                    return None;
                }
                match decode_chunk(&ev.data) {
                    Ok(DecodedChunk::Events(events)) => {
                        if events.iter().any(|e| matches!(e, ChatEvent::Finish(_))) {
                            st.finished = true;
                        }
                        let chunk = StreamChunk {
                            events,
                            raw_openai: Some(ev.data),
                        };
                        return Some((Ok(chunk), st));
                    }
                    Ok(DecodedChunk::Error(msg)) => {
                        st.done = true;
                        let msg = crate::secret::redact(&msg, st.key.as_ref().as_slice());
                        return Some((Err(UpstreamError::Stream(msg)), st));
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((
                            Err(UpstreamError::Malformed(format!("bad stream chunk: {e}"))),
                            st,
                        ));
                    }
                }
            }
            match st.body.next().await {
                Some(Ok(bytes)) => {
                    let mut out = std::mem::take(&mut st.scratch);
                    let fed = st.decoder.feed(&bytes, &mut out);
                    st.pending.extend(out.drain(..));
                    st.scratch = out;
                    if let Err(e) = fed {
                        st.done = true;
                        return Some((Err(UpstreamError::Malformed(e.to_string())), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(transport_error(&e, st.key.as_ref())), st));
                }
                None => {
                    let mut out = Vec::new();
                    let _ = st.decoder.finish(&mut out);
                    if out.is_empty() {
                        st.done = true;
                        if st.finished {
                            return None;
                        }
                        return Some((
                            Err(UpstreamError::Stream(
                                "the upstream closed the stream before it finished".into(),
                            )),
                            st,
                        ));
                    }
                    st.pending.extend(out);
                }
            }
        }
    })
    .boxed()
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
