//! Binding, serving and shutting down.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{AppState, app};
use crate::config::Settings;
use crate::router::{BuildError, Router};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
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
        && !settings.server.allow_unauthenticated
        && !is_loopback(&settings.server.host)
    {
        return Err(StartError::Unauthenticated {
            host: settings.server.host.clone(),
        });
    }
    Ok(())
}

pub fn build_app(settings: &Settings) -> Result<axum::Router, StartError> {
    let router = Router::new(settings)?;
    Ok(app(Arc::new(AppState::new(settings, router))))
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

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests and
/// streams finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
