//! Binding, serving and shutting down.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::config::Settings;
use crate::ledger::{Ledger, PriceBook, Sink};
use crate::limits::Limiter;
use crate::router::{BuildError, Router};
use crate::shutdown::{self, Trigger};
use crate::telemetry::Metrics;
use crate::telemetry::otlp::Exporter;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{0}")]
    Limits(String),
    #[error("{0}")]
    Ledger(String),
    #[error("trace export: {0}")]
    Tracing(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve on {host} without an API key: set auth.master_key \
         (or LLM_PROXY__INTERNAL_API_KEY), listen on 127.0.0.1, or pass --allow-unauthenticated"
    )]
    Unauthenticated { host: String },
}

/// The async runtime, sized to the CPUs this process may use (affinity and cgroup quota
/// included). On one CPU it is tokio's single-threaded scheduler: with nothing to balance,
/// the work-stealing scheduler's cross-thread bookkeeping only costs (about 9% of the CPU
/// per request in bench/RESULTS.md's A/B runs). Blocking work never runs on it either way:
/// the ledger and the log writer have their own threads, ledger queries use the blocking
/// pool.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus)
            .enable_all()
            .build()
    }
}

/// Whether `host` only accepts connections from this machine.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An open door to every provider must not be opened by accident.
pub fn check_exposure(settings: &Settings) -> Result<(), StartError> {
    if settings.auth.master_key.is_none()
        && settings.auth.keys.is_empty()
        && !settings.server.allow_unauthenticated
        && !is_loopback(&settings.server.host)
    {
        return Err(StartError::Unauthenticated {
            host: settings.server.host.clone(),
        });
    }
    Ok(())
}

/// The HTTP application and the trigger that ends what is still in flight at shutdown.
pub struct App {
    /// The API port's service: the chat endpoints' fast lane before the router.
    pub api: crate::api::Api,
    pub closing: Trigger,
    pub grace: Duration,
    /// Flushed once the server has stopped.
    pub ledger: Option<Arc<Ledger>>,
    pub tracer: Option<Arc<Exporter>>,
    /// `/metrics` on its own port: the address and the app to serve there.
    pub metrics: Option<(String, axum::Router)>,
}

pub fn build_app(settings: &Settings) -> Result<App, StartError> {
    let metrics = Arc::new(Metrics::new());
    let router = Router::new(settings)?.with_metrics(metrics.clone());
    let limiter = Arc::new(Limiter::new(&settings.limits).map_err(StartError::Limits)?);
    let (trigger, closing) = shutdown::channel();
    let ledger = if settings.ledger.enabled {
        Some(
            Ledger::open(settings.ledger.store.clone(), settings.ledger.queue_size)
                .map_err(|e| StartError::Ledger(e.to_string()))?,
        )
    } else {
        None
    };
    let sink = ledger.as_ref().map(|l| {
        let prices = settings
            .models
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.price?)))
            .collect();
        Arc::new(Sink::new(l.clone(), PriceBook::new(prices)))
    });
    let tracer = match &settings.tracing {
        Some(t) => Some(Exporter::start(t.clone()).map_err(StartError::Tracing)?),
        None => None,
    };
    let mut state = AppState::new(settings, router, limiter, metrics, sink, closing);
    state.tracer = tracer.clone();
    let state = Arc::new(state);
    let metrics = settings.server.metrics_port.map(|port| {
        let host = settings.server.host.trim_matches(|c| c == '[' || c == ']');
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        (addr, crate::api::metrics_app(state.clone()))
    });
    Ok(App {
        metrics,
        api: crate::api::Api::new(state),
        closing: trigger,
        grace: settings.server.shutdown_grace,
        ledger,
        tracer,
    })
}

pub async fn bind(settings: &Settings) -> Result<TcpListener, StartError> {
    let host = settings.server.host.trim_matches(|c| c == '[' || c == ']');
    let addr = format!("{}:{}", host, settings.server.port);
    let addr_for_err = if host.contains(':') {
        format!("[{host}]:{}", settings.server.port)
    } else {
        addr.clone()
    };
    let target: Result<SocketAddr, _> = addr_for_err.parse();
    let listener = match target {
        Ok(sa) => TcpListener::bind(sa).await,
        Err(_) => TcpListener::bind(addr.as_str()).await,
    };
    listener.map_err(|source| StartError::Bind {
        addr: addr_for_err,
        source,
    })
}

/// Serves until `shutdown` resolves; then stops accepting and lets in-flight requests and
/// streams finish for up to the grace period, after which the ones still open end with an
/// error (streams) or 503 (replies), and this returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let App {
        api,
        closing,
        grace,
        ledger,
        tracer,
        metrics,
    } = app;
    // The metrics port lives as long as the API port; it has no requests to drain.
    let metrics_task = match metrics {
        Some((addr, router)) => {
            let l = TcpListener::bind(addr.as_str()).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}"))
            })?;
            tracing::info!("metrics on http://{addr}/metrics");
            Some(tokio::spawn(async move {
                let _ = axum::serve(l, router).await;
            }))
        }
        None => None,
    };
    crate::connections::serve(listener, api, async move {
        shutdown.await;
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: no new connections; requests in flight may finish"
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            tracing::warn!("grace period over: ending requests still in flight");
            closing.fire();
        });
    })
    .await;
    // Every request has ended (and written its record): flush the ledger.
    if let Some(l) = ledger {
        let _ = tokio::task::spawn_blocking(move || l.close()).await;
    }
    if let Some(t) = tracer {
        t.close().await;
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(())
}

/// A server running in the background (tests, embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Begins a graceful shutdown; await `handle` to wait for it.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn spawn(settings: &Settings) -> Result<RunningServer, StartError> {
    check_exposure(settings)?;
    let app = build_app(settings)?;
    let listener = bind(settings).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.server.host.clone(),
        source,
    })?;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(serve(listener, app, async {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        handle,
    })
}
