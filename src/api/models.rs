//! Model listings and the health check.

use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::{AppStateRef, Caller};

#[derive(Serialize)]
struct OpenAiModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[utoipa::path(get, path = "/v1/models", tag = "meta",
    responses((status = 200, description = "OpenAI's list shape: `{\"object\":\"list\",\"data\":[{\"id\",\"owned_by\",…}]}`", body = Object)))]
/// `GET /v1/models`, in OpenAI's list shape: configured models, then the ones providers
/// with `discover_models` reported.
pub async fn openai_models(state: AppStateRef, caller: Caller) -> Json<serde_json::Value> {
    let discovered = state.router.discovered_models();
    let visible = |id: &str| caller.may_use(id);
    let mut data: Vec<OpenAiModel<'_>> = state
        .router
        .models()
        .map(|r| OpenAiModel {
            id: &r.model,
            object: "model",
            created: 0,
            owned_by: r
                .deployments
                .first()
                .map_or("llm-proxy", |d| &*d.provider.name),
        })
        .collect();
    data.extend(discovered.iter().map(|(id, provider)| OpenAiModel {
        id,
        object: "model",
        created: 0,
        owned_by: provider,
    }));
    data.retain(|m| visible(m.id));
    Json(json!({ "object": "list", "data": data }))
}

#[derive(Serialize)]
struct LlmModel<'a> {
    id: &'a str,
    provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
}

#[utoipa::path(get, path = "/llm/models", tag = "meta",
    responses((status = 200, description = "Configured models, then discovered ones", body = Vec<super::openapi::LlmModel>)))]
/// `GET /llm/models` and `/v1/llm/models`, in the spec's shape.
pub async fn llm_models(state: AppStateRef, caller: Caller) -> Json<serde_json::Value> {
    let discovered = state.router.discovered_models();
    let mut data: Vec<LlmModel<'_>> = state
        .router
        .models()
        .filter_map(|r| {
            let d = r.deployments.first()?;
            Some(LlmModel {
                id: &r.model,
                provider: &d.provider.name,
                max_tokens: d.max_tokens,
            })
        })
        .collect();
    data.extend(discovered.iter().map(|(id, provider)| LlmModel {
        id,
        provider,
        max_tokens: None,
    }));
    data.retain(|m| caller.may_use(m.id));
    Json(serde_json::to_value(data).unwrap_or_default())
}

/// `GET /metrics`: Prometheus text. Behind the master key when one is configured (a
/// scraper sends it as a bearer token); virtual keys are refused, so teams do not see
/// each other's traffic.
pub async fn metrics(
    state: AppStateRef,
    caller: Caller,
    ctx: super::RequestCtx,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if matches!(caller.principal, crate::keys::Principal::Key(_)) {
        let e = crate::error::ProxyError::new(
            crate::error::ErrorCode::Forbidden,
            "metrics are for the master key",
        );
        return super::ApiError::new(e, &ctx).into_response();
    }
    let deployments: Vec<(String, &'static str)> = state
        .router
        .health()
        .into_iter()
        .map(|d| (d.deployment, d.state))
        .collect();
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&deployments),
    )
        .into_response()
}

#[utoipa::path(get, path = "/health", tag = "meta", security(()),
    responses((status = 200, description = "`{status, version, providers, models}`", body = Object)))]
/// `GET /health`: no auth, so load balancers can probe it.
pub async fn health(state: AppStateRef) -> Json<serde_json::Value> {
    let providers: Vec<serde_json::Value> = state
        .provider_names
        .iter()
        .map(|(name, kind)| json!({ "name": name, "kind": kind }))
        .collect();
    let deployments = state.router.health();
    // Always 200 (the process is alive); `status` says whether some deployment is out.
    let status = if deployments
        .iter()
        .any(|d| d.state == "cooling" || d.state == "probing")
    {
        "degraded"
    } else {
        "ok"
    };
    Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "providers": providers,
        "models": state.router.models().count(),
        "deployments": deployments,
    }))
}
