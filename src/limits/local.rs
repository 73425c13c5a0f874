//! The in-process limit store: one entry per scope behind one lock (an admission holds it
//! for a few hundred nanoseconds), idle entries swept so memory follows live clients.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::gcra;
use super::{Decision, Exceeded, RateStatus, Refusal, Scope, Who};

#[derive(Debug, Default)]
struct Entry {
    req_tat: f64,
    tok_tat: f64,
    in_flight: u32,
}

#[derive(Debug)]
pub struct LocalStore {
    epoch: Instant,
    entries: Mutex<(HashMap<Who, Entry>, u64)>,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            entries: Mutex::new((HashMap::new(), 0)),
        }
    }
}

/// Every this many admissions, entries with nothing in flight and no debt are dropped.
const SWEEP_EVERY: u64 = 4096;

impl LocalStore {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Checks parallel, request and token limits together: either all are charged or none.
    pub fn admit(&self, scope: &Scope, tokens: u64) -> Decision {
        let now = self.now();
        let Ok(mut guard) = self.entries.lock() else {
            return Ok(RateStatus::default());
        };
        let (map, count) = &mut *guard;
        *count += 1;
        if *count % SWEEP_EVERY == 0 {
            map.retain(|_, e| e.in_flight > 0 || e.req_tat > now || e.tok_tat > now);
        }
        let e = entry(map, &scope.who);
        let l = scope.limits;
        let status_of = |e: &Entry| RateStatus {
            requests: l.rpm.map(|r| gcra::peek(e.req_tat, now, r)),
            tokens: l.tpm.map(|t| gcra::peek(e.tok_tat, now, t)),
        };
        if l.max_parallel_requests.is_some_and(|m| e.in_flight >= m) {
            return Err(Refusal {
                exceeded: Exceeded::Parallel,
                retry_after: Duration::from_secs(1),
                status: status_of(e),
            });
        }
        let (mut req_tat, mut tok_tat) = (e.req_tat, e.tok_tat);
        let mut status = RateStatus::default();
        if let Some(rpm) = l.rpm {
            match gcra::admit(&mut req_tat, now, rpm, 1.0) {
                Ok(q) => status.requests = Some(q),
                Err(wait) => return Err(refused(Exceeded::Requests, wait, status_of(e))),
            }
        }
        if let Some(tpm) = l.tpm {
            match gcra::admit(&mut tok_tat, now, tpm, tokens as f64) {
                Ok(q) => status.tokens = Some(q),
                Err(wait) => return Err(refused(Exceeded::Tokens, wait, status_of(e))),
            }
        }
        e.req_tat = req_tat;
        e.tok_tat = tok_tat;
        if l.max_parallel_requests.is_some() {
            e.in_flight += 1;
        }
        Ok(status)
    }

    pub fn settle(&self, scope: &Scope, token_delta: i64) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        // An entry swept while its request ran comes back, so the charge is never lost.
        let e = entry(&mut guard.0, &scope.who);
        if scope.limits.max_parallel_requests.is_some() {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        // The clock is read only when there is something to adjust.
        if let (Some(tpm), true) = (scope.limits.tpm, token_delta != 0) {
            gcra::adjust(&mut e.tok_tat, self.now(), tpm, token_delta as f64);
        }
    }
}

/// The scope's entry, created when missing. Cloning a [`Who`] copies an address or bumps
/// a reference count: nothing is allocated.
fn entry<'m>(map: &'m mut HashMap<Who, Entry>, who: &Who) -> &'m mut Entry {
    map.entry(who.clone()).or_default()
}

fn refused(exceeded: Exceeded, wait: f64, status: RateStatus) -> Refusal {
    // The real wait (a large reply can put a token limit minutes in debt), at most an hour.
    let wait = if wait.is_finite() {
        wait.clamp(0.001, 3600.0)
    } else {
        f64::from(u32::MAX)
    };
    Refusal {
        exceeded,
        retry_after: Duration::from_secs_f64(wait),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimits;

    fn scope(limits: RateLimits) -> Scope {
        Scope {
            who: Who::Key("t".into()),
            limits,
        }
    }

    #[test]
    fn parallel_limit_counts_in_flight_and_releases() {
        let store = LocalStore::default();
        let s = scope(RateLimits {
            max_parallel_requests: Some(2),
            ..RateLimits::default()
        });
        assert!(store.admit(&s, 1).is_ok());
        assert!(store.admit(&s, 1).is_ok());
        let r = store.admit(&s, 1).unwrap_err();
        assert_eq!(r.exceeded, Exceeded::Parallel);
        store.settle(&s, 0);
        assert!(store.admit(&s, 1).is_ok());
    }

    #[test]
    fn a_refused_token_check_charges_no_request() {
        let store = LocalStore::default();
        let s = scope(RateLimits {
            rpm: Some(10),
            tpm: Some(100),
            ..RateLimits::default()
        });
        let r = store.admit(&s, 500).unwrap_err();
        assert_eq!(r.exceeded, Exceeded::Tokens);
        // The request count was not charged by the refused admission.
        let ok = store.admit(&s, 10).unwrap();
        assert_eq!(ok.requests.unwrap().remaining, 9);
        assert_eq!(ok.tokens.unwrap().remaining, 90);
    }

    #[test]
    fn concurrent_admissions_are_exact() {
        let store = std::sync::Arc::new(LocalStore::default());
        let s = scope(RateLimits {
            rpm: Some(50),
            ..RateLimits::default()
        });
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|t| {
            for _ in 0..8 {
                t.spawn(|| {
                    for _ in 0..25 {
                        if store.admit(&s, 1).is_ok() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 50);
    }
}
