//! The usage ledger: one record per request (time, request id, key name, model,
//! deployment, tokens, cost, latency, time to first token, status), written to SQLite by a
//! background thread in batches. The request path only hands a record to a bounded queue:
//! it never waits on the database. A full queue counts and logs what it drops (never
//! silently, never unbounded memory); a graceful shutdown flushes what is queued.
//!
//! The recent records also stay in memory (a bounded ring) for `GET /admin/requests`, the
//! spec's simplified request and stream history.

pub mod prices;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One request, as the ledger keeps it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageRecord {
    /// Unix time in milliseconds when the request ended.
    pub at_ms: i64,
    pub request_id: String,
    pub trace_id: Option<String>,
    /// The virtual key's name (never the key); none for the master key.
    pub key: Option<String>,
    pub endpoint: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub deployment: Option<String>,
    pub status: u16,
    /// `ok`, `error`, `stream_error`, `client_closed`, `shutdown`.
    pub result: String,
    pub error_code: Option<String>,
    pub stream: bool,
    pub attempts: u32,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub tokens_cached: Option<u64>,
    pub tokens_reasoning: Option<u64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// Stream history: chunks forwarded and the finish reason.
    pub chunks: u64,
    pub finish_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database {path}: {message}")]
    Open { path: String, message: String },
    #[error("ledger query failed: {0}")]
    Query(String),
}

/// How much the writer gathers before writing (or after how long it writes anyway).
const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Records kept in memory for `/admin/requests`.
const RECENT: usize = 1000;

pub struct Ledger {
    path: PathBuf,
    tx: Mutex<Option<SyncSender<UsageRecord>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    recent: Mutex<VecDeque<UsageRecord>>,
    last_drop_warning: Mutex<Option<Instant>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    trace_id TEXT,
    key_name TEXT,
    endpoint TEXT NOT NULL,
    model TEXT,
    provider TEXT,
    deployment TEXT,
    status INTEGER NOT NULL,
    result TEXT NOT NULL,
    error_code TEXT,
    stream INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    tokens_cached INTEGER,
    tokens_reasoning INTEGER,
    cost_usd REAL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    chunks INTEGER NOT NULL,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at_ms);
CREATE INDEX IF NOT EXISTS requests_key_at ON requests (key_name, at_ms);
";

/// The schema this build writes; older databases are migrated at start.
const SCHEMA_VERSION: i64 = 1;

fn open(path: &std::path::Path) -> Result<rusqlite::Connection, LedgerError> {
    let err = |e: rusqlite::Error| LedgerError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    // WAL: readers (the admin API) never block the writer; NORMAL sync is durable
    // across a process crash, which is what a ledger of requests needs.
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    Ok(conn)
}

fn migrate(conn: &rusqlite::Connection, path: &std::path::Path) -> Result<(), LedgerError> {
    let err = |e: rusqlite::Error| LedgerError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    conn.execute_batch(SCHEMA).map_err(err)?;
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .map_err(err)?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(err)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(LedgerError::Open {
                path: path.display().to_string(),
                message: format!(
                    "written by a newer llm-proxy (schema {v}; this build knows {SCHEMA_VERSION})"
                ),
            });
        }
        Some(_) => {}
    }
    Ok(())
}

fn write_batch(conn: &mut rusqlite::Connection, batch: &[UsageRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO requests (at_ms, request_id, trace_id, key_name, endpoint, model, provider,
             deployment, status, result, error_code, stream, attempts, tokens_in, tokens_out,
             tokens_cached, tokens_reasoning, cost_usd, latency_ms, ttft_ms, chunks, finish_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20, ?21, ?22)",
        )?;
        for r in batch {
            stmt.execute(rusqlite::params![
                r.at_ms,
                r.request_id,
                r.trace_id,
                r.key,
                r.endpoint,
                r.model,
                r.provider,
                r.deployment,
                r.status,
                r.result,
                r.error_code,
                r.stream,
                r.attempts,
                r.tokens_in.map(|v| v as i64),
                r.tokens_out.map(|v| v as i64),
                r.tokens_cached.map(|v| v as i64),
                r.tokens_reasoning.map(|v| v as i64),
                r.cost_usd,
                r.latency_ms,
                r.ttft_ms,
                r.chunks as i64,
                r.finish_reason,
            ])?;
        }
    }
    tx.commit()
}

/// The writer thread: batches of up to `BATCH` records, or whatever came in
/// `FLUSH_EVERY`; on a failed write it keeps the batch and tries again shortly, so a busy
/// or briefly unwritable database loses nothing queued.
fn writer(mut conn: rusqlite::Connection, rx: Receiver<UsageRecord>, written: Arc<AtomicU64>) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(BATCH);
    let mut closed = false;
    while !closed || !batch.is_empty() {
        if !closed {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(r) => {
                    batch.push(r);
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        if batch.is_empty() {
            continue;
        }
        match write_batch(&mut conn, &batch) {
            Ok(()) => {
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
            }
            Err(e) => {
                tracing::warn!(records = batch.len(), "ledger write failed, retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// One group of `GET /admin/usage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageGroup {
    /// The key name, model or provider (null: none, e.g. the master key).
    pub group: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub avg_latency_ms: f64,
}

impl Ledger {
    /// Opens (and migrates) the database and starts the writer.
    pub fn open(path: PathBuf, queue: usize) -> Result<Arc<Self>, LedgerError> {
        let conn = open(&path)?;
        migrate(&conn, &path)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer(conn, rx, w))
            .map_err(|e| LedgerError::Open {
                path: path.display().to_string(),
                message: format!("cannot start the writer: {e}"),
            })?;
        Ok(Arc::new(Self {
            path,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            dropped: AtomicU64::new(0),
            written,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            last_drop_warning: Mutex::new(None),
        }))
    }

    /// Queues a record (never blocks). A full queue drops it, counts it and says so.
    pub fn record(&self, r: UsageRecord) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(r.clone());
        }
        let sent = match self.tx.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(tx) => match tx.try_send(r) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
                },
                None => false,
            },
            Err(_) => false,
        };
        if !sent {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if let Ok(mut last) = self.last_drop_warning.lock() {
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        dropped_total = n,
                        "ledger queue full: usage records dropped"
                    );
                }
            }
        }
    }

    /// Records dropped because the queue was full (or the ledger closed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops taking records and waits until every queued one is written.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// The most recent records, newest first.
    pub fn recent(&self, limit: usize) -> Vec<UsageRecord> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// A key's spend since `since_ms` (for budgets).
    pub fn spend(&self, key: &str, since_ms: i64) -> Result<f64, LedgerError> {
        let conn = open(&self.path)?;
        conn.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE key_name = ?1 AND at_ms >= ?2",
            rusqlite::params![key, since_ms],
            |r| r.get(0),
        )
        .map_err(|e| LedgerError::Query(e.to_string()))
    }

    /// Requests, tokens, cost and latency grouped by `key`, `model` or `provider` since
    /// `since_ms`.
    pub fn usage(&self, group_by: GroupBy, since_ms: i64) -> Result<Vec<UsageGroup>, LedgerError> {
        let column = match group_by {
            GroupBy::Key => "key_name",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
        };
        let conn = open(&self.path)?;
        let sql = format!(
            "SELECT {column}, COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
                    COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0),
                    COALESCE(SUM(cost_usd), 0), AVG(latency_ms)
             FROM requests WHERE at_ms >= ?1 GROUP BY {column} ORDER BY COUNT(*) DESC"
        );
        let q = |e: rusqlite::Error| LedgerError::Query(e.to_string());
        let mut stmt = conn.prepare(&sql).map_err(q)?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok(UsageGroup {
                    group: r.get(0)?,
                    requests: r.get::<_, i64>(1)? as u64,
                    errors: r.get::<_, i64>(2)? as u64,
                    tokens_in: r.get::<_, i64>(3)? as u64,
                    tokens_out: r.get::<_, i64>(4)? as u64,
                    cost_usd: r.get(5)?,
                    avg_latency_ms: r.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                })
            })
            .map_err(q)?;
        rows.collect::<Result<_, _>>().map_err(q)
    }
}

/// What `/admin/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    Model,
    Provider,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            _ => return None,
        })
    }
}

/// Where request logs send their usage: the ledger, with the prices to cost it, and each
/// budgeted key's spend in its current period (loaded from the ledger once, then kept up
/// to date as records pass, so a budget check does not query the database).
pub struct Sink {
    pub ledger: Arc<Ledger>,
    pub prices: PriceBook,
    spend: Mutex<HashMap<String, (i64, f64)>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The start of the budget period containing `now` (periods are aligned to the Unix
/// epoch; no period: since the beginning).
fn window_start(now: i64, period: Option<Duration>) -> i64 {
    match period.map(|p| p.as_millis() as i64).filter(|p| *p > 0) {
        Some(p) => now - now.rem_euclid(p),
        None => 0,
    }
}

impl Sink {
    pub fn new(ledger: Arc<Ledger>, prices: PriceBook) -> Self {
        Self {
            ledger,
            prices,
            spend: Mutex::new(HashMap::new()),
        }
    }

    /// What `key` has spent in its current budget period.
    pub async fn spent(&self, key: &str, period: Option<Duration>) -> f64 {
        let start = window_start(now_ms(), period);
        if let Some((s, spent)) = self.spend.lock().ok().and_then(|m| m.get(key).copied()) {
            if s == start {
                return spent;
            }
        }
        let ledger = self.ledger.clone();
        let k = key.to_owned();
        let spent = tokio::task::spawn_blocking(move || ledger.spend(&k, start))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0.0);
        if let Ok(mut m) = self.spend.lock() {
            m.insert(key.to_owned(), (start, spent));
        }
        spent
    }

    /// Counts a request's cost towards its key's current period (once the key's spend
    /// was loaded; otherwise the ledger has it when it is).
    pub fn add_spend(&self, key: &str, cost: f64, period: Option<Duration>) {
        let start = window_start(now_ms(), period);
        if let Ok(mut m) = self.spend.lock() {
            match m.get_mut(key) {
                Some((s, spent)) if *s == start => *spent += cost,
                Some(entry) => *entry = (start, cost),
                None => {}
            }
        }
    }
}

/// Prices per model: configured overrides, then the built-in table.
#[derive(Debug, Default)]
pub struct PriceBook {
    overrides: HashMap<String, prices::Price>,
}

impl PriceBook {
    pub fn new(overrides: HashMap<String, prices::Price>) -> Self {
        Self { overrides }
    }

    /// The price for a deployment: its configured one (by model name or upstream id),
    /// else the built-in price of its upstream id.
    pub fn price(&self, model: &str, upstream: &str) -> Option<prices::Price> {
        self.overrides
            .get(model)
            .or_else(|| self.overrides.get(upstream))
            .copied()
            .or_else(|| prices::builtin(upstream))
    }
}
