//! Choosing one deployment among the eligible ones, by strategy.

use super::deployment::Deployment;
use crate::config::Strategy;

/// Picks one of `candidates` (all eligible: not cooling, not full). `None` only when
/// there are none.
pub fn pick<'a>(strategy: Strategy, candidates: &[&'a Deployment]) -> Option<&'a Deployment> {
    match candidates {
        [] => None,
        [only] => Some(only),
        _ => Some(match strategy {
            Strategy::SimpleShuffle => weighted(candidates),
            Strategy::LeastBusy => lowest(candidates, |d| f64::from(d.state.in_flight())),
            Strategy::UsageBased => lowest(candidates, |d| d.state.load(&d.limits)),
            Strategy::LatencyBased => two_choices(candidates),
        }),
    }
}

/// Weighted random by `weight`; all-zero weights fall back to uniform.
fn weighted<'a>(c: &[&'a Deployment]) -> &'a Deployment {
    let total: u64 = c.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return c[fastrand::usize(..c.len())];
    }
    let mut ticket = fastrand::u64(..total);
    for d in c {
        let w = u64::from(d.weight);
        if ticket < w {
            return d;
        }
        ticket -= w;
    }
    c[c.len() - 1]
}

/// The lowest score; ties broken at random so equal deployments share the load.
fn lowest<'a>(c: &[&'a Deployment], score: impl Fn(&Deployment) -> f64) -> &'a Deployment {
    let scores: Vec<f64> = c.iter().map(|d| score(d)).collect();
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let tied: Vec<usize> = (0..c.len()).filter(|i| scores[*i] <= best).collect();
    c[tied[fastrand::usize(..tied.len())]]
}

/// Power of two choices on the latency average: two at random, the faster one wins. A
/// deployment without a measurement yet wins, so every one gets measured.
fn two_choices<'a>(c: &[&'a Deployment]) -> &'a Deployment {
    let a = fastrand::usize(..c.len());
    let mut b = fastrand::usize(..c.len() - 1);
    if b >= a {
        b += 1;
    }
    let key = |d: &Deployment| d.state.latency().map_or(0, |l| l.as_micros());
    if key(c[b]) < key(c[a]) { c[b] } else { c[a] }
}
