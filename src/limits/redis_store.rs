//! The shared limit store: the same GCRA as in-process, run in Redis by one Lua script per
//! admission (one round trip, atomic, on Redis's own clock, so replicas' clocks do not
//! matter). Parallel slots are a sorted set of request ids, so a replica that dies
//! mid-request cannot hold a slot for longer than `STALE_S`. Settling (token usage, slot
//! release) runs off the request path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::gcra::{PERIOD_S, Quota};
use super::{Decision, Exceeded, RateStatus, Refusal, Scope};
use crate::secret::Secret;

/// A parallel slot older than this is someone's crash, not a request (streams longer than
/// an hour stop counting against `max_parallel_requests` then).
const STALE_S: u64 = 3600;

const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = 60
local rpm, tpm, n, maxp = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local req_tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok_tat = tonumber(redis.call('GET', KEYS[2]) or '0')
local function debts() return string.format('%.6f', math.max(req_tat - now, 0)), string.format('%.6f', math.max(tok_tat - now, 0)) end
if maxp > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
  if redis.call('ZCARD', KEYS[3]) >= maxp then
    local a, b = debts()
    return {0, 'parallel', '1', a, b}
  end
end
local new_req, new_tok = req_tat, tok_tat
if rpm > 0 then
  new_req = math.max(req_tat, now) + period / rpm
  if new_req - now > period + 1e-9 then
    local a, b = debts()
    return {0, 'requests', string.format('%.6f', new_req - now - period), a, b}
  end
end
if tpm > 0 then
  if n > tpm then
    local a, b = debts()
    return {0, 'tokens', 'inf', a, b}
  end
  new_tok = math.max(tok_tat, now) + n * period / tpm
  if new_tok - now > period + 1e-9 then
    local a, b = debts()
    return {0, 'tokens', string.format('%.6f', new_tok - now - period), a, b}
  end
end
if rpm > 0 then
  redis.call('SET', KEYS[1], string.format('%.6f', new_req), 'PX', math.ceil((new_req - now + period) * 1000))
end
if tpm > 0 then
  redis.call('SET', KEYS[2], string.format('%.6f', new_tok), 'PX', math.ceil((new_tok - now + period) * 1000))
end
if maxp > 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
end
return {1, 'ok', '0', string.format('%.6f', math.max(new_req - now, 0)), string.format('%.6f', math.max(new_tok - now, 0))}
"#;

const SETTLE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREM', KEYS[2], ARGV[3])
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and delta ~= 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  local new = math.max(math.max(tat, now) + delta * 60 / tpm, now)
  redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil((new - now + 60) * 1000))
end
return 1
"#;

/// Why a round trip to Redis failed (the message never holds the URL's password).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisError(String);

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    admit: redis::Script,
    settle: redis::Script,
    degraded: AtomicBool,
    last_warning: Mutex<Option<Instant>>,
}

impl RedisStore {
    pub fn new(url: &Secret, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url.expose()).map_err(|e| {
            format!(
                "limits.redis_url is not a usable Redis URL ({:?})",
                e.kind()
            )
        })?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            timeout,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            degraded: AtomicBool::new(false),
            last_warning: Mutex::new(None),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                ConnectionManager::new(self.client.clone())
                    .await
                    .map_err(|e| RedisError(format!("cannot connect to Redis ({:?})", e.kind())))
            })
            .await?;
        Ok(c.clone())
    }

    fn keys(scope: &Scope) -> [String; 3] {
        // One hash tag per scope: its keys share a cluster slot, as a script needs.
        let tag = format!("llm-proxy:{{{}}}", scope.id());
        [
            format!("{tag}:req"),
            format!("{tag}:tok"),
            format!("{tag}:par"),
        ]
    }

    pub async fn admit(
        &self,
        scope: &Scope,
        tokens: u64,
        request_id: &str,
    ) -> Result<Decision, RedisError> {
        let l = scope.limits;
        let [req, tok, par] = Self::keys(scope);
        let call = async {
            let mut conn = self.conn().await?;
            self.admit
                .key(req)
                .key(tok)
                .key(par)
                .arg(l.rpm.unwrap_or(0))
                .arg(l.tpm.unwrap_or(0))
                .arg(tokens)
                .arg(l.max_parallel_requests.unwrap_or(0))
                .arg(request_id)
                .arg(STALE_S)
                .invoke_async::<(i64, String, String, String, String)>(&mut conn)
                .await
                .map_err(|e| RedisError(format!("Redis admission failed ({:?})", e.kind())))
        };
        let (ok, which, wait, req_debt, tok_debt) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| RedisError(format!("Redis did not answer within {:?}", self.timeout)))??;
        self.note_success();
        let f = |s: &str| s.parse::<f64>().unwrap_or(0.0);
        let quota = |limit: u64, debt: f64| {
            let t = PERIOD_S / limit.max(1) as f64;
            Quota {
                limit,
                remaining: ((PERIOD_S - debt) / t).floor().clamp(0.0, limit as f64) as u64,
                reset_s: debt.max(0.0),
            }
        };
        let status = RateStatus {
            requests: l.rpm.map(|r| quota(r, f(&req_debt))),
            tokens: l.tpm.map(|t| quota(t, f(&tok_debt))),
        };
        if ok == 1 {
            return Ok(Ok(status));
        }
        let exceeded = match which.as_str() {
            "parallel" => Exceeded::Parallel,
            "tokens" => Exceeded::Tokens,
            _ => Exceeded::Requests,
        };
        let wait = match wait.parse::<f64>() {
            Ok(w) if w.is_finite() => Duration::from_secs_f64(w.clamp(0.001, 3600.0)),
            _ => Duration::from_secs(u64::from(u32::MAX)),
        };
        Ok(Err(Refusal {
            exceeded,
            retry_after: wait,
            status,
        }))
    }

    /// Settles in the background: the reply is already on its way.
    pub fn settle(&self, scope: Scope, token_delta: i64, request_id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let conn = self.conn.get().cloned();
        let script = self.settle.clone();
        let timeout = self.timeout;
        let [_, tok, par] = Self::keys(&scope);
        let tpm = scope.limits.tpm.unwrap_or(0);
        runtime.spawn(async move {
            let Some(mut conn) = conn else { return };
            let mut invocation = script.key(tok);
            invocation
                .key(par)
                .arg(tpm)
                .arg(token_delta)
                .arg(request_id);
            let call = invocation.invoke_async::<i64>(&mut conn);
            if !matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_))) {
                tracing::debug!("could not settle a request's limits in Redis");
            }
        });
    }

    /// Logs the first failure (and then at most every 30 s) that limits are now local.
    pub fn note_failure(&self, e: &RedisError) {
        self.degraded.store(true, Ordering::Relaxed);
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            *last = Some(Instant::now());
            tracing::warn!(
                "rate limits: {e}; limits are this replica's own until Redis answers again"
            );
        }
    }

    fn note_success(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("rate limits: Redis answers again; limits are shared");
        }
    }
}
