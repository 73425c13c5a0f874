//! The router maps a requested model name to deployments and decides which provider call
//! to make: it balances between a model's deployments, retries what the deployment is to
//! blame for (preferring another deployment), falls back to other models, takes failing
//! deployments out for a while, and applies deadlines. It never parses bytes.
//!
//! A stream may be retried or failed over only before its first byte reached the client.
//! The router opens the upstream stream and waits for its first chunk itself; only a
//! stream that produced a chunk is handed to the caller, so every failure before that
//! point is still retryable.

mod balance;
mod breaker;
mod deployment;
mod discovery;
mod health;

pub use breaker::Health;
pub use deployment::{Deployment, Limits, Timeouts};
pub use discovery::Discovered;
pub use health::DeploymentReport;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::time::{timeout, timeout_at};

use crate::config::{ProviderKind, RoutingSettings, Settings};
use crate::error::{ErrorCode, ProxyError};
use crate::providers::build::{BuildError as ProviderBuildError, build};
use crate::providers::http::{ClientBuildError, ClientSettings, build_client};
use crate::providers::{Blame, ChatProvider, EventStream, Provider, TimeoutKind, UpstreamError};
use crate::telemetry::Metrics;
use crate::types::{ChatEvent, ChatRequest, ChatResponse, StreamChunk};
use breaker::{Admission, BreakerPolicy};
use deployment::{DeploymentState, InFlight};

/// A configured provider instance.
#[derive(Debug)]
pub struct ProviderEntry {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub provider: Provider,
    /// List (and route) the models the provider reports.
    pub discover: bool,
}

/// A requested model name, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: Arc<str>,
    pub deployments: Arc<[Deployment]>,
}

/// What happened while serving: which deployment answered (or failed last), for which
/// model (a fallback's, when one served), and how many attempts it took. Logged and
/// returned in response headers.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub deployment: Option<Deployment>,
    pub attempts: u32,
    /// Time spent waiting on upstreams (every attempt, to its reply or first chunk): the
    /// rest of a request's time is the proxy's own overhead.
    pub upstream: Duration,
    /// Every attempt, in order, for the trace's client spans: recorded only when the
    /// caller asks (`Some`), so requests that are not traced pay nothing for it.
    pub attempt_log: Option<Vec<Attempt>>,
}

/// One upstream attempt: where, when, how long (to its reply or first chunk), and the
/// class of its failure if it failed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub deployment: Deployment,
    pub started: Instant,
    pub elapsed: Duration,
    pub error: Option<&'static str>,
}

/// What the caller tells the router about a request besides its body.
pub struct RouteCtx<'a> {
    /// When the request began: `routing.timeout` counts from here (body read, limits and
    /// queue included).
    pub started: Instant,
    /// Which models the caller may use: fallbacks it may not use are skipped.
    pub may_use: &'a (dyn Fn(&str) -> bool + Sync),
}

/// An opened stream whose first chunk already arrived.
pub struct OpenStream {
    pub first: Option<StreamChunk>,
    /// When the first chunk arrived (time to first token is measured to here).
    pub first_at: Instant,
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
    policy: BreakerPolicy,
    metrics: Option<Arc<Metrics>>,
}

/// The cap on exponential backoff between retries on one deployment.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a request waits for a deployment at its limits before moving on.
const LIMIT_WAIT: Duration = Duration::from_secs(1);
const LIMIT_POLL: Duration = Duration::from_millis(25);

/// Whether a deployment is at its own limits: parallel requests in flight, or requests or
/// tokens over the last minute.
fn at_limits(d: &Deployment) -> bool {
    d.limits
        .max_parallel
        .is_some_and(|m| d.state.in_flight() >= m)
        || ((d.limits.rpm.is_some() || d.limits.tpm.is_some()) && d.state.load(&d.limits) >= 1.0)
}

impl Router {
    pub fn new(settings: &Settings) -> Result<Self, BuildError> {
        let client = build_client(&ClientSettings {
            connect_timeout: settings.routing.connect_timeout,
            ..ClientSettings::default()
        })?;
        let r = &settings.routing;
        let policy = BreakerPolicy {
            allowed_fails: r.allowed_fails,
            fail_window: r.fail_window,
            cooldown: r.cooldown_time,
        };
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
                name: p.name.as_str().into(),
                kind: p.kind,
                provider,
                discover: p.discover_models,
            }));
        }
        let find = |name: &str| providers.iter().find(|p| *p.name == *name).cloned();
        let mut grouped: HashMap<String, Vec<Deployment>> = HashMap::new();
        let mut order = Vec::new();
        for m in &settings.models {
            let Some(provider) = find(&m.provider) else {
                continue; // validated at load; unreachable for loaded settings
            };
            if !grouped.contains_key(&m.name) {
                order.push(m.name.clone());
            }
            let t = m.timeouts;
            grouped.entry(m.name.clone()).or_default().push(Deployment {
                id: format!("{}/{}", m.provider, m.model).into(),
                model: m.name.as_str().into(),
                provider,
                upstream_model: m.model.as_str().into(),
                max_tokens: m.max_tokens,
                weight: m.weight,
                limits: Limits {
                    rpm: m.rpm,
                    tpm: m.tpm,
                    max_parallel: m.max_parallel_requests,
                },
                timeouts: Timeouts {
                    total: t.timeout.or(r.attempt_timeout).unwrap_or(r.timeout),
                    first_token: t
                        .first_token_timeout
                        .or(r.first_token_timeout)
                        .or(t.timeout)
                        .or(r.attempt_timeout)
                        .unwrap_or(r.timeout),
                    idle: t.stream_idle_timeout.unwrap_or(r.stream_idle_timeout),
                },
                state: Arc::new(DeploymentState::new(policy)),
            });
        }
        let routes: HashMap<String, Resolved> = grouped
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
        if let Some(every) = r.health_check_interval {
            let all: Vec<Deployment> = routes
                .values()
                .flat_map(|r| r.deployments.iter().cloned())
                .collect();
            health::spawn_checks(&providers, all, every);
        }
        Ok(Self {
            routes,
            order,
            default_provider,
            providers,
            discovered,
            routing: r.clone(),
            policy,
            metrics: None,
        })
    }

    /// Counts retries, fallbacks and upstream errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn providers(&self) -> &[Arc<ProviderEntry>] {
        &self.providers
    }

    /// Configured models in config order.
    pub fn models(&self) -> impl Iterator<Item = &Resolved> {
        self.order.iter().filter_map(|n| self.routes.get(n))
    }

    /// Every configured deployment's state, for `/health`.
    pub fn health(&self) -> Vec<DeploymentReport> {
        self.models()
            .flat_map(|r| r.deployments.iter().map(DeploymentReport::of))
            .collect()
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
    /// as-is on the default provider. Names made up on the fly get a deployment with fresh
    /// state each time (keeping state for arbitrary names would grow without bound).
    pub fn resolve(&self, model: &str) -> Result<Resolved, ProxyError> {
        if let Some(r) = self.routes.get(model) {
            return Ok(r.clone());
        }
        let discovered = self.discovered.provider_of(model, &self.providers);
        if let Some(p) = discovered.or(self.default_provider.as_ref()) {
            let r = &self.routing;
            let dep = Deployment {
                id: format!("{}/{}", p.name, model).into(),
                model: model.into(),
                provider: p.clone(),
                upstream_model: model.into(),
                max_tokens: None,
                weight: 1,
                limits: Limits::default(),
                timeouts: Timeouts {
                    total: r.attempt_timeout.unwrap_or(r.timeout),
                    first_token: r
                        .first_token_timeout
                        .or(r.attempt_timeout)
                        .unwrap_or(r.timeout),
                    idle: r.stream_idle_timeout,
                },
                state: Arc::new(DeploymentState::new(self.policy)),
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

    /// The models to try after `model`'s own attempts, in order.
    fn fallbacks_of(&self, list: &[(String, Vec<String>)], model: &str) -> Vec<Resolved> {
        let names: &[String] = list
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[]);
        self.resolve_all(names, model)
    }

    fn resolve_all(&self, names: &[String], except: &str) -> Vec<Resolved> {
        let mut seen = std::collections::HashSet::new();
        names
            .iter()
            .filter(|n| n.as_str() != except && seen.insert(n.as_str()))
            .filter_map(|n| match self.resolve(n) {
                Ok(r) => Some(r),
                Err(_) => {
                    tracing::warn!(fallback = %n, "fallback model cannot be resolved; skipped");
                    None
                }
            })
            .collect()
    }

    /// Serves a complete (non-streaming) request.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        route: &Resolved,
        rc: &RouteCtx<'_>,
        outcome: &mut Outcome,
    ) -> Result<ChatResponse, ProxyError> {
        let (resp, guard, ended) = self
            .run(route, rc, outcome, false, |dep: Deployment| async move {
                dep.provider.provider.chat(req, &dep.upstream_model).await
            })
            .await?;
        if let Some(u) = resp.usage {
            guard.state().record_tokens(u.total_tokens, ended);
        }
        Ok(resp)
    }

    /// Opens a stream and waits for its first chunk, retrying and falling back until then.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        route: &Resolved,
        rc: &RouteCtx<'_>,
        outcome: &mut Outcome,
    ) -> Result<OpenStream, ProxyError> {
        let (open, guard, _) = self
            .run(route, rc, outcome, true, |dep: Deployment| async move {
                let mut rest = dep
                    .provider
                    .provider
                    .chat_stream(req, &dep.upstream_model)
                    .await?;
                let first = rest.next().await.transpose()?;
                Ok(OpenStream {
                    first,
                    first_at: Instant::now(),
                    rest,
                })
            })
            .await?;
        let dep = outcome
            .deployment
            .clone()
            .ok_or_else(|| ProxyError::new(ErrorCode::ProviderError, "no deployment served"))?;
        let mut open = open;
        open.rest = observe(open.rest, dep, guard);
        Ok(open)
    }

    /// The attempt loop every request shares: the model's deployments (each attempt on a
    /// deployment not tried yet when there is one), then its fallbacks, each with its own
    /// `num_retries`, all within the request's total `timeout`. An attempt is given its
    /// deployment and run under its time limit (to the reply, or to a stream's first
    /// chunk); a success comes back with the deployment's in-flight guard and when the
    /// attempt ended (its latency is recorded here).
    async fn run<T, F, Fut>(
        &self,
        route: &Resolved,
        rc: &RouteCtx<'_>,
        outcome: &mut Outcome,
        stream: bool,
        attempt: F,
    ) -> Result<(T, InFlight, Instant), ProxyError>
    where
        F: Fn(Deployment) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let deadline = rc.started + self.routing.timeout;
        let per_model = self.routing.num_retries.saturating_add(1);
        let mut groups = vec![route.clone()];
        let mut next_group = 0;
        let mut fallbacks_added = false;
        let mut last_err: Option<UpstreamError> = None;
        let mut soonest: Option<Duration> = None;
        let mut saw_full = false;
        while next_group < groups.len() {
            let group = groups[next_group].clone();
            next_group += 1;
            let deployments: &[Deployment] = &group.deployments;
            if next_group > 1 {
                tracing::warn!(from = %route.model, to = %group.model, "falling back to another model");
                if let Some(m) = &self.metrics {
                    m.fallback(&route.model, &group.model);
                }
            }
            let mut tried: Vec<usize> = Vec::new();
            let mut attempts = 0;
            let mut context_error = false;
            while attempts < per_model {
                // One clock reading serves the choice, the deployment's bookkeeping and
                // the attempt's start (a request used to read the clock about 25 times,
                // 2-3% of its CPU); it is read again only after waiting.
                let mut now = Instant::now();
                if now >= deadline {
                    return Err(deadline_error(last_err, self.routing.timeout));
                }
                let mut full = false;
                let mut chosen = self.choose(deployments, &tried, &mut soonest, &mut full, now);
                // Deployments at their limits are a soft limit: wait briefly for a slot
                // before going on to fallbacks (or refusing).
                let wait_until = (now + LIMIT_WAIT).min(deadline);
                while chosen.is_none() && full && now < wait_until {
                    tokio::time::sleep(LIMIT_POLL).await;
                    now = Instant::now();
                    full = false;
                    chosen = self.choose(deployments, &tried, &mut soonest, &mut full, now);
                }
                saw_full |= full;
                if now >= deadline {
                    return Err(deadline_error(last_err, self.routing.timeout));
                }
                let Some((i, probe)) = chosen else {
                    break; // everything here is cooling down or at its limits
                };
                let dep = &deployments[i];
                // A probe that ends in neither success nor a deployment failure (a client
                // error, a cancelled request) is handed back, so the deployment cannot
                // stay "probing" for ever; after either outcome this does nothing.
                let _probe = probe.then(|| ProbeGuard(dep.state.clone()));
                attempts += 1;
                outcome.attempts += 1;
                outcome.deployment = Some(dep.clone());
                let guard = dep.state.start(now);
                let limit = if stream {
                    dep.timeouts.first_token
                } else {
                    dep.timeouts.total
                }
                .min(deadline.saturating_duration_since(now));
                let called = now;
                // Until the reply, or a stream's first chunk.
                let result = match timeout_at((called + limit).into(), attempt(dep.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(UpstreamError::Timeout(
                        if stream {
                            TimeoutKind::FirstToken
                        } else {
                            TimeoutKind::Total
                        },
                        limit,
                    )),
                };
                let ended = Instant::now();
                let elapsed = ended.saturating_duration_since(called);
                outcome.upstream += elapsed;
                if let Some(log) = &mut outcome.attempt_log {
                    log.push(Attempt {
                        deployment: dep.clone(),
                        started: called,
                        elapsed,
                        error: result.as_ref().err().map(UpstreamError::class),
                    });
                }
                let err = match result {
                    Ok(v) => {
                        dep.state.record_latency(elapsed);
                        dep.state.on_success();
                        return Ok((v, guard, ended));
                    }
                    Err(e) => e,
                };
                if let Some(m) = &self.metrics {
                    m.upstream_error(&dep.id, err.class());
                }
                drop(guard);
                let blame = err.blame();
                if !tried.contains(&i) {
                    tried.push(i);
                }
                match blame {
                    Blame::Client => {
                        log_failure(&err, dep, outcome.attempts, false);
                        if err.is_context_window() {
                            context_error = true;
                            last_err = Some(err);
                            break;
                        }
                        return Err(err.into_proxy_error());
                    }
                    Blame::Deployment { retry_same } => {
                        let cooled = dep.state.on_failure();
                        if cooled {
                            tracing::warn!(
                                deployment = %dep.id,
                                cooldown_s = self.routing.cooldown_time.as_secs_f64(),
                                "deployment taken out after repeated failures"
                            );
                        }
                        let more = attempts < per_model;
                        log_failure(&err, dep, outcome.attempts, more);
                        if let (true, Some(m)) = (more, &self.metrics) {
                            m.retry(&dep.id);
                        }
                        // Another deployment goes at once; the same one after a backoff.
                        let other = self.has_other(deployments, &tried, Instant::now());
                        if more && !other {
                            // Nothing to wait for on a deployment just taken out.
                            if !retry_same || cooled {
                                last_err = Some(err);
                                break;
                            }
                            let pause = self.backoff(attempts - 1, &err);
                            if Instant::now() + pause >= deadline {
                                // No time left to wait: the upstream's own answer stands.
                                return Err(err.into_proxy_error());
                            }
                            tokio::time::sleep(pause).await;
                        }
                        last_err = Some(err);
                    }
                }
            }
            // This model is spent: its fallbacks next (added once, after the first model).
            if !fallbacks_added {
                fallbacks_added = true;
                let r = &self.routing;
                let extra = if context_error {
                    self.fallbacks_of(&r.context_window_fallbacks, &route.model)
                } else if r.fallbacks.iter().any(|(m, _)| **m == *route.model) {
                    self.fallbacks_of(&r.fallbacks, &route.model)
                } else {
                    self.resolve_all(&r.default_fallbacks, &route.model)
                };
                groups.extend(extra.into_iter().filter(|g| (rc.may_use)(&g.model)));
            } else if context_error {
                break;
            }
        }
        match last_err {
            Some(e) => Err(e.into_proxy_error()),
            None if saw_full => Err(ProxyError::new(
                ErrorCode::RateLimit,
                format!(
                    "every deployment of `{}` is at its rpm, tpm or parallel-request limit; \
                     retry shortly",
                    route.model
                ),
            )
            .with_retry_after(Duration::from_secs(1))),
            None => Err(ProxyError::new(
                ErrorCode::Unavailable,
                format!(
                    "every deployment of `{}` (and of its fallbacks) is cooling down after \
                     failures or at its concurrency limit; retry shortly",
                    route.model
                ),
            )
            .with_retry_after(soonest.unwrap_or(Duration::from_secs(1)))),
        }
    }

    /// The deployment for the next attempt, and whether it goes as a cooldown probe:
    /// eligible ones (not cooling, under their `max_parallel_requests`, `rpm` and `tpm`),
    /// preferring those not tried yet, picked by the strategy. Notes the soonest end of a
    /// cooldown, and whether a deployment was passed over only for being at its limits.
    fn choose(
        &self,
        deployments: &[Deployment],
        tried: &[usize],
        soonest: &mut Option<Duration>,
        saw_full: &mut bool,
        now: Instant,
    ) -> Option<(usize, bool)> {
        // A model with one deployment (most of them): the checks below, without the three
        // candidate lists they allocate.
        if let [only] = deployments {
            let mut cooling = |left: Duration| {
                *soonest = Some(soonest.map_or(left, |s| s.min(left)));
                None
            };
            return match only.state.admit(now, false) {
                Admission::Cooling(left) => cooling(left),
                _ if at_limits(only) => {
                    *saw_full = true;
                    None
                }
                _ => match only.state.admit(now, true) {
                    Admission::Allowed => Some((0, false)),
                    Admission::Probe => Some((0, true)),
                    Admission::Cooling(left) => cooling(left),
                },
            };
        }
        let mut excluded: Vec<usize> = Vec::new();
        loop {
            let eligible: Vec<usize> = (0..deployments.len())
                .filter(|i| !excluded.contains(i))
                .filter(|i| {
                    let d = &deployments[*i];
                    match d.state.admit(now, false) {
                        Admission::Cooling(left) => {
                            *soonest = Some(soonest.map_or(left, |s| s.min(left)));
                            false
                        }
                        _ if at_limits(d) => {
                            *saw_full = true;
                            false
                        }
                        _ => true,
                    }
                })
                .collect();
            let fresh: Vec<usize> = eligible
                .iter()
                .copied()
                .filter(|i| !tried.contains(i))
                .collect();
            let pool = if fresh.is_empty() { &eligible } else { &fresh };
            let refs: Vec<&Deployment> = pool.iter().map(|i| &deployments[*i]).collect();
            let picked = balance::pick(self.routing.strategy, &refs)?;
            let i = pool
                .iter()
                .copied()
                .find(|i| std::ptr::eq(&deployments[*i], picked))?;
            match deployments[i].state.admit(now, true) {
                Admission::Allowed => return Some((i, false)),
                Admission::Probe => return Some((i, true)),
                // Another request took the probe meanwhile.
                Admission::Cooling(left) => {
                    *soonest = Some(soonest.map_or(left, |s| s.min(left)));
                    excluded.push(i);
                }
            }
        }
    }

    /// Whether an untried deployment of the group could take the next attempt.
    fn has_other(&self, deployments: &[Deployment], tried: &[usize], now: Instant) -> bool {
        (0..deployments.len()).any(|i| {
            let d = &deployments[i];
            !tried.contains(&i)
                && !matches!(d.state.admit(now, false), Admission::Cooling(_))
                && !at_limits(d)
        })
    }

    /// Exponential from `retry_backoff`, with jitter (×0.5–1.0) so retries from many
    /// clients do not align; at least the upstream's `retry-after`, up to `max_retry_after`.
    fn backoff(&self, retry: u32, err: &UpstreamError) -> Duration {
        let exp = self
            .routing
            .retry_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(MAX_BACKOFF);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match err {
            UpstreamError::Status {
                retry_after: Some(hint),
                ..
            } => jittered.max((*hint).min(self.routing.max_retry_after)),
            _ => jittered,
        }
    }
}

/// Hands a cooldown probe back when dropped (see the attempt loop).
struct ProbeGuard(Arc<DeploymentState>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.release_probe();
    }
}

/// The request ran out of its total time: a timeout, naming the last failure if any.
fn deadline_error(last: Option<UpstreamError>, total: Duration) -> ProxyError {
    let mut e = UpstreamError::Timeout(TimeoutKind::Total, total).into_proxy_error();
    if let Some(last) = last {
        e.message = format!("{} (last failure: {last})", e.message);
    }
    e
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

/// What a stream that reached the client still tells the router: its idle timeout, its
/// token usage (for usage-based routing), a failure mid-stream (counted against the
/// deployment), and when it ends (the in-flight count drops with the guard).
fn observe(inner: EventStream, dep: Deployment, guard: InFlight) -> EventStream {
    let idle = dep.timeouts.idle;
    futures_util::stream::unfold(
        Some((inner, dep, guard)),
        move |state| async move {
            let (mut s, dep, guard) = state?;
            match timeout(idle, s.next()).await {
                Ok(Some(Ok(c))) => {
                    for ev in &c.events {
                        if let ChatEvent::Usage(u) = ev {
                            guard.state().record_tokens(u.total_tokens, Instant::now());
                        }
                    }
                    Some((Ok(c), Some((s, dep, guard))))
                }
                Ok(Some(Err(e))) => {
                    if matches!(e.blame(), Blame::Deployment { .. }) {
                        dep.state.on_failure();
                    }
                    Some((Err(e), None))
                }
                Ok(None) => None,
                Err(_) => {
                    tracing::warn!(deployment = %dep.id, "upstream stream idle for {idle:?}; closing it");
                    dep.state.on_failure();
                    Some((
                        Err(UpstreamError::Timeout(TimeoutKind::StreamIdle, idle)),
                        None,
                    ))
                }
            }
        },
    )
    .boxed()
}
