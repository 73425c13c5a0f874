//! The circuit breaker of one deployment: `allowed_fails` failures within `fail_window`
//! take it out for `cooldown_time`; then exactly one request (the probe) is let through,
//! and its result closes the breaker or opens it for another cooldown.
//!
//! Only failures that say something about the deployment count (connect errors, timeouts,
//! 5xx, 429, 401/403); a client's bad request does not. Unlike LiteLLM, a model with a
//! single deployment is cooled too: the client then gets a fallback or a fast 503 with
//! `retry-after` instead of waiting on a dead upstream every time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The breaker's settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    pub allowed_fails: u32,
    pub fail_window: Duration,
    pub cooldown: Duration,
}

#[derive(Debug)]
enum State {
    Closed {
        fails: VecDeque<Instant>,
    },
    Open {
        until: Instant,
    },
    /// Cooldown over; `probing` while the one probe request is in flight.
    HalfOpen {
        probing: bool,
    },
}

/// What a request may do with the deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as the probe after a cooldown: its outcome decides.
    Probe,
    /// Cooling down (or its probe is still out); try again after this long.
    Cooling(Duration),
}

/// How a deployment looks from outside, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Some recent failures, not enough to take it out.
    Degraded,
    Cooling,
    Probing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Cooling => "cooling",
            Health::Probing => "probing",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
}

/// How long a request waits for a probe that is still out before trying again.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: State::Closed {
                fails: VecDeque::new(),
            },
        }
    }

    /// Whether a request may go to the deployment now. Peeking (`take_probe: false`) never
    /// hands out the probe; picking a deployment for a request does.
    pub fn admit(&mut self, now: Instant, take_probe: bool) -> Admission {
        match &mut self.state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now < *until => Admission::Cooling(*until - now),
            State::Open { .. } => {
                if take_probe {
                    self.state = State::HalfOpen { probing: true };
                    Admission::Probe
                } else {
                    Admission::Allowed
                }
            }
            State::HalfOpen { probing: true } => Admission::Cooling(PROBE_WAIT),
            State::HalfOpen { probing } => {
                if take_probe {
                    *probing = true;
                    Admission::Probe
                } else {
                    Admission::Allowed
                }
            }
        }
    }

    pub fn on_success(&mut self) {
        self.state = State::Closed {
            fails: VecDeque::new(),
        };
    }

    /// Records a failure; returns true when it opened the breaker.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        let p = self.policy;
        match &mut self.state {
            State::Closed { fails } => {
                fails.push_back(now);
                while fails
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > p.fail_window)
                {
                    fails.pop_front();
                }
                if p.allowed_fails > 0 && fails.len() >= p.allowed_fails as usize {
                    self.state = State::Open {
                        until: now + p.cooldown,
                    };
                    return true;
                }
                false
            }
            // A failed probe (or a failure reported late): another full cooldown.
            State::HalfOpen { .. } | State::Open { .. } => {
                self.state = State::Open {
                    until: now + p.cooldown,
                };
                true
            }
        }
    }

    /// A passing active health check: a deployment whose cooldown is over comes back (the
    /// check stands in for the probe); one still cooling stays out, and recent failures
    /// of a working deployment are not forgiven by a model listing.
    pub fn on_health_success(&mut self, now: Instant) {
        match self.state {
            State::Open { until } if now >= until => self.on_success(),
            State::HalfOpen { probing: false } => self.on_success(),
            _ => {}
        }
    }

    /// A probe that ended with neither success nor a deployment failure (a client error,
    /// a cancelled request) gives the probe back, so the next request can try.
    pub fn release_probe(&mut self) {
        if let State::HalfOpen { probing } = &mut self.state {
            *probing = false;
        }
    }

    pub fn health(&self, now: Instant) -> (Health, Option<Duration>) {
        match &self.state {
            State::Closed { fails } if fails.is_empty() => (Health::Healthy, None),
            State::Closed { .. } => (Health::Degraded, None),
            State::Open { until } if now < *until => (Health::Cooling, Some(*until - now)),
            State::Open { .. } | State::HalfOpen { probing: false } => (Health::Cooling, None),
            State::HalfOpen { probing: true } => (Health::Probing, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            allowed_fails: 2,
            fail_window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_after_allowed_fails_then_lets_one_probe_through() {
        let mut b = Breaker::new(policy());
        let t0 = Instant::now();
        assert!(!b.on_failure(t0));
        assert_eq!(b.admit(t0, true), Admission::Allowed);
        assert!(b.on_failure(t0 + Duration::from_secs(1)));
        assert_eq!(
            b.admit(t0 + Duration::from_secs(2), true),
            Admission::Cooling(Duration::from_secs(4))
        );
        let later = t0 + Duration::from_secs(7);
        assert_eq!(
            b.admit(later, false),
            Admission::Allowed,
            "a peek takes no probe"
        );
        assert_eq!(b.admit(later, true), Admission::Probe);
        assert_eq!(
            b.admit(later, true),
            Admission::Cooling(PROBE_WAIT),
            "one probe"
        );
        b.on_success();
        assert_eq!(b.admit(later, true), Admission::Allowed);
        assert_eq!(b.health(later).0, Health::Healthy);
    }

    #[test]
    fn a_failed_probe_cools_again_and_old_failures_expire() {
        let mut b = Breaker::new(policy());
        let t0 = Instant::now();
        b.on_failure(t0);
        // Outside the window: the first failure no longer counts.
        assert!(!b.on_failure(t0 + Duration::from_secs(11)));
        assert!(b.on_failure(t0 + Duration::from_secs(12)));
        let probe_at = t0 + Duration::from_secs(18);
        assert_eq!(b.admit(probe_at, true), Admission::Probe);
        assert!(b.on_failure(probe_at));
        assert!(matches!(b.admit(probe_at, true), Admission::Cooling(_)));
        assert_eq!(b.health(probe_at).0, Health::Cooling);
        // A probe that ends in a client error is handed back.
        let after = probe_at + Duration::from_secs(6);
        assert_eq!(b.admit(after, true), Admission::Probe);
        b.release_probe();
        assert_eq!(b.admit(after, true), Admission::Probe);
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn a_passing_health_check_ends_only_a_finished_cooldown() {
        let mut b = Breaker::new(BreakerPolicy {
            allowed_fails: 1,
            fail_window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_health_success(t0 + Duration::from_secs(1));
        assert_eq!(b.health(t0 + Duration::from_secs(1)).0, Health::Cooling);
        b.on_health_success(t0 + Duration::from_secs(6));
        assert_eq!(b.health(t0 + Duration::from_secs(6)).0, Health::Healthy);
        // Recent failures of a working deployment are not forgiven by a model listing.
        let mut b = Breaker::new(BreakerPolicy {
            allowed_fails: 3,
            fail_window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        });
        b.on_failure(t0);
        b.on_health_success(t0);
        assert_eq!(b.health(t0).0, Health::Degraded);
    }
}
