//! Prometheus metrics at `/metrics`: requests, latency, time to first token, overhead,
//! tokens, retries, fallbacks, rate limiting, requests and streams in flight, upstream
//! errors and deployment health. Names follow Prometheus conventions (`llm_proxy_` prefix,
//! `_total`, `_seconds`) and the OpenTelemetry GenAI conventions where they apply (time to
//! first token, token type `input`/`output`).
//!
//! Recording is a few atomic operations on the request path. Label values that come from
//! clients (model names) are capped, so a client inventing model names cannot grow the
//! series without bound. The per-request label sets allocate nothing: names are interned
//! once as `Arc<str>` (a clone is a reference count), the endpoint and token type are
//! static strings, the status a number.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// An interned label value.
type Name = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub model: Name,
    pub provider: Name,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: Name,
    pub provider: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: Name,
    pub provider: Name,
    /// `input`, `output`, `cached` or `reasoning`.
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub deployment: String,
    /// `connect`, `timeout`, `status_5xx`, `status_429`, …
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub from: Name,
    pub to: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `key`, `ip` or `deployment`.
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub deployment: String,
    pub state: String,
}

type Hist = Family<ModelLabels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

fn overhead_buckets() -> Histogram {
    // 10 µs … 100 ms: what the proxy itself adds.
    Histogram::new([
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1,
    ])
}

/// Distinct model label values kept before new ones are reported as `other`.
const MAX_MODELS: usize = 500;

/// The series one deployment's requests record into, resolved on its first request and
/// kept with the deployment (`DeploymentState`), so later requests skip interning the
/// model name and hashing their label sets into six families: about 2,000 instructions
/// of a request's ~100,000 under callgrind.
#[derive(Debug, Default)]
pub struct SeriesCache(OnceLock<Arc<Series>>);

#[derive(Debug)]
pub struct Series {
    /// The model name (as the client asked) these series were resolved for: a request for
    /// another name through the same deployment takes the general path.
    requested: Name,
    provider: Name,
    model: Name,
    duration: Histogram,
    overhead: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    /// Input, output, cached and reasoning tokens, created when first counted (a series
    /// appears in `/metrics` only once it has counted something, as before).
    tokens: [OnceLock<Counter>; 4],
    /// Successful requests (`status="200"`) by endpoint.
    ok: Mutex<Vec<(&'static str, Counter)>>,
}

const TOKEN_TYPES: [&str; 4] = ["input", "output", "cached", "reasoning"];

/// A usage's token counts in [`TOKEN_TYPES`] order.
fn token_counts(u: crate::types::Usage) -> [Option<u64>; 4] {
    [
        Some(u.prompt_tokens),
        Some(u.completion_tokens),
        u.cached_tokens,
        u.reasoning_tokens,
    ]
}

/// What the request log tells the metrics about a finished request.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub endpoint: &'static str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a Name>,
    pub status: u16,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub usage: Option<crate::types::Usage>,
}

impl Series {
    fn labels(&self) -> ModelLabels {
        ModelLabels {
            model: self.model.clone(),
            provider: self.provider.clone(),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Hist,
    ttft: Hist,
    overhead: Hist,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    retries: Family<DeploymentLabels, Counter>,
    upstream_errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    in_flight: Gauge<i64, AtomicI64>,
    streams: Gauge<i64, AtomicI64>,
    deployment_state: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// Model names seen (at most `MAX_MODELS`).
    models_seen: Mutex<HashSet<Name>>,
    other: Name,
    none: Name,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llm_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by endpoint, model, provider and HTTP status",
            requests.clone(),
        );
        let duration = Hist::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Whole request: to the reply, or to the end of the stream",
            duration.clone(),
        );
        let overhead = Hist::new_with_constructor(overhead_buckets as fn() -> Histogram);
        registry.register(
            "overhead_seconds",
            "Time the proxy itself added: total minus time waiting on the upstream (to the reply, or to the stream's first chunk)",
            overhead.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by type (input, output, cached, reasoning) as upstreams report them",
            tokens.clone(),
        );
        let retries = Family::<DeploymentLabels, Counter>::default();
        registry.register(
            "retries",
            "Attempts retried after a failure",
            retries.clone(),
        );
        let cost = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cost_usd",
            "Estimated spend in US dollars, from the price table",
            cost.clone(),
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed upstream attempts by class",
            upstream_errors.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "fallbacks",
            "Requests that fell back to another model",
            fallbacks.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by scope",
            rate_limited.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        let streams = Gauge::<i64, AtomicI64>::default();
        registry.register("open_streams", "Streams open to clients", streams.clone());
        let deployment_state = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "deployment_state",
            "1 for each deployment's current state (healthy, degraded, cooling, probing)",
            deployment_state.clone(),
        );
        let ttft = Hist::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time to a stream's first token (OpenTelemetry GenAI: gen_ai.server.time_to_first_token)",
            ttft.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            ttft,
            overhead,
            tokens,
            retries,
            upstream_errors,
            fallbacks,
            rate_limited,
            in_flight,
            streams,
            deployment_state,
            cost,
            models_seen: Mutex::new(HashSet::new()),
            other: Arc::from("other"),
            none: Arc::from("-"),
        }
    }

    /// A model name as a label value: itself while fewer than `MAX_MODELS` were seen.
    fn model_label(&self, model: Option<&str>) -> Name {
        let Some(model) = model else {
            return self.none.clone();
        };
        let Ok(mut seen) = self.models_seen.lock() else {
            return self.other.clone();
        };
        if let Some(name) = seen.get(model) {
            return name.clone();
        }
        if seen.len() >= MAX_MODELS {
            return self.other.clone();
        }
        let name: Name = Arc::from(model);
        seen.insert(name.clone());
        name
    }

    /// A provider's name as a label value (`-` for none). Provider names come from the
    /// configuration, already shared (`Arc<str>`): nothing to intern or bound.
    fn provider(&self, name: Option<&Name>) -> Name {
        name.cloned().unwrap_or_else(|| self.none.clone())
    }

    /// Adds a request's estimated cost.
    pub fn cost(&self, model: Option<&str>, provider: Option<&Name>, usd: f64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let labels = ModelLabels {
            model: self.model_label(model),
            provider: self.provider(provider),
        };
        self.cost.get_or_create(&labels).inc_by(usd);
    }

    /// The series `cache` holds for `model` through `provider`, resolved on first use;
    /// `None` when there is no cache or it was resolved for another model name.
    fn cached<'c>(
        &self,
        cache: Option<&'c SeriesCache>,
        model: Option<&str>,
        provider: Option<&Name>,
    ) -> Option<&'c Series> {
        let (cache, model, provider) = (cache?, model?, provider?);
        let series = cache.0.get_or_init(|| {
            let label = self.model_label(Some(model));
            let labels = ModelLabels {
                model: label.clone(),
                provider: provider.clone(),
            };
            Arc::new(Series {
                requested: Arc::from(model),
                provider: provider.clone(),
                model: label,
                duration: self.duration.get_or_create(&labels).clone(),
                overhead: OnceLock::new(),
                ttft: OnceLock::new(),
                tokens: Default::default(),
                ok: Mutex::new(Vec::new()),
            })
        });
        (*series.requested == *model && *series.provider == **provider).then_some(&**series)
    }

    /// Records a finished request (called once, by the request log). `cache` is the
    /// serving deployment's, when one served.
    pub fn request(&self, finished: &Finished<'_>, cache: Option<&SeriesCache>) {
        let Finished {
            endpoint,
            model,
            provider,
            status,
            latency,
            ttft,
            usage,
        } = *finished;
        let Some(series) = self.cached(cache, model, provider) else {
            return self.request_uncached(finished);
        };
        let requests = || {
            self.requests
                .get_or_create(&RequestLabels {
                    endpoint,
                    model: series.model.clone(),
                    provider: series.provider.clone(),
                    status,
                })
                .clone()
        };
        match (status, series.ok.lock()) {
            (200, Ok(mut ok)) => match ok.iter().find(|(e, _)| *e == endpoint) {
                Some((_, counter)) => {
                    counter.inc();
                }
                None => {
                    let counter = requests();
                    counter.inc();
                    ok.push((endpoint, counter));
                }
            },
            _ => {
                requests().inc();
            }
        };
        series.duration.observe(latency.as_secs_f64());
        if let Some(t) = ttft {
            series
                .ttft
                .get_or_init(|| self.ttft.get_or_create(&series.labels()).clone())
                .observe(t.as_secs_f64());
        }
        if let Some(u) = usage {
            for ((n, kind), counter) in token_counts(u)
                .into_iter()
                .zip(TOKEN_TYPES)
                .zip(&series.tokens)
            {
                if let Some(n) = n.filter(|n| *n > 0) {
                    counter
                        .get_or_init(|| {
                            self.tokens
                                .get_or_create(&TokenLabels {
                                    model: series.model.clone(),
                                    provider: series.provider.clone(),
                                    r#type: kind,
                                })
                                .clone()
                        })
                        .inc_by(n);
                }
            }
        }
    }

    /// [`Self::request`] without a deployment's cache: every label set looked up.
    fn request_uncached(&self, f: &Finished<'_>) {
        let model = self.model_label(f.model);
        let provider = self.provider(f.provider);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: f.endpoint,
                model: model.clone(),
                provider: provider.clone(),
                status: f.status,
            })
            .inc();
        let ml = ModelLabels {
            model: model.clone(),
            provider: provider.clone(),
        };
        self.duration
            .get_or_create(&ml)
            .observe(f.latency.as_secs_f64());
        if let Some(t) = f.ttft {
            self.ttft.get_or_create(&ml).observe(t.as_secs_f64());
        }
        if let Some(u) = f.usage {
            for (kind, n) in TOKEN_TYPES.into_iter().zip(token_counts(u)) {
                if let Some(n) = n.filter(|n| *n > 0) {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            model: model.clone(),
                            provider: provider.clone(),
                            r#type: kind,
                        })
                        .inc_by(n);
                }
            }
        }
    }

    /// The proxy's own time for a request served by `model` through `provider`.
    pub fn overhead(&self, model: &str, provider: &Name, d: Duration, cache: Option<&SeriesCache>) {
        if let Some(series) = self.cached(cache, Some(model), Some(provider)) {
            series
                .overhead
                .get_or_init(|| self.overhead.get_or_create(&series.labels()).clone())
                .observe(d.as_secs_f64());
            return;
        }
        let ml = ModelLabels {
            model: self.model_label(Some(model)),
            provider: provider.clone(),
        };
        self.overhead.get_or_create(&ml).observe(d.as_secs_f64());
    }

    pub fn retry(&self, deployment: &str) {
        self.retries
            .get_or_create(&DeploymentLabels {
                deployment: deployment.to_owned(),
            })
            .inc();
    }

    pub fn upstream_error(&self, deployment: &str, class: &str) {
        self.upstream_errors
            .get_or_create(&ErrorLabels {
                deployment: deployment.to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

    pub fn fallback(&self, from: &str, to: &str) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                from: self.model_label(Some(from)),
                to: self.model_label(Some(to)),
            })
            .inc();
    }

    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                scope: scope.to_owned(),
            })
            .inc();
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    pub fn streams(&self, delta: i64) {
        self.streams.inc_by(delta);
    }

    /// The text exposition, with each deployment's state set just before.
    pub fn render(&self, deployments: &[(String, &'static str)]) -> String {
        self.deployment_state.clear();
        for (d, state) in deployments {
            self.deployment_state
                .get_or_create(&StateLabels {
                    deployment: d.clone(),
                    state: (*state).to_owned(),
                })
                .set(1);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Usage;

    /// Recording through a deployment's cache renders exactly what recording without one
    /// does: same series, same values, none created early — including requests for
    /// another model name through the same deployment and failed requests.
    #[test]
    fn cached_series_render_what_uncached_ones_do() {
        let (cached, plain) = (Metrics::new(), Metrics::new());
        let cache = SeriesCache::default();
        let openai: Name = Arc::from("openai");
        let usage = |cached_tokens| Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens,
            reasoning_tokens: None,
            ..Usage::default()
        };
        let ms = Duration::from_millis;
        let calls = [
            ("chat_completions", "gpt", 200, None, Some(usage(None))),
            (
                "chat_completions",
                "gpt",
                200,
                Some(ms(3)),
                Some(usage(Some(4))),
            ),
            ("messages", "gpt", 200, None, None),
            ("chat_completions", "gpt", 502, None, None),
            ("chat_completions", "alias", 200, None, Some(usage(None))),
            ("llm_chat", "gpt", 429, None, None),
        ];
        for (endpoint, model, status, ttft, usage) in calls {
            for (m, c) in [(&cached, Some(&cache)), (&plain, None)] {
                m.overhead(model, &openai, ms(1), c);
                let finished = Finished {
                    endpoint,
                    model: Some(model),
                    provider: Some(&openai),
                    status,
                    latency: ms(20),
                    ttft,
                    usage,
                };
                m.request(&finished, c);
            }
        }
        // Series within a family come in hash order: compare the lines as sets.
        let lines = |m: &Metrics| {
            let mut l: Vec<String> = m.render(&[]).lines().map(str::to_owned).collect();
            l.sort();
            l
        };
        let (a, b) = (lines(&cached), lines(&plain));
        assert!(a.iter().any(|l| l.contains("status=\"502\"")), "{a:?}");
        assert!(a.iter().any(|l| l.contains("type=\"cached\"")), "{a:?}");
        assert_eq!(a, b);
    }
}
