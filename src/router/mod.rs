//! The router maps a requested model name to deployments and decides which provider call
//! to make: it retries retryable failures (preferring another deployment when there is one),
//! applies deadlines, and never parses bytes.
//!
//! A stream may be retried only before its first byte reached the client. The router opens
//! the upstream stream and waits for its first chunk itself; only a stream that produced a
//! chunk is handed to the caller, so every failure before that point is still retryable.

mod discovery;

pub use discovery::Discovered;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::timeout;

use crate::config::{ProviderKind, RoutingSettings, Settings};
use crate::error::{ErrorCode, ProxyError};
use crate::providers::build::{BuildError as ProviderBuildError, build};
use crate::providers::http::{ClientBuildError, ClientSettings, build_client};
use crate::providers::{ChatProvider, EventStream, Provider, TimeoutKind, UpstreamError};
use crate::types::{ChatRequest, ChatResponse, StreamChunk};

/// A configured provider instance.
#[derive(Debug)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: ProviderKind,
    pub provider: Provider,
    /// List (and route) the models the provider reports.
    pub discover: bool,
}

/// One concrete place a model can be served from.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `provider/upstream-model`, as logs and headers show it.
    pub id: Arc<str>,
    pub provider: Arc<ProviderEntry>,
    pub upstream_model: Arc<str>,
    pub max_tokens: Option<u64>,
}

/// A requested model name, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: Arc<str>,
    pub deployments: Arc<[Deployment]>,
}

/// What happened while serving: which deployment answered (or failed last) and how many
/// attempts it took. Logged and returned in response headers.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub deployment: Option<Deployment>,
    pub attempts: u32,
}

/// An opened stream whose first chunk already arrived.
pub struct OpenStream {
    pub first: Option<StreamChunk>,
    pub rest: EventStream,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error(transparent)]
    Provider(#[from] ProviderBuildError),
}

pub struct Router {
    routes: HashMap<String, Resolved>,
    /// Model names in config order, for listings.
    order: Vec<String>,
    default_provider: Option<Arc<ProviderEntry>>,
    providers: Vec<Arc<ProviderEntry>>,
    discovered: Arc<Discovered>,
    routing: RoutingSettings,
}

impl Router {
    pub fn new(settings: &Settings) -> Result<Self, BuildError> {
        let client = build_client(&ClientSettings {
            connect_timeout: settings.routing.connect_timeout,
            ..ClientSettings::default()
        })?;
        let mut providers = Vec::new();
        for p in &settings.providers {
            let mock_models = settings
                .models
                .iter()
                .filter(|m| m.provider == p.name)
                .map(|m| m.model.clone())
                .collect();
            let provider = build(p, &client, mock_models)?;
            providers.push(Arc::new(ProviderEntry {
                name: p.name.clone(),
                kind: p.kind,
                provider,
                discover: p.discover_models,
            }));
        }
        let find = |name: &str| providers.iter().find(|p| p.name == name).cloned();
        let mut grouped: HashMap<String, Vec<Deployment>> = HashMap::new();
        let mut order = Vec::new();
        for m in &settings.models {
            let Some(provider) = find(&m.provider) else {
                continue; // validated at load; unreachable for loaded settings
            };
            if !grouped.contains_key(&m.name) {
                order.push(m.name.clone());
            }
            grouped.entry(m.name.clone()).or_default().push(Deployment {
                id: format!("{}/{}", m.provider, m.model).into(),
                provider,
                upstream_model: m.model.as_str().into(),
                max_tokens: m.max_tokens,
            });
        }
        let routes = grouped
            .into_iter()
            .map(|(name, deps)| {
                let r = Resolved {
                    model: name.as_str().into(),
                    deployments: deps.into(),
                };
                (name, r)
            })
            .collect();
        let default_provider = settings.default_provider.as_deref().and_then(find);
        let discovered = Arc::new(Discovered::default());
        discovery::spawn(
            &discovered,
            providers.iter().filter(|p| p.discover).cloned().collect(),
        );
        Ok(Self {
            routes,
            order,
            default_provider,
            providers,
            discovered,
            routing: settings.routing.clone(),
        })
    }

    pub fn providers(&self) -> &[Arc<ProviderEntry>] {
        &self.providers
    }

    /// Configured models in config order, each with its first deployment.
    pub fn models(&self) -> impl Iterator<Item = &Resolved> {
        self.order.iter().filter_map(|n| self.routes.get(n))
    }

    /// Models the providers reported that are not configured: `(id, provider name)`.
    pub fn discovered_models(&self) -> Vec<(String, String)> {
        let mut seen = std::collections::HashSet::new();
        self.discovered
            .listing(&self.providers)
            .into_iter()
            .filter(|(id, _)| !self.routes.contains_key(id) && seen.insert(id.clone()))
            .collect()
    }

    /// Asks the discovering providers now (the background refresher does this on its own;
    /// tests and `check-config` call it to not wait).
    pub async fn refresh_discovery(&self) {
        let discovering: Vec<_> = self
            .providers
            .iter()
            .filter(|p| p.discover)
            .cloned()
            .collect();
        discovery::refresh(&self.discovered, &discovering).await;
    }

    /// Resolves a model name: a configured model, a model a provider reported, or the name
    /// as-is on the default provider.
    pub fn resolve(&self, model: &str) -> Result<Resolved, ProxyError> {
        if let Some(r) = self.routes.get(model) {
            return Ok(r.clone());
        }
        let discovered = self.discovered.provider_of(model, &self.providers);
        if let Some(p) = discovered.or(self.default_provider.as_ref()) {
            let dep = Deployment {
                id: format!("{}/{}", p.name, model).into(),
                provider: p.clone(),
                upstream_model: model.into(),
                max_tokens: None,
            };
            return Ok(Resolved {
                model: model.into(),
                deployments: Arc::from([dep]),
            });
        }
        Err(ProxyError::new(
            ErrorCode::NotFound,
            format!(
                "model `{model}` is not configured and no default_provider is set; \
                 GET /v1/models lists the available models"
            ),
        ))
    }

    fn attempts(&self) -> u32 {
        self.routing.num_retries.saturating_add(1)
    }

    fn backoff(&self, retry: u32, err: &UpstreamError) -> Duration {
        const CAP: Duration = Duration::from_secs(5);
        let exp = self
            .routing
            .retry_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(CAP);
        match err {
            UpstreamError::Status {
                retry_after: Some(hint),
                ..
            } => exp.max((*hint).min(CAP)),
            _ => exp,
        }
    }

    /// Serves a complete (non-streaming) request.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        route: &Resolved,
        outcome: &mut Outcome,
    ) -> Result<ChatResponse, ProxyError> {
        let total = self.routing.timeout;
        let mut attempt = 0;
        loop {
            let dep = &route.deployments[attempt as usize % route.deployments.len()];
            outcome.deployment = Some(dep.clone());
            outcome.attempts = attempt + 1;
            let call = dep.provider.provider.chat(req, &dep.upstream_model);
            let err = match timeout(total, call).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) => e,
                Err(_) => UpstreamError::Timeout(TimeoutKind::Total, total),
            };
            attempt += 1;
            if !err.is_retryable() || attempt >= self.attempts() {
                log_failure(&err, dep, attempt, false);
                return Err(fix_timeout(err, total).into_proxy_error());
            }
            log_failure(&err, dep, attempt, true);
            tokio::time::sleep(self.backoff(attempt - 1, &err)).await;
        }
    }

    /// Opens a stream and waits for its first chunk, retrying until then.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        route: &Resolved,
        outcome: &mut Outcome,
    ) -> Result<OpenStream, ProxyError> {
        let total = self.routing.timeout;
        let idle = self.routing.stream_idle_timeout;
        let mut attempt = 0;
        loop {
            let dep = &route.deployments[attempt as usize % route.deployments.len()];
            outcome.deployment = Some(dep.clone());
            outcome.attempts = attempt + 1;
            let open = async {
                let mut s = dep
                    .provider
                    .provider
                    .chat_stream(req, &dep.upstream_model)
                    .await?;
                match s.next().await {
                    Some(Ok(first)) => Ok(OpenStream {
                        first: Some(first),
                        rest: s,
                    }),
                    Some(Err(e)) => Err(e),
                    None => Ok(OpenStream {
                        first: None,
                        rest: s,
                    }),
                }
            };
            let err = match timeout(total, open).await {
                Ok(Ok(mut open)) => {
                    open.rest = with_idle_timeout(open.rest, idle);
                    return Ok(open);
                }
                Ok(Err(e)) => e,
                Err(_) => UpstreamError::Timeout(TimeoutKind::Total, total),
            };
            attempt += 1;
            if !err.is_retryable() || attempt >= self.attempts() {
                log_failure(&err, dep, attempt, false);
                return Err(fix_timeout(err, total).into_proxy_error());
            }
            log_failure(&err, dep, attempt, true);
            tokio::time::sleep(self.backoff(attempt - 1, &err)).await;
        }
    }
}

/// Transport-level timeouts do not know their configured length; fill it in for messages.
fn fix_timeout(err: UpstreamError, total: Duration) -> UpstreamError {
    match err {
        UpstreamError::Timeout(kind, d) if d.is_zero() => UpstreamError::Timeout(kind, total),
        other => other,
    }
}

fn log_failure(err: &UpstreamError, dep: &Deployment, attempt: u32, will_retry: bool) {
    if matches!(err, UpstreamError::Timeout(..)) {
        tracing::warn!(
            deployment = %dep.id, attempt, will_retry, error_class = err.class(),
            "upstream timeout: {err}"
        );
    } else if will_retry {
        tracing::warn!(
            deployment = %dep.id, attempt, error_class = err.class(),
            "retrying after upstream failure: {err}"
        );
    } else {
        tracing::debug!(deployment = %dep.id, attempt, error_class = err.class(), "upstream failure: {err}");
    }
}

/// Ends a stream with a `StreamIdle` timeout error when no chunk arrives within `idle`.
fn with_idle_timeout(inner: EventStream, idle: Duration) -> EventStream {
    futures_util::stream::unfold(Some(inner), move |state| async move {
        let mut s = state?;
        match timeout(idle, s.next()).await {
            Ok(Some(Ok(c))) => Some((Ok(c), Some(s))),
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => {
                tracing::warn!("upstream stream idle for {idle:?}; closing it");
                Some((
                    Err(UpstreamError::Timeout(TimeoutKind::StreamIdle, idle)),
                    None,
                ))
            }
        }
    })
    .boxed()
}
