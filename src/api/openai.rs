//! The OpenAI Chat Completions dialect at the edge: `POST /v1/chat/completions`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Uri};

use super::serve::{Dialect, Exchange, StreamSummary, serve};
use super::{ApiError, AppStateRef, Caller, RequestCtx, body};
use crate::error::{ErrorEnvelope, ProxyError};
use crate::providers::mock::unix_now;
use crate::types::{ChatEvent, ChatRequest, ChatResponse, Raw, StreamChunk};
use crate::wire::openai::{ChunkEncoder, encode_response, is_usage_only_chunk};
use crate::wire::sse::{DONE_FRAME, data_frame};

pub(crate) struct OpenAi;

pub(crate) struct OpenAiStream {
    encoder: ChunkEncoder,
    wants_usage: bool,
}

impl Dialect for OpenAi {
    const ENDPOINT: &'static str = "chat_completions";
    const OPENAI_REPLY_VERBATIM: bool = true;
    type Options = ();
    type Stream = OpenAiStream;

    fn decode(bytes: &[u8], _: &HeaderMap, _: &Uri) -> Result<(ChatRequest, ()), ProxyError> {
        Ok((body::decode(bytes)?, ()))
    }

    fn error(err: ProxyError, ctx: &RequestCtx) -> Response {
        ApiError::new(err, ctx).into_response()
    }

    /// The upstream's own body when it spoke OpenAI (verbatim), else encoded.
    fn body(resp: ChatResponse, _: &(), x: &Exchange<'_>) -> Bytes {
        match resp.raw {
            Raw::OpenAi(raw) => raw,
            _ => Bytes::from(encode_response(&resp, x.model)),
        }
    }

    fn stream_start(req: &ChatRequest, _: (), _: &Exchange<'_>) -> OpenAiStream {
        OpenAiStream {
            encoder: ChunkEncoder::new(
                format!("chatcmpl-{}", crate::ids::uuid_v4().simple()),
                req.model.clone(),
                unix_now(),
            ),
            wants_usage: req.wants_stream_usage(),
        }
    }

    /// The upstream's own chunk JSON when it has it (no re-serialization), otherwise
    /// encoded from events. The usage chunk is dropped for clients that did not ask for it.
    fn stream_chunk(st: &mut OpenAiStream, chunk: StreamChunk) -> Option<Bytes> {
        if !st.wants_usage && is_usage_only_chunk(&chunk.events) {
            return None;
        }
        if let Raw::OpenAi(raw) = chunk.raw {
            return Some(data_frame(&raw));
        }
        let mut out = Vec::new();
        for ev in &chunk.events {
            if !st.wants_usage && matches!(ev, ChatEvent::Usage(_)) {
                continue;
            }
            out.extend_from_slice(&data_frame(&st.encoder.encode(ev)));
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn stream_error(_: &mut OpenAiStream, err: &ProxyError, request_id: &str) -> Bytes {
        let payload = err.envelope(request_id).to_string();
        let mut frame = data_frame(payload.as_bytes()).to_vec();
        frame.extend_from_slice(DONE_FRAME);
        Bytes::from(frame)
    }

    fn stream_end(_: &mut OpenAiStream, _: &StreamSummary) -> Bytes {
        Bytes::from_static(DONE_FRAME)
    }
}

/// OpenAI Chat Completions: the upstream's reply (or stream of `chat.completion.chunk`s
/// ending in `data: [DONE]`) in OpenAI's shape, from any provider.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "`chat.completion`, or with `stream: true` an SSE stream of `chat.completion.chunk`",
         content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "INVALID_REQUEST: bad JSON, types or parameters", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or wrong key", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: unknown model", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
        (status = 502, description = "PROVIDER_ERROR: the upstream failed", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: at the concurrency limit", body = ErrorEnvelope),
        (status = 504, description = "TIMEOUT: the upstream did not answer in time", body = ErrorEnvelope),
    ))]
pub async fn chat_completions(
    state: AppStateRef,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> Response {
    serve::<OpenAi>(state.0, ctx, caller, headers, uri, raw)
        .await
        .into_response()
}
