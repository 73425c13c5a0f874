//! Admission: per virtual key (requests, tokens, concurrency) and per client address for
//! requests without one. In-process by default; with `limits.redis_url`, one atomic Lua
//! script per admission in Redis, so every replica enforces the same limit. Token limits
//! reserve an estimate before the request and settle the real usage after it.

mod gcra;
mod local;
mod redis_store;

pub use gcra::Quota;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LimitsSettings, OnRedisError, RateLimits};
use crate::error::{ErrorCode, ProxyError};
use crate::keys::Principal;
use local::LocalStore;
use redis_store::RedisStore;

/// Where a request's limits stand, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateStatus {
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

impl RateStatus {
    /// OpenAI's headers: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`. Written
    /// on every limited reply, so the names are static and the numbers formatted once.
    pub fn headers(&self, h: &mut http::HeaderMap) {
        use http::HeaderName as N;
        const NAMES: [[N; 3]; 2] = [
            [
                N::from_static("x-ratelimit-limit-requests"),
                N::from_static("x-ratelimit-remaining-requests"),
                N::from_static("x-ratelimit-reset-requests"),
            ],
            [
                N::from_static("x-ratelimit-limit-tokens"),
                N::from_static("x-ratelimit-remaining-tokens"),
                N::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        for ([limit, remaining, reset], q) in NAMES.into_iter().zip([self.requests, self.tokens]) {
            let Some(q) = q else { continue };
            h.insert(limit, http::HeaderValue::from(q.limit));
            h.insert(remaining, http::HeaderValue::from(q.remaining));
            if let Some(v) = reset_value(q.reset_s) {
                h.insert(reset, v);
            }
        }
    }
}

/// `reset_s` rounded up to the millisecond, written as seconds with the trailing zeros
/// dropped and an `s` (`0.001s`, `1s`, `59.5s`), as OpenAI writes it. The same text
/// `format!("{}s", ceil(reset_s * 1000) / 1000)` gives, without formatting a float on
/// every limited reply.
fn reset_value(reset_s: f64) -> Option<http::HeaderValue> {
    let ms = (reset_s * 1000.0).ceil();
    // Also refuses NaN; a year of milliseconds is far beyond any window.
    if !(0.0..1e12).contains(&ms) {
        return None;
    }
    let mut text = crate::decimal::thousandths_trimmed(ms as u64);
    text.push('s');
    http::HeaderValue::try_from(text).ok()
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Requests,
    Tokens,
    Parallel,
}

impl Exceeded {
    fn as_str(self) -> &'static str {
        match self {
            Exceeded::Requests => "requests per minute",
            Exceeded::Tokens => "tokens per minute",
            Exceeded::Parallel => "parallel requests",
        }
    }
}

/// A refusal from a store: which limit, and when to try again.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub exceeded: Exceeded,
    pub retry_after: Duration,
    pub status: RateStatus,
}

/// The store's answer to one admission.
pub type Decision = Result<RateStatus, Refusal>;

/// Who a limit counts: a virtual key, or a client address. Cheap to copy and to hash: the
/// in-process store keys its table by it, so an admission allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    Key(Arc<str>),
    Address(IpAddr),
}

/// What is limited for one request: whose budget, and its limits.
#[derive(Debug, Clone)]
pub struct Scope {
    pub who: Who,
    pub limits: RateLimits,
}

impl Scope {
    /// The scope's name in shared stores: `key:<name>` or `ip:<addr>`.
    pub fn id(&self) -> String {
        match &self.who {
            Who::Key(name) => format!("key:{name}"),
            Who::Address(ip) => format!("ip:{ip}"),
        }
    }

    /// How the scope is named in a refusal: `key team-a`, `address 10.0.0.7`.
    pub fn label(&self) -> String {
        match &self.who {
            Who::Key(name) => format!("key {name}"),
            Who::Address(ip) => format!("address {ip}"),
        }
    }

    pub fn is_key(&self) -> bool {
        matches!(self.who, Who::Key(_))
    }
}

/// Limits settled when a request ends: tokens charged (or refunded) against the reserve
/// and its parallel slot released. Dropping it unsettled releases the slot and keeps the
/// reserve as the charge (a request cut short used at most that much).
pub struct Ticket {
    limiter: Arc<Limiter>,
    scope: Scope,
    reserved: u64,
    /// The parallel slot's name in Redis; `None`: admitted by this replica.
    shared_slot: Option<String>,
    pub status: RateStatus,
    done: bool,
}

impl Ticket {
    /// Settles a request cut short without a usage report: its reserve plus the output
    /// it produced (about one token per piece).
    pub fn finish_partial(self, output_pieces: u64) {
        let total = self.reserved.saturating_add(output_pieces);
        self.finish(Some(total));
    }

    /// Settles with the real token usage.
    pub fn finish(mut self, tokens: Option<u64>) {
        self.done = true;
        let delta = tokens.map_or(0, |t| t as i64 - self.reserved as i64);
        self.limiter
            .settle(self.shared_slot.as_deref(), &self.scope, delta);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.limiter
                .settle(self.shared_slot.as_deref(), &self.scope, 0);
        }
    }
}

pub struct Limiter {
    local: LocalStore,
    redis: Option<RedisStore>,
    on_redis_error: OnRedisError,
    per_ip: RateLimits,
    trusted: Vec<ipnet::IpNet>,
}

impl Limiter {
    /// Connects lazily to Redis (the first admission does), so a Redis that is down at
    /// start does not stop the proxy from starting.
    pub fn new(settings: &LimitsSettings) -> Result<Self, String> {
        let redis = match &settings.redis_url {
            Some(url) => Some(RedisStore::new(url, settings.redis_timeout)?),
            None => None,
        };
        Ok(Self {
            local: LocalStore::default(),
            redis,
            on_redis_error: settings.on_redis_error,
            per_ip: settings.per_ip,
            trusted: settings.trusted_proxies.clone(),
        })
    }

    pub fn shared(&self) -> bool {
        self.redis.is_some()
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the
    /// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusted.iter().any(|n| n.contains(&peer)) {
            return Some(peer);
        }
        // Walk from the right (the hop our trusted proxy added) past trusted proxies; an
        // entry that does not parse ends the walk at the peer, so a client cannot slip a
        // chosen address past us behind a malformed one.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for entry in entries.into_iter().rev() {
            let Some(ip) = parse_hop(entry) else {
                return Some(peer);
            };
            if !self.trusted.iter().any(|n| n.contains(&ip)) {
                return Some(ip);
            }
        }
        Some(peer)
    }

    /// The scope a request is limited in, if any: its virtual key's limits, or its
    /// address's for the master key and anonymous clients.
    pub fn scope(&self, who: &Principal, ip: Option<IpAddr>) -> Option<Scope> {
        match who {
            Principal::Key(k) if !k.limits.is_empty() => Some(Scope {
                who: Who::Key(k.name.clone()),
                limits: k.limits,
            }),
            Principal::Key(_) => None,
            Principal::Master | Principal::Anonymous => {
                let ip = ip?;
                (!self.per_ip.is_empty()).then_some(Scope {
                    who: Who::Address(ip),
                    limits: self.per_ip,
                })
            }
        }
    }

    /// Admits one request reserving `tokens` (an estimate of its prompt), or refuses it
    /// with 429 `RATE_LIMIT` naming the limit, with `retry-after` and the headers.
    pub async fn admit(
        self: &Arc<Self>,
        scope: Scope,
        tokens: u64,
        request_id: &str,
    ) -> Result<Ticket, (ProxyError, RateStatus)> {
        let mut shared_slot = None;
        let decision = match &self.redis {
            Some(r) => {
                // Parallel slots are named by us, never by the client's request id (a
                // client reusing one id must not share one slot across requests).
                let slot = format!("{request_id}:{}", crate::ids::uuid_v4().simple());
                match r.admit(&scope, tokens, &slot).await {
                    Ok(d) => {
                        shared_slot = Some(slot);
                        d
                    }
                    Err(e) => {
                        r.note_failure(&e);
                        match self.on_redis_error {
                            OnRedisError::Allow => self.local.admit(&scope, tokens),
                            OnRedisError::Deny => {
                                let err = ProxyError::new(
                                    ErrorCode::Unavailable,
                                    "the shared rate-limit store is unreachable; retry shortly",
                                )
                                .with_retry_after(Duration::from_secs(1));
                                return Err((err, RateStatus::default()));
                            }
                        }
                    }
                }
            }
            None => self.local.admit(&scope, tokens),
        };
        match decision {
            Ok(status) => Ok(Ticket {
                limiter: self.clone(),
                scope,
                reserved: tokens,
                shared_slot,
                status,
                done: false,
            }),
            Err(refusal) => {
                let wait = refusal.retry_after;
                let message = if wait.as_secs() > 86_400 {
                    format!(
                        "rate limit: this request needs more {} than {} may ever use",
                        refusal.exceeded.as_str(),
                        scope.label()
                    )
                } else {
                    format!(
                        "rate limit of {} reached for {}; retry in {:.1}s",
                        refusal.exceeded.as_str(),
                        scope.label(),
                        wait.as_secs_f64()
                    )
                };
                let err = ProxyError::new(ErrorCode::RateLimit, message)
                    .with_retry_after(wait.min(Duration::from_secs(3600)));
                Err((err, refusal.status))
            }
        }
    }

    fn settle(&self, shared_slot: Option<&str>, scope: &Scope, token_delta: i64) {
        match (&self.redis, shared_slot) {
            (Some(r), Some(slot)) => r.settle(scope.clone(), token_delta, slot.to_owned()),
            _ => self.local.settle(scope, token_delta),
        }
    }
}

/// One `X-Forwarded-For` hop: an address, `ip:port`, or `[v6]:port`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// A rough prompt size in tokens (about four characters each), reserved before the reply
/// and settled against the real count after it.
pub fn estimate_tokens(req: &crate::types::ChatRequest) -> u64 {
    let chars: usize = req.messages.iter().map(|m| m.text().len()).sum();
    (chars as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &[&str]) -> Limiter {
        Limiter::new(&LimitsSettings {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..LimitsSettings::default()
        })
        .unwrap()
    }

    fn xff(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    /// The reset header reads as the float formatting it replaced did.
    #[test]
    fn reset_header_matches_float_formatting() {
        let mut values = vec![
            0.0, 0.0001, 0.001, 0.0011, 0.01, 0.1, 0.25, 0.5, 1.0, 1.5, 59.5,
        ];
        values.extend((0..2000).map(|i| f64::from(i) * 0.0137));
        values.extend([60.0, 86_399.999, 3600.25]);
        for x in values {
            let old = format!("{}s", (x * 1000.0).ceil() / 1000.0);
            let new = reset_value(x).unwrap();
            assert_eq!(new.to_str().unwrap(), old, "{x}");
        }
        assert!(reset_value(f64::NAN).is_none());
        assert!(reset_value(f64::INFINITY).is_none());
    }

    #[test]
    fn forwarded_for_is_walked_from_the_trusted_end() {
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let l = limiter(&["10.0.0.0/8"]);
        let ip = |h: &str| l.client_ip(Some(peer), &xff(h)).unwrap().to_string();
        assert_eq!(ip("1.1.1.1"), "1.1.1.1");
        assert_eq!(ip("6.6.6.6, 1.1.1.1, 10.0.0.9"), "1.1.1.1");
        assert_eq!(ip("1.1.1.1:4321"), "1.1.1.1");
        assert_eq!(ip("[2001:db8::1]:443"), "2001:db8::1");
        // A malformed hop ends the walk at the peer: nothing left of it is believed.
        assert_eq!(ip("6.6.6.6, garbage"), "10.0.0.2");
        // An untrusted peer's header is ignored.
        let other: SocketAddr = "8.8.8.8:1".parse().unwrap();
        assert_eq!(
            l.client_ip(Some(other), &xff("1.1.1.1"))
                .unwrap()
                .to_string(),
            "8.8.8.8"
        );
    }
}
