//! The limiter's arithmetic: the generic cell rate algorithm (GCRA). A limit of L per
//! minute lets a burst of L through and then one every 60/L seconds; the state is one
//! number (the theoretical arrival time, TAT), so an admission is one compare-and-set and
//! the same math runs in-process and in Redis (see `redis_store.rs`).

/// The window a per-minute limit is spread over.
pub const PERIOD_S: f64 = 60.0;

/// Where a quota stands after an admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the quota is whole again.
    pub reset_s: f64,
}

/// Admits `n` units at `now` (seconds) against `limit` per minute, updating `tat`; on
/// refusal returns how long until `n` units would fit (infinite when they never can).
pub fn admit(tat: &mut f64, now: f64, limit: u64, n: f64) -> Result<Quota, f64> {
    let limit_f = limit.max(1) as f64;
    let t = PERIOD_S / limit_f;
    if n > limit_f {
        return Err(f64::INFINITY);
    }
    let new = tat.max(now) + n * t;
    let debt = new - now;
    if debt > PERIOD_S + 1e-9 {
        return Err(debt - PERIOD_S);
    }
    *tat = new;
    Ok(quota(limit, debt, t))
}

/// Where a quota stands without admitting anything.
pub fn peek(tat: f64, now: f64, limit: u64) -> Quota {
    let t = PERIOD_S / limit.max(1) as f64;
    quota(limit, (tat - now).max(0.0), t)
}

fn quota(limit: u64, debt: f64, t: f64) -> Quota {
    Quota {
        limit,
        remaining: ((PERIOD_S - debt) / t).floor().clamp(0.0, limit as f64) as u64,
        reset_s: debt.max(0.0),
    }
}

/// Charges (or refunds, when negative) `n` units after the fact: real token usage known
/// only once the reply is done. Never refused; a refund never goes below `now`.
pub fn adjust(tat: &mut f64, now: f64, limit: u64, n: f64) {
    let t = PERIOD_S / limit.max(1) as f64;
    *tat = (tat.max(now) + n * t).max(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let mut tat = 0.0;
        for i in 0..30 {
            let q = admit(&mut tat, 0.0, 30, 1.0).unwrap();
            assert_eq!(q.remaining, 29 - i);
        }
        let wait = admit(&mut tat, 0.0, 30, 1.0).unwrap_err();
        assert!((wait - 2.0).abs() < 1e-9, "{wait}");
        // One interval later, exactly one more fits.
        assert!(admit(&mut tat, 2.0, 30, 1.0).is_ok());
        assert!(admit(&mut tat, 2.0, 30, 1.0).is_err());
        // After a full minute of quiet the whole burst is back.
        let q = peek(tat, 62.0, 30);
        assert_eq!((q.remaining, q.reset_s), (30, 0.0));
    }

    #[test]
    fn tokens_reserve_then_settle() {
        let mut tat = 0.0;
        let q = admit(&mut tat, 0.0, 1000, 400.0).unwrap();
        assert_eq!(q.remaining, 600);
        // The reply used 900 tokens: charge the other 500.
        adjust(&mut tat, 0.0, 1000, 500.0);
        assert_eq!(peek(tat, 0.0, 1000).remaining, 100);
        assert!(admit(&mut tat, 0.0, 1000, 200.0).is_err());
        // A refund frees room, but never more than a full quota.
        adjust(&mut tat, 0.0, 1000, -5000.0);
        assert_eq!(peek(tat, 0.0, 1000).remaining, 1000);
        assert_eq!(admit(&mut tat, 0.0, 1000, 2000.0), Err(f64::INFINITY));
    }
}
