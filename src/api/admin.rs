//! The admin API (master key only): usage aggregated from the ledger, and the recent
//! requests with their stream summaries (the spec's simplified request history).

use axum::Json;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppStateRef, Caller, RequestCtx};
use crate::error::{ErrorCode, ProxyError};
use crate::keys::Principal;
use crate::ledger::GroupBy;

/// Only the master key (or anyone, when no key is configured) may read usage.
fn admin_only(caller: &Caller, ctx: &RequestCtx) -> Option<Response> {
    matches!(caller.principal, Principal::Key(_)).then(|| {
        ApiError::new(
            ProxyError::new(ErrorCode::Forbidden, "the admin API is for the master key"),
            ctx,
        )
        .into_response()
    })
}

fn no_ledger(ctx: &RequestCtx) -> Response {
    ApiError::new(
        ProxyError::new(
            ErrorCode::NotFound,
            "the usage ledger is disabled (ledger.enabled)",
        ),
        ctx,
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct UsageQuery {
    group_by: Option<String>,
    /// Unix time in ms, or a duration back from now (`24h`, `7d`); default 24 h.
    since: Option<String>,
}

/// `GET /admin/usage?group_by=key|model|provider&since=24h`.
pub async fn usage(
    state: AppStateRef,
    caller: Caller,
    ctx: RequestCtx,
    Query(q): Query<UsageQuery>,
) -> Response {
    if let Some(r) = admin_only(&caller, &ctx) {
        return r;
    }
    let Some(sink) = &state.ledger else {
        return no_ledger(&ctx);
    };
    let group = match q.group_by.as_deref().map(GroupBy::parse) {
        None => GroupBy::Model,
        Some(Some(g)) => g,
        Some(None) => {
            let e = ProxyError::invalid("group_by", "group_by is key, model or provider");
            return ApiError::new(e, &ctx).into_response();
        }
    };
    let now_ms = crate::ledger::now_ms();
    let since = match q.since.as_deref() {
        None => now_ms - 86_400_000,
        Some(s) => match s.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => match crate::config::parse_duration(s) {
                Ok(d) => now_ms - d.as_millis() as i64,
                Err(m) => {
                    return ApiError::new(ProxyError::invalid("since", m), &ctx).into_response();
                }
            },
        },
    };
    match sink.ledger.usage(group, since).await {
        Ok(rows) => Json(json!({
            "since_ms": since,
            "group_by": q.group_by.as_deref().unwrap_or("model"),
            "groups": rows,
            "dropped_records": sink.ledger.dropped(),
        }))
        .into_response(),
        Err(e) => ApiError::new(
            {
                tracing::warn!("admin usage: {e}");
                ProxyError::new(ErrorCode::Unavailable, "the usage ledger could not be read")
            },
            &ctx,
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
pub struct RecentQuery {
    limit: Option<usize>,
}

/// `GET /admin/requests?limit=100`: the most recent requests, newest first, each with its
/// tokens, cost, latency, time to first token and (for streams) chunks and finish reason.
pub async fn requests(
    state: AppStateRef,
    caller: Caller,
    ctx: RequestCtx,
    Query(q): Query<RecentQuery>,
) -> Response {
    if let Some(r) = admin_only(&caller, &ctx) {
        return r;
    }
    let Some(sink) = &state.ledger else {
        return no_ledger(&ctx);
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    Json(json!({ "requests": sink.ledger.recent(limit) })).into_response()
}
