//! Structured logs: one line per request, JSON when stdout is not a terminal.

mod log_sink;
mod metrics;
pub mod otlp;
mod request_line;
mod request_log;
mod trace;

pub use log_sink::FlushGuard;
pub use metrics::{Metrics, SeriesCache};
pub use request_log::{ContentLog, RequestLog, StreamStats};
pub use trace::TraceContext;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Installs the global subscriber. `level` is a level (`info`) or a full tracing filter
/// (`llm_proxy=debug,info`); an unusable one falls back to `info` and says so. Lines go to
/// stdout through a batching writer thread; keep the returned guard until exit so the last
/// lines are written (`None`: the thread could not start and lines go to stdout directly).
pub fn init(level: &str) -> Option<FlushGuard> {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, false),
        Err(_) => (EnvFilter::new("info"), true),
    };
    let (sink, guard) = match log_sink::spawn(std::io::stdout()) {
        Ok((sink, guard)) => (Some(sink), Some(guard)),
        Err(_) => (None, None),
    };
    let writer = match &sink {
        Some(sink) => BoxMakeWriter::new(sink.clone()),
        None => BoxMakeWriter::new(std::io::stdout),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = if std::io::stdout().is_terminal() {
        builder.compact().try_init()
    } else {
        let result = builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init();
        if result.is_ok() {
            log_sink::set_json_out(match sink {
                Some(sink) => log_sink::JsonOut::Queue(sink),
                None => log_sink::JsonOut::Stdout,
            });
        }
        result
    };
    if result.is_ok() && bad {
        tracing::warn!("log level `{level}` is not a valid filter; using info");
    }
    guard
}
