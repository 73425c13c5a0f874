//! The OpenAPI 3.1 description of every endpoint, generated from the handlers' and types'
//! annotations (utoipa), served at `/openapi.json`; `/docs` is a page that renders it.

use axum::Json;
use axum::response::Html;
use serde_json::{Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{llm, messages, models, openai};
use crate::error::{ErrorCode, ErrorEnvelope, ErrorObject};
use crate::types::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message, Role, Stop,
    StreamOptions, Tool, ToolCall, ToolChoice, Usage,
};
use crate::wire::llm::{
    LlmChatResponse, LlmCompletionResponse, LlmMessage, StreamEvent, WireToolCall, WireUsage,
};

/// `POST /llm/completions`: a prompt instead of messages. Every chat parameter
/// (`temperature`, `max_tokens`, `stop`, `stream`, `tool_call_deltas`, …) applies.
#[derive(ToSchema)]
#[allow(dead_code)] // a description of the body, which is decoded as JSON
pub struct CompletionRequest {
    /// The model name; the configured default model when omitted.
    model: Option<String>,
    /// One string (or a list of exactly one string).
    prompt: String,
    /// An optional system prompt.
    system: Option<String>,
    stream: Option<bool>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    #[schema(value_type = Object)]
    extra: Map<String, Value>,
}

/// `POST /llm/chat` and `/llm/stream`: an OpenAI-shaped chat request, plus our option.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)] // a description of the body
pub struct LlmChatRequest {
    #[serde(flatten)]
    chat: ChatRequest,
    /// `/llm/stream`: also send `tool_call_delta` events as arguments arrive.
    tool_call_deltas: Option<bool>,
}

/// One model in the spec's listing.
#[derive(ToSchema)]
#[allow(dead_code)] // a description of what models::llm_models writes
pub struct LlmModel {
    id: String,
    /// The configured provider that serves it.
    provider: String,
    max_tokens: Option<u64>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "x-api-key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        c.add_security_scheme(
            "x-internal-auth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-internal-auth"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "llm-proxy",
        description = "One uniform door to every LLM: OpenAI- and Anthropic-compatible endpoints \
                       and the normalized /llm/* API. When a master key is configured, every \
                       route but /health, /openapi.json and /docs needs it (any of the three \
                       security schemes)."
    ),
    paths(
        llm::chat,
        llm::stream,
        llm::completions,
        openai::chat_completions,
        messages::messages,
        messages::count_tokens,
        models::openai_models,
        models::llm_models,
        models::health,
    ),
    components(schemas(
        ChatRequest, Message, Role, Content, ContentPart, ImageUrl, Tool, FunctionDef, ToolChoice,
        ToolCall, FunctionCall, Stop, StreamOptions, Usage, LlmChatResponse, LlmMessage,
        LlmCompletionResponse, StreamEvent, WireToolCall, WireUsage, ErrorEnvelope, ErrorObject,
        ErrorCode, CompletionRequest, LlmChatRequest, LlmModel
    )),
    modifiers(&Security),
    security(("bearer" = []), ("x-api-key" = []), ("x-internal-auth" = [])),
    tags(
        (name = "llm", description = "The normalized API: one reply shape and one stream vocabulary for every provider"),
        (name = "openai", description = "OpenAI Chat Completions, passed through to OpenAI-compatible upstreams"),
        (name = "anthropic", description = "Anthropic Messages, to any model"),
        (name = "meta", description = "Models and health")
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /docs`: Swagger UI (loaded from a CDN by the browser) over `/openapi.json`.
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>llm-proxy API</title>
  <link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
  <div id="ui"><p>Loading the API description from <a href="/openapi.json">/openapi.json</a>…</p></div>
  <script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
  <script>SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui" });</script>
</body>
</html>
"##;
