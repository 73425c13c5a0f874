//! Deployment health: the report `/health` shows, and optional active checks that ask
//! each provider for its model list (cheap, no tokens spent) on an interval.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;

use super::deployment::DeploymentState;
use super::{Deployment, ProviderEntry};
use crate::providers::ChatProvider;

/// One deployment's state as `/health` reports it.
#[derive(Debug, Serialize)]
pub struct DeploymentReport {
    pub model: String,
    pub deployment: String,
    pub provider: String,
    /// `healthy`, `degraded` (recent failures), `cooling` (taken out) or `probing`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_remaining_s: Option<f64>,
    pub in_flight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl DeploymentReport {
    pub fn of(d: &Deployment) -> Self {
        let (health, left) = d.state.health();
        Self {
            model: d.model.to_string(),
            deployment: d.id.to_string(),
            provider: d.provider.name.to_string(),
            state: health.as_str(),
            cooldown_remaining_s: left.map(|l| (l.as_secs_f64() * 10.0).ceil() / 10.0),
            in_flight: d.state.in_flight(),
            latency_ms: d
                .state
                .latency()
                .map(|l| (l.as_secs_f64() * 10_000.0).round() / 10.0),
        }
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Every `every`, asks each provider for its models: a failure counts against each of its
/// deployments (enough of them take the deployment out), an answer brings them back. The
/// task holds the providers weakly and ends once the router is gone.
pub fn spawn_checks(
    providers: &[Arc<ProviderEntry>],
    deployments: Vec<Deployment>,
    every: Duration,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut by_provider: HashMap<String, Vec<Deployment>> = HashMap::new();
    for d in deployments {
        by_provider
            .entry(d.provider.name.to_string())
            .or_default()
            .push(d);
    }
    // Held weakly (the deployments hold their provider), so the task ends with the router.
    type Check = (Weak<ProviderEntry>, Vec<Weak<DeploymentState>>);
    let checks: Vec<Check> = providers
        .iter()
        .filter_map(|p| {
            let deps = by_provider.remove(&*p.name)?;
            Some((
                Arc::downgrade(p),
                deps.iter().map(|d| Arc::downgrade(&d.state)).collect(),
            ))
        })
        .collect();
    drop(by_provider);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            for (weak, deps) in &checks {
                let Some(p) = weak.upgrade() else { return };
                let ok = matches!(
                    tokio::time::timeout(CHECK_TIMEOUT, p.provider.models()).await,
                    Ok(Ok(_))
                );
                if !ok {
                    tracing::warn!(provider = %p.name, "health check failed");
                }
                drop(p);
                for d in deps.iter().filter_map(Weak::upgrade) {
                    if ok {
                        d.on_health_success();
                    } else {
                        d.on_failure();
                    }
                }
            }
        }
    });
}
