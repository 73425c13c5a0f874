//! The one loop that turns an upstream Server-Sent-Events body into canonical chunks. Each
//! provider supplies only what its events mean ([`EventDecoder`]); reading, framing, size
//! limits, transport errors and "closed too early" are handled here once.

use std::collections::VecDeque;

use futures_util::StreamExt;
use http_body_util::BodyExt;

use super::http::{Response, UpstreamBody, body_error};
use super::{EventStream, UpstreamError};
use crate::secret::Secret;
use crate::types::StreamChunk;
use crate::wire::sse::{SseDecoder, SseEvent};

/// Largest single SSE event we accept from an upstream.
pub const MAX_EVENT: usize = 8 << 20;

/// What one upstream event means.
pub enum Step {
    /// Canonical events (and possibly the raw OpenAI chunk) for the client.
    Chunk(StreamChunk),
    /// Nothing for the client (`ping`, bookkeeping events).
    Skip,
    /// The upstream's end marker (`[DONE]`): stop reading.
    End,
    /// The upstream reported an error, or sent something we cannot read: the stream ends.
    Fail(UpstreamError),
}

/// A provider's stream vocabulary.
pub trait EventDecoder: Send + 'static {
    fn event(&mut self, ev: SseEvent) -> Step;
    /// Whether the reply is complete, so the body may end here without an error.
    fn complete(&self) -> bool;
}

struct State<D> {
    /// Taken when the reply ends by its content, to give its connection back.
    body: Option<UpstreamBody>,
    sse: SseDecoder,
    pending: VecDeque<SseEvent>,
    decoder: D,
    done: bool,
    key: Option<Secret>,
}

/// Decodes `resp` event by event, yielding each chunk as soon as its event is complete.
/// Dropping the returned stream drops the response and so closes the connection: a client
/// that goes away cancels the upstream generation.
pub fn decode_sse<D: EventDecoder>(resp: Response, key: Option<Secret>, decoder: D) -> EventStream {
    let st = State {
        body: Some(resp.into_body()),
        sse: SseDecoder::new(MAX_EVENT),
        pending: VecDeque::new(),
        decoder,
        done: false,
        key,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(ev) = st.pending.pop_front() {
                match st.decoder.event(ev) {
                    Step::Chunk(c) => return Some((Ok(c), st)),
                    Step::Skip => continue,
                    Step::End => {
                        if let Some(body) = st.body.take() {
                            body.release();
                        }
                        return None;
                    }
                    Step::Fail(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
            let mut out = Vec::new();
            let body = st.body.as_mut()?;
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(bytes) = frame.into_data() else {
                        continue; // trailers
                    };
                    if let Err(e) = st.sse.feed(&bytes, &mut out) {
                        st.done = true;
                        return Some((Err(UpstreamError::Malformed(e.to_string())), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(body_error(&e, st.key.as_ref())), st));
                }
                None => {
                    if let Err(e) = st.sse.finish(&mut out) {
                        st.done = true;
                        return Some((Err(UpstreamError::Malformed(e.to_string())), st));
                    }
                    if out.is_empty() {
                        st.done = true;
                        if st.decoder.complete() {
                            return None;
                        }
                        let err = UpstreamError::Stream(
                            "the upstream closed the stream before the reply was complete".into(),
                        );
                        return Some((Err(err), st));
                    }
                }
            }
            st.pending.extend(out);
        }
    })
    .boxed()
}
