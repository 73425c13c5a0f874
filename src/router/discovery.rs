//! Model discovery: providers configured with `discover_models: true` are asked which
//! models they serve (`GET /models`, Ollama's `/api/tags`, …) in the background, at start
//! and then every few minutes. Listings merge what they report with the configured models,
//! and a reported model can be requested by its id. Chat requests never wait for this:
//! they read the last answer, held behind a lock taken only for a lookup or a swap.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::ProviderEntry;
use crate::providers::ChatProvider;

/// How often providers are asked again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// How long one provider may take to answer before this round gives up on it.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the providers reported, by provider, in the providers' order.
#[derive(Debug, Default)]
pub struct Discovered {
    by_provider: RwLock<HashMap<String, Arc<[String]>>>,
}

impl Discovered {
    /// The provider that reported `model` (the first, in `providers` order).
    pub fn provider_of<'a>(
        &self,
        model: &str,
        providers: &'a [Arc<ProviderEntry>],
    ) -> Option<&'a Arc<ProviderEntry>> {
        let map = self.by_provider.read().ok()?;
        providers.iter().find(|p| {
            map.get(&*p.name)
                .is_some_and(|ids| ids.iter().any(|id| id == model))
        })
    }

    /// `(model id, provider name)` for every reported model, providers in order.
    pub fn listing(&self, providers: &[Arc<ProviderEntry>]) -> Vec<(String, String)> {
        let Ok(map) = self.by_provider.read() else {
            return Vec::new();
        };
        providers
            .iter()
            .filter_map(|p| map.get(&*p.name).map(|ids| (p, ids.clone())))
            .flat_map(|(p, ids)| {
                ids.iter()
                    .map(|id| (id.clone(), p.name.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn set(&self, provider: &str, ids: Vec<String>) {
        if let Ok(mut map) = self.by_provider.write() {
            map.insert(provider.to_owned(), ids.into());
        }
    }
}

/// Asks every provider once and records the answers; a provider that fails keeps what it
/// reported last time (a blip must not empty a model picker).
pub async fn refresh(discovered: &Discovered, providers: &[Arc<ProviderEntry>]) {
    for p in providers {
        match tokio::time::timeout(ASK_TIMEOUT, p.provider.models()).await {
            Ok(Ok(ids)) => {
                tracing::debug!(provider = %p.name, models = ids.len(), "discovered models");
                discovered.set(&p.name, ids);
            }
            Ok(Err(e)) => {
                tracing::warn!(provider = %p.name, error_class = e.class(), "model discovery failed: {e}");
            }
            Err(_) => {
                tracing::warn!(provider = %p.name, "model discovery timed out after {ASK_TIMEOUT:?}");
            }
        }
    }
}

/// Starts the background refresher, if any provider asked for discovery and a runtime is
/// running. It holds the map weakly and ends by itself once the router is dropped.
pub fn spawn(discovered: &Arc<Discovered>, providers: Vec<Arc<ProviderEntry>>) {
    if providers.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Discovered> = Arc::downgrade(discovered);
    runtime.spawn(async move {
        loop {
            let Some(d) = weak.upgrade() else { return };
            refresh(&d, &providers).await;
            drop(d);
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    });
}
