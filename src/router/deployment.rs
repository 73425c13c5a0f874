//! One concrete place a model is served from, and what the router knows about it while
//! serving: requests in flight, a moving average of latency, requests and tokens in the
//! last minute, and its circuit breaker. Everything is local to this replica.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ProviderEntry;
use super::breaker::{Admission, Breaker, BreakerPolicy, Health};

/// The resolved timeouts of one deployment (its own, else the routing defaults).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One non-streaming attempt.
    pub total: Duration,
    /// One streaming attempt's wait for its first chunk.
    pub first_token: Duration,
    /// Longest silence between two chunks.
    pub idle: Duration,
}

/// Per-deployment limits from the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    /// `provider/upstream-model`, as logs and headers show it.
    pub id: Arc<str>,
    /// The model name it serves (a fallback's own name when it served as one).
    pub model: Arc<str>,
    pub provider: Arc<ProviderEntry>,
    pub upstream_model: Arc<str>,
    pub max_tokens: Option<u64>,
    pub weight: u32,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub state: Arc<DeploymentState>,
}

/// Requests and tokens counted over a one-minute window (the current and the previous
/// minute, weighted, so the count does not drop to zero at a minute's turn).
#[derive(Debug)]
struct Window {
    started: Instant,
    requests: u64,
    tokens: u64,
    prev_requests: u64,
    prev_tokens: u64,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Window {
    fn roll(&mut self, now: Instant) {
        let age = now.duration_since(self.started);
        if age >= MINUTE * 2 {
            *self = Window::new(now);
        } else if age >= MINUTE {
            self.prev_requests = self.requests;
            self.prev_tokens = self.tokens;
            self.requests = 0;
            self.tokens = 0;
            self.started += MINUTE;
        }
    }

    fn new(now: Instant) -> Self {
        Self {
            started: now,
            requests: 0,
            tokens: 0,
            prev_requests: 0,
            prev_tokens: 0,
        }
    }

    /// (requests, tokens) in the minute before `now`.
    fn estimate(&mut self, now: Instant) -> (f64, f64) {
        self.roll(now);
        let into = now.duration_since(self.started).as_secs_f64() / MINUTE.as_secs_f64();
        let keep = (1.0 - into).max(0.0);
        (
            self.requests as f64 + self.prev_requests as f64 * keep,
            self.tokens as f64 + self.prev_tokens as f64 * keep,
        )
    }
}

#[derive(Debug)]
pub struct DeploymentState {
    in_flight: AtomicU32,
    /// Moving average of time to first token (streams) or latency (replies), in µs;
    /// 0 until the first success.
    ewma_us: AtomicU64,
    window: Mutex<Window>,
    breaker: Mutex<Breaker>,
    /// This deployment's metric series, resolved once (see `SeriesCache`).
    pub series: crate::telemetry::SeriesCache,
    /// Its model and id as reply header values (`x-llm-proxy-model`,
    /// `x-llm-proxy-deployment`), made on first use instead of on every reply; `None`
    /// for a name that is not a valid header value.
    pub header_values: std::sync::OnceLock<(Option<http::HeaderValue>, Option<http::HeaderValue>)>,
}

/// Weight of the newest sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;

impl DeploymentState {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            window: Mutex::new(Window::new(Instant::now())),
            breaker: Mutex::new(Breaker::new(policy)),
            series: Default::default(),
            header_values: std::sync::OnceLock::new(),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> Option<Duration> {
        match self.ewma_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn record_latency(&self, d: Duration) {
        let sample = d.as_micros().clamp(1, u64::MAX as u128) as f64;
        let _ = self
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let next = if old == 0 {
                    sample
                } else {
                    EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * old as f64
                };
                Some(next.max(1.0) as u64)
            });
    }

    /// Counts `tokens` at `now` (the caller's clock reading: requests read the clock a
    /// few times, not once per bookkeeping step).
    pub fn record_tokens(&self, tokens: u64, now: Instant) {
        if let Ok(mut w) = self.window.lock() {
            w.roll(now);
            w.tokens += tokens;
        }
    }

    /// How close to its limits it runs: the larger of requests/rpm and tokens/tpm over the
    /// last minute (0 without limits).
    pub fn load(&self, limits: &Limits) -> f64 {
        let Ok(mut w) = self.window.lock() else {
            return 0.0;
        };
        let (req, tok) = w.estimate(Instant::now());
        let r = limits.rpm.map_or(0.0, |l| req / l.max(1) as f64);
        let t = limits.tpm.map_or(0.0, |l| tok / l.max(1) as f64);
        r.max(t)
    }

    /// Whether a request may go to this deployment at `now`, and whether as a probe.
    pub fn admit(&self, now: Instant, take_probe: bool) -> Admission {
        match self.breaker.lock() {
            Ok(mut b) => b.admit(now, take_probe),
            Err(_) => Admission::Allowed,
        }
    }

    pub fn on_success(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.on_success();
        }
    }

    /// Returns true when this failure took the deployment out.
    pub fn on_failure(&self) -> bool {
        self.breaker
            .lock()
            .map(|mut b| b.on_failure(Instant::now()))
            .unwrap_or(false)
    }

    pub fn on_health_success(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.on_health_success(Instant::now());
        }
    }

    pub fn release_probe(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.release_probe();
        }
    }

    pub fn health(&self) -> (Health, Option<Duration>) {
        self.breaker
            .lock()
            .map(|b| b.health(Instant::now()))
            .unwrap_or((Health::Healthy, None))
    }

    /// Counts a request starting at `now`; the guard counts it finished when dropped.
    pub fn start(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.window.lock() {
            w.roll(now);
            w.requests += 1;
        }
        InFlight(self.clone())
    }
}

/// A request in flight on a deployment; dropping it (reply done, stream ended or dropped,
/// request cancelled) counts it finished, so the count cannot drift.
#[derive(Debug)]
pub struct InFlight(Arc<DeploymentState>);

impl InFlight {
    pub fn state(&self) -> &DeploymentState {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_weighs_the_previous_minute_down() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.requests = 60;
        let (r, _) = w.estimate(t0 + Duration::from_secs(90));
        assert!((r - 30.0).abs() < 1.0, "{r}");
        let (r, _) = w.estimate(t0 + Duration::from_secs(200));
        assert_eq!(r, 0.0);
    }

    #[test]
    fn in_flight_is_counted_by_guards() {
        let s = Arc::new(DeploymentState::new(BreakerPolicy {
            allowed_fails: 1,
            fail_window: MINUTE,
            cooldown: MINUTE,
        }));
        let a = s.start(Instant::now());
        let b = s.start(Instant::now());
        assert_eq!(s.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        s.record_latency(Duration::from_millis(100));
        s.record_latency(Duration::from_millis(200));
        let l = s.latency().unwrap().as_millis();
        assert!((120..=140).contains(&l), "{l}");
        assert!(
            s.load(&Limits {
                rpm: Some(4),
                ..Limits::default()
            }) >= 0.5
        );
    }
}
