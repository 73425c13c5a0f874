//! The SQLite ledger store: one file in WAL mode (readers never block the writer).

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{BatchWriter, GroupBy, LedgerError, UsageGroup, UsageRecord};

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
CREATE INDEX IF NOT EXISTS requests_key_named ON requests (key_name, at_ms)
    WHERE key_name IS NOT NULL;
DROP INDEX IF EXISTS requests_key_at;
CREATE TABLE IF NOT EXISTS minute_marks (
    minute INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL
);
";

/// Where time-bounded queries start without an index on `at_ms`: for every minute
/// (`at_ms / 60000`) that has requests, the smallest `requests.id` among them. Rows get
/// increasing ids as they are written, so every request at or after a time `t` has an id
/// at least the smallest mark of the minutes from `t`'s on — exactly, whatever order the
/// rows' times are in (a clock stepped back, two processes on one file). A batch adds
/// one or two marks; an index on `at_ms` added an entry per request, about 0.2 µs of
/// the writer's CPU per request under load and a sixth of the file.
///
/// Files from before the marks get them from their `requests_at` index at start, and the
/// index is dropped. The schema version stays 1: an older build still reads and writes the
/// file, recreating its index and writing rows without marks; the next start of this
/// build finds the index again and marks those rows the same way (`OR IGNORE` keeps the
/// marks there are, which are the smaller ids).
const MARKS_FROM_INDEX: &str = "
INSERT OR IGNORE INTO minute_marks (minute, first_id)
    SELECT at_ms / 60000, MIN(id) FROM requests GROUP BY at_ms / 60000;
DROP INDEX IF EXISTS requests_at;
";

/// The schema this build writes; older databases are migrated at start.
///
/// The key index covers only requests made with a virtual key (`requests_key_named`,
/// `WHERE key_name IS NOT NULL`): budgets are its only reader and never ask for a null
/// key, so requests with the master key or none pay for no index entry (about 0.3 µs of
/// the writer's CPU per request). It replaces `requests_key_at`, which indexed every
/// request, without a version change: a build from before it still reads and writes the
/// same table (it recreates its own index when it starts; this one drops it again).
const SCHEMA_VERSION: i64 = 1;

pub(super) fn open(path: &std::path::Path) -> Result<rusqlite::Connection, LedgerError> {
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

pub(super) fn migrate(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
) -> Result<(), LedgerError> {
    let err = |e: rusqlite::Error| LedgerError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    conn.execute_batch(SCHEMA).map_err(err)?;
    // Looked for and replaced under the write lock: two processes starting on one older
    // file together mark it once, and the second finds no index left to drop.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let has_time_index: bool = tx
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = 'requests_at'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if has_time_index {
        tx.execute_batch(MARKS_FROM_INDEX).map_err(err)?;
    }
    tx.commit().map_err(err)?;
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

/// The columns a record fills, in the order [`bind_record`] binds them.
const COLUMNS: &str = "at_ms, request_id, trace_id, key_name, endpoint, model, provider, \
    deployment, status, result, error_code, stream, attempts, tokens_in, tokens_out, \
    tokens_cached, tokens_reasoning, cost_usd, latency_ms, ttft_ms, chunks, finish_reason";
const COLUMN_COUNT: usize = 22;

/// Rows per INSERT statement when a batch has that many. One statement for several rows
/// runs SQLite's per-statement work (cursor setup, halt, reset) once for all of them.
const ROWS_PER_INSERT: usize = 16;

/// `INSERT OR FAIL INTO requests (…) VALUES (?,…),(?,…)…` for `rows` rows.
///
/// `OR FAIL` rather than the default `ABORT`: an aborting statement that writes several
/// rows keeps a statement journal to undo its own rows, page copies on every insert. A
/// failed statement fails the whole batch's transaction anyway (it is rolled back and
/// retried), so undoing the statement alone bought nothing.
fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; COLUMN_COUNT].join(","));
    format!(
        "INSERT OR FAIL INTO requests ({COLUMNS}) VALUES {}",
        vec![one; rows].join(",")
    )
}

fn text(s: &str) -> ValueRef<'_> {
    ValueRef::Text(s.as_bytes())
}

fn opt_text(s: Option<&str>) -> ValueRef<'_> {
    s.map_or(NULL, text)
}

const NULL: ValueRef<'static> = ValueRef::Null;

fn int(i: i64) -> ValueRef<'static> {
    ValueRef::Integer(i)
}

/// Token counts and chunk counts are u64; SQLite integers are i64 (never reached).
fn count(i: u64) -> ValueRef<'static> {
    int(i64::try_from(i).unwrap_or(i64::MAX))
}

fn real(f: f64) -> ValueRef<'static> {
    ValueRef::Real(f)
}

/// A record's values, in [`COLUMNS`] order.
fn record_values(r: &UsageRecord) -> [ValueRef<'_>; COLUMN_COUNT] {
    [
        int(r.at_ms),
        text(&r.request_id),
        opt_text(r.trace_id.as_deref()),
        opt_text(r.key.as_deref()),
        text(r.endpoint),
        opt_text(r.model.as_deref()),
        opt_text(r.provider.as_deref()),
        opt_text(r.deployment.as_deref()),
        int(i64::from(r.status)),
        text(r.result),
        opt_text(r.error_code),
        int(i64::from(r.stream)),
        int(i64::from(r.attempts)),
        r.tokens_in.map_or(NULL, count),
        r.tokens_out.map_or(NULL, count),
        r.tokens_cached.map_or(NULL, count),
        r.tokens_reasoning.map_or(NULL, count),
        r.cost_usd.map_or(NULL, real),
        real(r.latency_ms),
        r.ttft_ms.map_or(NULL, real),
        count(r.chunks),
        opt_text(r.finish_reason),
    ]
}

/// Writes one batch in one transaction: its rows, then its minute marks.
///
/// The transaction is IMMEDIATE: it takes the write lock when it begins, waiting for it as
/// long as the busy timeout allows, before reading the largest id. A deferred one would
/// read first and then ask for the lock, and SQLite fails such an upgrade at once (no busy
/// wait) when another process writes the same file.
fn write_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Arc<UsageRecord>],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let before: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM requests", [], |r| {
        r.get(0)
    })?;
    {
        let mut chunks = batch.chunks_exact(ROWS_PER_INSERT);
        if chunks.len() > 0 {
            let mut stmt = tx.prepare_cached(&insert_sql(ROWS_PER_INSERT))?;
            insert_rows(&mut stmt, &mut chunks)?;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut stmt = tx.prepare_cached(&insert_sql(1))?;
            insert_rows(&mut stmt, rest.chunks(1))?;
        }
    }
    mark_minutes(&tx, batch, before)?;
    tx.commit()
}

/// Executes `stmt` once per chunk of records, binding only the values that differ from
/// the previous chunk's record in the same place.
///
/// Why: SQLite keeps a statement's bindings from one execution to the next, and most
/// columns repeat from request to request (endpoint, model, provider, deployment, status,
/// result, the null ones). Binding a value costs about 180 instructions, a text one a
/// copy besides; comparing it costs a few. The statement comes from the cache with its
/// bindings cleared, and the first chunk has nothing to compare with: it binds every value.
fn insert_rows<'r>(
    stmt: &mut rusqlite::CachedStatement<'_>,
    chunks: impl Iterator<Item = &'r [Arc<UsageRecord>]>,
) -> rusqlite::Result<()> {
    let mut bound: Vec<[ValueRef<'r>; COLUMN_COUNT]> = Vec::with_capacity(ROWS_PER_INSERT);
    for chunk in chunks {
        for (slot, r) in chunk.iter().enumerate() {
            let values = record_values(r);
            let first_param = slot * COLUMN_COUNT + 1;
            let before = bound.get(slot);
            for (column, value) in values.iter().enumerate() {
                if !before.is_some_and(|b| same(b[column], *value)) {
                    stmt.raw_bind_parameter(first_param + column, ToSqlOutput::Borrowed(*value))?;
                }
            }
            match bound.get_mut(slot) {
                Some(b) => *b = values,
                None => bound.push(values),
            }
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

/// Whether two values bind the same: equal integers, texts and nulls, reals bit for bit
/// (so `-0.0` is not taken for `0.0`); blobs are never compared (the ledger has none).
fn same(a: ValueRef<'_>, b: ValueRef<'_>) -> bool {
    match (a, b) {
        (ValueRef::Null, ValueRef::Null) => true,
        (ValueRef::Integer(x), ValueRef::Integer(y)) => x == y,
        (ValueRef::Real(x), ValueRef::Real(y)) => x.to_bits() == y.to_bits(),
        (ValueRef::Text(x), ValueRef::Text(y)) => x == y,
        _ => false,
    }
}

/// Adds the batch's [`minute_marks`](MARKS_FROM_INDEX), each minute marked by its first
/// row (a batch usually spans a fraction of a second, so one or two minutes; a backlog
/// written late may span more, each marked the same way). Inside the batch's IMMEDIATE
/// transaction (the write lock held, nothing else inserting) rows take the ids after the
/// largest one before them, in order, so each row's id is known without reading it back.
/// When they did not (once the largest possible id is taken SQLite picks ids at random),
/// the batch's minutes are marked from id 0: queries from them scan the whole table, and
/// stay exact.
fn mark_minutes(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Arc<UsageRecord>],
    before: i64,
) -> rusqlite::Result<()> {
    let n = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    // Read before any mark is written: a mark's insert sets it too.
    let in_order = tx.last_insert_rowid() == before.saturating_add(n);
    let mut marks = tx.prepare_cached(
        "INSERT INTO minute_marks (minute, first_id) VALUES (?1 / 60000, ?2)
         ON CONFLICT (minute) DO UPDATE SET first_id = MIN(first_id, excluded.first_id)",
    )?;
    let mut marked: Vec<i64> = Vec::with_capacity(2);
    for (i, r) in (0_i64..).zip(batch) {
        let minute = r.at_ms / 60_000;
        if !marked.contains(&minute) {
            marked.push(minute);
            let id = if in_order {
                before.saturating_add(1).saturating_add(i)
            } else {
                0
            };
            marks.execute(rusqlite::params![r.at_ms, id])?;
        }
    }
    Ok(())
}

/// Writes batches into the file.
pub(super) struct Writer(pub rusqlite::Connection);

impl BatchWriter for Writer {
    fn write(&mut self, batch: &[Arc<UsageRecord>]) -> Result<(), String> {
        write_batch(&mut self.0, batch).map_err(|e| e.to_string())
    }
}

/// Opens and migrates the file, for the writer.
pub(super) fn writer(path: &Path) -> Result<Writer, LedgerError> {
    let conn = open(path)?;
    migrate(&conn, path)?;
    Ok(Writer(conn))
}

pub(super) fn spend(path: &Path, key: &str, since_ms: i64) -> Result<f64, LedgerError> {
    let conn = open(path)?;
    conn.query_row(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE key_name = ?1 AND at_ms >= ?2",
        rusqlite::params![key, since_ms],
        |r| r.get(0),
    )
    .map_err(|e| LedgerError::Query(e.to_string()))
}

pub(super) fn usage(
    path: &Path,
    group_by: GroupBy,
    since_ms: i64,
) -> Result<Vec<UsageGroup>, LedgerError> {
    usage_in(&open(path)?, group_by, since_ms)
}

/// The requests from `since_ms` on, grouped: a scan from the first id the
/// [`minute_marks`](MARKS_FROM_INDEX) allow, each row's time checked.
fn usage_in(
    conn: &rusqlite::Connection,
    group_by: GroupBy,
    since_ms: i64,
) -> Result<Vec<UsageGroup>, LedgerError> {
    let sql = usage_sql(group_by.column());
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

fn usage_sql(column: &str) -> String {
    format!(
        "SELECT {column}, COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
                COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0),
                COALESCE(SUM(cost_usd), 0), AVG(latency_ms)
         FROM requests
         WHERE id >= (SELECT COALESCE(MIN(first_id), 9223372036854775807) FROM minute_marks
                      WHERE minute >= ?1 / 60000)
           AND at_ms >= ?1
         GROUP BY {column} ORDER BY COUNT(*) DESC"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version (version) VALUES (1);
        CREATE TABLE requests (
            id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, request_id TEXT NOT NULL,
            trace_id TEXT, key_name TEXT, endpoint TEXT NOT NULL, model TEXT, provider TEXT,
            deployment TEXT, status INTEGER NOT NULL, result TEXT NOT NULL, error_code TEXT,
            stream INTEGER NOT NULL, attempts INTEGER NOT NULL, tokens_in INTEGER,
            tokens_out INTEGER, tokens_cached INTEGER, tokens_reasoning INTEGER, cost_usd REAL,
            latency_ms REAL NOT NULL, ttft_ms REAL, chunks INTEGER NOT NULL, finish_reason TEXT
        );
        CREATE INDEX requests_at ON requests (at_ms);
        CREATE INDEX requests_key_at ON requests (key_name, at_ms);
        INSERT INTO requests (at_ms, request_id, key_name, endpoint, status, result, stream,
                              attempts, cost_usd, latency_ms, chunks)
        VALUES (1000, 'r1', 'team-a', 'chat_completions', 200, 'ok', 0, 1, 0.5, 3.0, 0),
               (2000, 'r2', NULL, 'chat_completions', 200, 'ok', 0, 1, 0.25, 3.0, 0);
    ";

    fn index_sql(conn: &rusqlite::Connection, name: &str) -> Option<String> {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .ok()
    }

    fn key_index_sql(conn: &rusqlite::Connection) -> String {
        index_sql(conn, "requests_key_named").unwrap()
    }

    /// Batches of every size land row for row: multi-row statements and the remainder
    /// alike, every column as recorded, nulls as nulls.
    #[test]
    fn batches_keep_every_row_and_column() {
        let record = |i: u64| UsageRecord {
            at_ms: 1_000 + i as i64,
            request_id: format!("r{i}").into(),
            trace_id: i.is_multiple_of(2).then(|| Arc::from(format!("t{i}"))),
            key: i.is_multiple_of(3).then(|| Arc::from("team-a")),
            endpoint: "chat_completions",
            // Null in every second group of ROWS_PER_INSERT rows: a value after a null
            // and a null after a value in the same place of consecutive statements.
            model: (i / ROWS_PER_INSERT as u64)
                .is_multiple_of(2)
                .then(|| Arc::from("m")),
            provider: (!i.is_multiple_of(5)).then(|| Arc::from("p")),
            deployment: Some("p/m".into()),
            status: if i.is_multiple_of(7) { 502 } else { 200 },
            result: if i.is_multiple_of(7) { "error" } else { "ok" },
            error_code: i.is_multiple_of(7).then_some("PROVIDER_ERROR"),
            stream: i % 2 == 1,
            attempts: 1 + (i % 3) as u32,
            tokens_in: Some(i),
            tokens_out: (!i.is_multiple_of(4)).then_some(i * 2),
            tokens_cached: i.is_multiple_of(6).then_some(1),
            tokens_reasoning: None,
            cost_usd: i.is_multiple_of(2).then(|| i as f64 / 8.0),
            latency_ms: i as f64 + 0.5,
            ttft_ms: (i % 2 == 1).then_some(0.25),
            chunks: i,
            finish_reason: (!i.is_multiple_of(7)).then_some("stop"),
        };
        for size in [
            1,
            ROWS_PER_INSERT - 1,
            ROWS_PER_INSERT,
            2 * ROWS_PER_INSERT + 5,
            5 * ROWS_PER_INSERT + 3,
        ] {
            let mut conn = rusqlite::Connection::open_in_memory().unwrap();
            migrate(&conn, Path::new(":memory:")).unwrap();
            // A batch before the one checked: the second takes its statements from the
            // cache, as the writer's batches after the first do.
            let before: Vec<_> = (0..size as u64).map(|i| Arc::new(record(i + 1))).collect();
            write_batch(&mut conn, &before).unwrap();
            conn.execute("DELETE FROM requests", []).unwrap();
            let batch: Vec<_> = (0..size as u64).map(|i| Arc::new(record(i))).collect();
            write_batch(&mut conn, &batch).unwrap();
            let mut stmt = conn
                .prepare(&format!("SELECT {COLUMNS} FROM requests ORDER BY id"))
                .unwrap();
            let rows: Vec<UsageRecord> = stmt
                .query_map([], |row| {
                    let text = |c: usize| row.get::<_, Option<String>>(c);
                    let arc = |c: usize| text(c).map(|t| t.map(Arc::from));
                    let known = |c: usize, choices: &[&'static str]| {
                        text(c).map(|t| t.and_then(|t| choices.iter().copied().find(|k| *k == t)))
                    };
                    let count =
                        |c: usize| row.get::<_, Option<i64>>(c).map(|v| v.map(|v| v as u64));
                    Ok(UsageRecord {
                        at_ms: row.get(0)?,
                        request_id: row.get::<_, String>(1)?.into(),
                        trace_id: arc(2)?,
                        key: arc(3)?,
                        endpoint: known(4, &["chat_completions"])?.unwrap_or("?"),
                        model: arc(5)?,
                        provider: arc(6)?,
                        deployment: arc(7)?,
                        status: row.get(8)?,
                        result: known(9, &["ok", "error"])?.unwrap_or("?"),
                        error_code: known(10, &["PROVIDER_ERROR"])?,
                        stream: row.get(11)?,
                        attempts: row.get(12)?,
                        tokens_in: count(13)?,
                        tokens_out: count(14)?,
                        tokens_cached: count(15)?,
                        tokens_reasoning: count(16)?,
                        cost_usd: row.get(17)?,
                        latency_ms: row.get(18)?,
                        ttft_ms: row.get(19)?,
                        chunks: row.get::<_, i64>(20)? as u64,
                        finish_reason: known(21, &["stop"])?,
                    })
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), size);
            for (row, r) in rows.iter().zip(&batch) {
                assert_eq!(format!("{row:?}"), format!("{r:?}"));
            }
        }
    }

    /// A file written before the partial key index gets it in place: its rows stay, the
    /// full index goes, the version does not change (older builds still open it), and a
    /// key's spend is read through the new index.
    #[test]
    fn older_files_get_the_partial_key_index() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        assert!(index_sql(&conn, "requests_key_at").is_some());
        migrate(&conn, Path::new(":memory:")).unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap(); // a second start changes nothing
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(key_index_sql(&conn).contains("WHERE key_name IS NOT NULL"));
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(cost_usd), 0) FROM requests
                 WHERE key_name = ?1 AND at_ms >= ?2",
                rusqlite::params!["team-a", 0],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("requests_key_named"), "{plan}");
        assert_eq!(index_sql(&conn, "requests_key_at"), None);
        // The time index became minute marks.
        assert_eq!(index_sql(&conn, "requests_at"), None);
        let marks: Vec<(i64, i64)> = conn
            .prepare("SELECT minute, first_id FROM minute_marks")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, [(0, 1)]);
        assert_eq!(counted_since(&conn, 0), 2);
        assert_eq!(counted_since(&conn, 1_500), 1);
    }

    fn plain(i: u64, at_ms: i64) -> Arc<UsageRecord> {
        Arc::new(UsageRecord {
            at_ms,
            request_id: format!("r{i}").into(),
            trace_id: None,
            key: None,
            endpoint: "chat_completions",
            model: Some("m".into()),
            provider: None,
            deployment: None,
            status: 200,
            result: "ok",
            error_code: None,
            stream: false,
            attempts: 1,
            tokens_in: None,
            tokens_out: None,
            tokens_cached: None,
            tokens_reasoning: None,
            cost_usd: None,
            latency_ms: 1.0,
            ttft_ms: None,
            chunks: 0,
            finish_reason: None,
        })
    }

    fn counted_since(conn: &rusqlite::Connection, since: i64) -> u64 {
        usage_in(conn, GroupBy::Model, since)
            .unwrap()
            .iter()
            .map(|g| g.requests)
            .sum()
    }

    fn scanned_since(conn: &rusqlite::Connection, since: i64) -> u64 {
        conn.query_row(
            "SELECT COUNT(*) FROM requests WHERE at_ms >= ?1",
            [since],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
    }

    /// Usage from any time counts exactly the rows a full scan finds, with times across
    /// minutes, a clock stepped back between batches, and batches spanning two minutes;
    /// and the query starts from an id, not a scan.
    #[test]
    fn usage_starts_at_the_minute_marks_and_misses_nothing() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap();
        let minute = 60_000;
        let batches: [&[i64]; 5] = [
            &[10, 20, minute - 1],
            &[minute, minute + 5, 2 * minute + 1],
            // The clock stepped back a minute and a half.
            &[minute / 2, minute + 1, minute + 2],
            &[3 * minute, 3 * minute + 7],
            &[5 * minute + 1],
        ];
        let mut i = 0;
        for times in batches {
            let batch: Vec<_> = times
                .iter()
                .map(|&t| {
                    i += 1;
                    plain(i, t)
                })
                .collect();
            write_batch(&mut conn, &batch).unwrap();
        }
        for since in [
            0,
            15,
            minute / 2,
            minute - 1,
            minute,
            minute + 2,
            2 * minute,
            2 * minute + 2,
            3 * minute + 7,
            4 * minute,
            5 * minute + 1,
            5 * minute + 2,
            100 * minute,
        ] {
            assert_eq!(
                counted_since(&conn, since),
                scanned_since(&conn, since),
                "since {since}"
            );
        }
        assert_eq!(counted_since(&conn, 0), 12);
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {}", usage_sql("model")),
                [minute],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
    }

    /// Once the largest id is taken, SQLite gives rows random ids: their minutes are
    /// marked from id 0, so they are still counted.
    #[test]
    fn rows_with_random_ids_are_still_counted() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap();
        write_batch(&mut conn, &[plain(1, 1_000)]).unwrap();
        conn.execute(
            "INSERT INTO requests (id, at_ms, request_id, endpoint, status, result, stream,
                                   attempts, latency_ms, chunks)
             VALUES (9223372036854775807, 2000, 'last', 'chat_completions', 200, 'ok', 0, 1,
                     1.0, 0)",
            [],
        )
        .unwrap();
        let batch: Vec<_> = (2..6).map(|i| plain(i, 180_000 + i as i64)).collect();
        write_batch(&mut conn, &batch).unwrap();
        assert_eq!(counted_since(&conn, 180_000), 4);
        assert_eq!(counted_since(&conn, 0), scanned_since(&conn, 0));
    }

    /// A new file starts at the current version with the partial index.
    #[test]
    fn new_files_start_at_the_current_version() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap();
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(key_index_sql(&conn).contains("WHERE key_name IS NOT NULL"));
    }
}
