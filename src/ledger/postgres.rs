//! The PostgreSQL ledger store, for replicas that share one ledger. The writer thread runs
//! its own single-threaded runtime for the connection; queries (admin API, budgets) open a
//! short-lived connection on the server's runtime.

use tokio_postgres::NoTls;

use std::sync::Arc;

use super::{BatchWriter, GroupBy, LedgerError, UsageGroup, UsageRecord};
use crate::secret::Secret;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS llm_proxy_schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS llm_proxy_requests (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
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
    stream BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    tokens_in BIGINT,
    tokens_out BIGINT,
    tokens_cached BIGINT,
    tokens_reasoning BIGINT,
    cost_usd DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    chunks BIGINT NOT NULL,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS llm_proxy_requests_at ON llm_proxy_requests (at_ms);
";

const SCHEMA_VERSION: i32 = 1;

/// The key index covers only requests made with a virtual key, as in SQLite (see
/// `sqlite.rs`), under a new name; the full index it replaces is dropped. Each statement
/// runs on its own, `CONCURRENTLY`: on a large ledger that other replicas are writing,
/// neither the build nor the drop blocks their inserts or budget reads. (A build from
/// before it recreates the full index when it starts; no version change, so it still can.)
const KEY_INDEX: [&str; 2] = [
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS llm_proxy_requests_key_named \
     ON llm_proxy_requests (key_name, at_ms) WHERE key_name IS NOT NULL",
    "DROP INDEX CONCURRENTLY IF EXISTS llm_proxy_requests_key_at",
];

/// What went wrong, in PostgreSQL's words: the driver's own message for a server error is
/// only "db error", so the reason comes from the source chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects, driving the connection on the current runtime; errors never show the URL
/// (it holds the password).
/// Without a `connect_timeout` in the URL, an unreachable host fails in 5 s, not the
/// operating system's minutes.
async fn connect(url: &Secret) -> Result<tokio_postgres::Client, LedgerError> {
    let err = |message: String| LedgerError::Open {
        path: "postgres://…".into(),
        message,
    };
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| err(describe(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, conn) = config.connect(NoTls).await.map_err(|e| err(describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("ledger connection closed: {e}");
        }
    });
    Ok(client)
}

/// Replicas starting together migrate one at a time (concurrent `CREATE TABLE IF NOT
/// EXISTS` can collide in PostgreSQL's catalog), under a session advisory lock.
async fn migrate(client: &tokio_postgres::Client) -> Result<(), LedgerError> {
    let err = |e: tokio_postgres::Error| LedgerError::Open {
        path: "postgres://…".into(),
        message: describe(&e),
    };
    client
        .batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await
        .map_err(err)?;
    let migrated = migrate_locked(client).await;
    client
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await
        .map_err(err)?;
    migrated
}

/// An arbitrary constant that names the ledger's migration lock.
const MIGRATION_LOCK: i64 = 0x6c6c_6d70_726f_7879;

async fn migrate_locked(client: &tokio_postgres::Client) -> Result<(), LedgerError> {
    let err = |e: tokio_postgres::Error| LedgerError::Open {
        path: "postgres://…".into(),
        message: describe(&e),
    };
    client.batch_execute(SCHEMA).await.map_err(err)?;
    let row = client
        .query_one("SELECT MAX(version) FROM llm_proxy_schema_version", &[])
        .await
        .map_err(err)?;
    match row.get::<_, Option<i32>>(0) {
        None => {
            client
                .execute(
                    "INSERT INTO llm_proxy_schema_version (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(err)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(LedgerError::Open {
                path: "postgres://…".into(),
                message: format!("written by a newer llm-proxy (schema {v})"),
            });
        }
        Some(_) => {}
    }
    for statement in KEY_INDEX {
        client.batch_execute(statement).await.map_err(err)?;
    }
    Ok(())
}

/// The writer's connection, on a runtime of its own (the writer is a plain thread).
pub(super) struct Writer {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

pub(super) fn writer(url: &Secret) -> Result<Writer, LedgerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LedgerError::Open {
            path: "postgres://…".into(),
            message: e.to_string(),
        })?;
    let client = rt.block_on(async {
        let c = connect(url).await?;
        migrate(&c).await?;
        Ok::<_, LedgerError>(c)
    })?;
    Ok(Writer { rt, client })
}

fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(|n| n as i64)
}

impl BatchWriter for Writer {
    fn write(&mut self, batch: &[Arc<UsageRecord>]) -> Result<(), String> {
        let client = &mut self.client;
        self.rt.block_on(async {
            let tx = client.transaction().await.map_err(|e| describe(&e))?;
            let stmt = tx
                .prepare(
                    "INSERT INTO llm_proxy_requests (at_ms, request_id, trace_id, key_name,
                     endpoint, model, provider, deployment, status, result, error_code, stream,
                     attempts, tokens_in, tokens_out, tokens_cached, tokens_reasoning, cost_usd,
                     latency_ms, ttft_ms, chunks, finish_reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                             $16, $17, $18, $19, $20, $21, $22)",
                )
                .await
                .map_err(|e| describe(&e))?;
            for r in batch {
                tx.execute(
                    &stmt,
                    &[
                        &r.at_ms,
                        &&*r.request_id,
                        &r.trace_id.as_deref(),
                        &r.key.as_deref(),
                        &r.endpoint,
                        &r.model.as_deref(),
                        &r.provider.as_deref(),
                        &r.deployment.as_deref(),
                        &i32::from(r.status),
                        &r.result,
                        &r.error_code,
                        &r.stream,
                        &(r.attempts as i32),
                        &opt_i64(r.tokens_in),
                        &opt_i64(r.tokens_out),
                        &opt_i64(r.tokens_cached),
                        &opt_i64(r.tokens_reasoning),
                        &r.cost_usd,
                        &r.latency_ms,
                        &r.ttft_ms,
                        &(r.chunks as i64),
                        &r.finish_reason,
                    ],
                )
                .await
                .map_err(|e| describe(&e))?;
            }
            tx.commit().await.map_err(|e| describe(&e))
        })
    }
}

pub(super) async fn spend(url: &Secret, key: &str, since_ms: i64) -> Result<f64, LedgerError> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(cost_usd), 0)::DOUBLE PRECISION FROM llm_proxy_requests
             WHERE key_name = $1 AND at_ms >= $2",
            &[&key, &since_ms],
        )
        .await
        .map_err(|e| LedgerError::Query(describe(&e)))?;
    Ok(row.get(0))
}

pub(super) async fn usage(
    url: &Secret,
    group_by: GroupBy,
    since_ms: i64,
) -> Result<Vec<UsageGroup>, LedgerError> {
    let column = group_by.column();
    let client = connect(url).await?;
    let sql = format!(
        "SELECT {column}, COUNT(*)::BIGINT,
                SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)::BIGINT,
                COALESCE(SUM(tokens_in), 0)::BIGINT, COALESCE(SUM(tokens_out), 0)::BIGINT,
                COALESCE(SUM(cost_usd), 0)::DOUBLE PRECISION, AVG(latency_ms)::DOUBLE PRECISION
         FROM llm_proxy_requests WHERE at_ms >= $1 GROUP BY {column} ORDER BY COUNT(*) DESC"
    );
    let rows = client
        .query(&sql, &[&since_ms])
        .await
        .map_err(|e| LedgerError::Query(describe(&e)))?;
    Ok(rows
        .iter()
        .map(|r| UsageGroup {
            group: r.get(0),
            requests: r.get::<_, i64>(1) as u64,
            errors: r.get::<_, i64>(2) as u64,
            tokens_in: r.get::<_, i64>(3) as u64,
            tokens_out: r.get::<_, i64>(4) as u64,
            cost_usd: r.get(5),
            avg_latency_ms: r.get::<_, Option<f64>>(6).unwrap_or(0.0),
        })
        .collect())
}
