//! Every wire format, once. Each module holds a format's serde types and its conversions to
//! and from the canonical types in [`crate::types`], in both directions where the format is
//! spoken by clients and by upstreams alike.

pub mod anthropic;
pub mod gemini;
pub mod llm;
pub mod openai;
pub mod sse;
