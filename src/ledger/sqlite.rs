//! The SQLite ledger store: one file in WAL mode (readers never block the writer).

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

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
CREATE INDEX IF NOT EXISTS requests_at ON requests (at_ms);
CREATE INDEX IF NOT EXISTS requests_key_named ON requests (key_name, at_ms)
    WHERE key_name IS NOT NULL;
DROP INDEX IF EXISTS requests_key_at;
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

fn write_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Arc<UsageRecord>],
) -> rusqlite::Result<()> {
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
    let column = group_by.column();
    let conn = open(path)?;
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
