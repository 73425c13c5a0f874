//! The usage ledger: one record per request (time, request id, key name, model,
//! deployment, tokens, cost, latency, time to first token, status), written to SQLite (one
//! replica) or PostgreSQL (replicas sharing one ledger) by a background thread in batches.
//! The request path only hands a record to a bounded queue: it never waits on the database. A full queue counts and logs what it drops (never
//! silently, never unbounded memory); a graceful shutdown flushes what is queued.
//!
//! The recent records also stay in memory (a bounded ring) for `GET /admin/requests`, the
//! spec's simplified request and stream history.

mod postgres;
pub mod prices;
mod sqlite;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::secret::Secret;

/// One request, as the ledger keeps it.
///
/// Its text is shared, not copied: the names are the configuration's and the request's own
/// (`Arc<str>`), the closed sets are `&'static str`. A record is built on every request and
/// kept twice (the recent-requests ring and the writer's queue), so copies here were eight
/// allocations and frees per request on the request path.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageRecord {
    /// Unix time in milliseconds when the request ended.
    pub at_ms: i64,
    #[schema(value_type = String)]
    pub request_id: Arc<str>,
    #[schema(value_type = Option<String>)]
    pub trace_id: Option<Arc<str>>,
    /// The virtual key's name (never the key); none for the master key.
    #[schema(value_type = Option<String>)]
    pub key: Option<Arc<str>>,
    pub endpoint: &'static str,
    #[schema(value_type = Option<String>)]
    pub model: Option<Arc<str>>,
    #[schema(value_type = Option<String>)]
    pub provider: Option<Arc<str>>,
    #[schema(value_type = Option<String>)]
    pub deployment: Option<Arc<str>>,
    pub status: u16,
    /// `ok`, `error`, `stream_error`, `client_closed`, `shutdown`.
    pub result: &'static str,
    pub error_code: Option<&'static str>,
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
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database {path}: {message}")]
    Open { path: String, message: String },
    #[error("ledger query failed: {0}")]
    Query(String),
}

/// Where the ledger lives.
#[derive(Debug, Clone)]
pub enum Store {
    /// A SQLite file: one replica, nothing else to run.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (it may hold a password, so it is a secret).
    Postgres(Secret),
}

impl Store {
    /// Parses `ledger.database_url`: `sqlite://PATH`, `sqlite:PATH`, `postgres://…` or
    /// `postgresql://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if let Some(p) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if !p.is_empty() {
                return Ok(Store::Sqlite(p.into()));
            }
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Store::Postgres(Secret::new(url)));
        }
        Err("not a ledger URL; write sqlite://PATH or postgres://USER:PASSWORD@HOST/DB".into())
    }
}

/// Writes one batch; an error keeps the batch for another try.
trait BatchWriter {
    fn write(&mut self, batch: &[Arc<UsageRecord>]) -> Result<(), String>;
}

/// How much the writer gathers before writing (or after how long it writes anyway).
const BATCH: usize = 5000;
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Once a record arrives the writer sleeps this long, then takes everything queued: a
/// busy proxy then costs one transaction per interval, not one per wake-up, and senders
/// rarely have to wake the writer. (Measured: at ~18k requests/s on one core, draining
/// at once made the writer cost about 20 µs of CPU per request.) The queue must hold what
/// arrives meanwhile: the default 10,000 covers 100,000 requests/s.
const GATHER: Duration = Duration::from_millis(100);
/// Records kept in memory for `/admin/requests`.
const RECENT: usize = 1000;

pub struct Ledger {
    store: Store,
    tx: Mutex<Option<SyncSender<Arc<UsageRecord>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    recent: Mutex<VecDeque<Arc<UsageRecord>>>,
    last_drop_warning: Mutex<Option<Instant>>,
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
    /// Opens (and migrates) the database and starts the writer. An unreachable database
    /// fails the start: a ledger that silently records nothing is worse than none. The
    /// writer thread opens its own connection (PostgreSQL's runs on a runtime of the
    /// thread's own); the start waits for it once.
    pub fn open(store: Store, queue: usize) -> Result<Arc<Self>, LedgerError> {
        let (tx, rx) = sync_channel(queue.max(1));
        let (ready_tx, ready_rx) = sync_channel::<Result<(), LedgerError>>(1);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let target = store.clone();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let sink: Result<Box<dyn BatchWriter>, LedgerError> = match &target {
                    Store::Sqlite(path) => sqlite::writer(path).map(|w| Box::new(w) as _),
                    Store::Postgres(url) => postgres::writer(url).map(|w| Box::new(w) as _),
                };
                match sink {
                    Ok(sink) => {
                        let _ = ready_tx.send(Ok(()));
                        writer(sink, rx, w);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| LedgerError::Open {
                path: "ledger".into(),
                message: format!("cannot start the writer: {e}"),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(LedgerError::Open {
                    path: "ledger".into(),
                    message: "the writer stopped while opening".into(),
                });
            }
        }
        Ok(Arc::new(Self {
            store,
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
        // Shared by the ring and the writer: one allocation, no copy.
        let r = Arc::new(r);
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
    pub fn recent(&self, limit: usize) -> Vec<Arc<UsageRecord>> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// A key's spend since `since_ms` (for budgets).
    pub async fn spend(&self, key: &str, since_ms: i64) -> Result<f64, LedgerError> {
        match &self.store {
            Store::Sqlite(path) => {
                let (path, key) = (path.clone(), key.to_owned());
                tokio::task::spawn_blocking(move || sqlite::spend(&path, &key, since_ms))
                    .await
                    .map_err(|e| LedgerError::Query(e.to_string()))?
            }
            Store::Postgres(url) => postgres::spend(url, key, since_ms).await,
        }
    }

    /// Requests, tokens, cost and latency grouped by `key`, `model` or `provider` since
    /// `since_ms`.
    pub async fn usage(
        &self,
        group_by: GroupBy,
        since_ms: i64,
    ) -> Result<Vec<UsageGroup>, LedgerError> {
        match &self.store {
            Store::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::usage(&path, group_by, since_ms))
                    .await
                    .map_err(|e| LedgerError::Query(e.to_string()))?
            }
            Store::Postgres(url) => postgres::usage(url, group_by, since_ms).await,
        }
    }
}

/// The writer thread: batches of everything queued `GATHER` after a record arrived (up
/// to `BATCH`); on a failed write it keeps the batch and tries again shortly, so a busy
/// or briefly unreachable database loses nothing queued. Once the ledger is closed it
/// tries a bounded number of times, so a dead database cannot hold the shutdown forever.
fn writer(mut sink: Box<dyn BatchWriter>, rx: Receiver<Arc<UsageRecord>>, written: Arc<AtomicU64>) {
    const RETRIES_AFTER_CLOSE: u32 = 25;
    let mut batch: Vec<Arc<UsageRecord>> = Vec::with_capacity(BATCH);
    let mut closed = false;
    let mut failures_after_close = 0;
    // The last gathering filled a whole batch: more is likely queued, so the next one
    // starts at once instead of sleeping while the queue fills toward its limit.
    let mut behind = false;
    while !closed || !batch.is_empty() {
        if !closed {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(r) => {
                    batch.push(r);
                    if !behind {
                        std::thread::sleep(GATHER);
                    }
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            behind = batch.len() >= BATCH;
        }
        if batch.is_empty() {
            continue;
        }
        match sink.write(&batch) {
            Ok(()) => {
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
            }
            Err(e) => {
                tracing::warn!(records = batch.len(), "ledger write failed, retrying: {e}");
                if closed {
                    failures_after_close += 1;
                    if failures_after_close >= RETRIES_AFTER_CLOSE {
                        tracing::error!(
                            records = batch.len(),
                            "ledger closed with unwritten records"
                        );
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
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

    /// The column it groups on (a fixed name, never user text in the SQL).
    fn column(self) -> &'static str {
        match self {
            GroupBy::Key => "key_name",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
        }
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

/// Unix time in milliseconds, as the ledger keeps it.
pub fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

/// `at` in Unix milliseconds (0 before 1970).
pub fn unix_ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
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

/// How long until the current budget period ends (and a spent budget is fresh again).
pub fn period_left(period: Duration) -> Duration {
    let p = (period.as_millis() as i64).max(1);
    Duration::from_millis((p - now_ms().rem_euclid(p)) as u64)
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
        let spent = match self.ledger.spend(key, start).await {
            Ok(s) => s,
            Err(e) => {
                // Not cached: the next request asks the ledger again.
                tracing::warn!("budget: cannot read the ledger, counting from zero: {e}");
                return 0.0;
            }
        };
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
