//! Turns one configured provider into a live [`Provider`]: the kind picks the codec, the
//! settings give URL, key and headers, and every provider shares the one HTTP client.

use super::Provider;
use super::anthropic::AnthropicProvider;
use super::gemini::GeminiProvider;
use super::http::HttpClient;
use super::mock::MockProvider;
use super::openai::{Flavor, OpenAiProvider};
use crate::config::{ProviderKind, ProviderSettings};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("providers.{name}: base_url is required")]
    MissingBaseUrl { name: String },
    #[error("providers.{name}.headers: `{header}` is not a valid header")]
    BadHeader { name: String, header: String },
}

/// Builds the provider for `p`. `mock_models` are the upstream ids configured on it (the
/// mock lists them as its models).
pub fn build(
    p: &ProviderSettings,
    client: &HttpClient,
    mock_models: Vec<String>,
) -> Result<Provider, BuildError> {
    if p.kind == ProviderKind::Mock {
        return Ok(Provider::Mock(MockProvider::new(
            p.mock.clone(),
            mock_models,
        )));
    }
    let base = p
        .base_url
        .as_deref()
        .ok_or_else(|| BuildError::MissingBaseUrl {
            name: p.name.clone(),
        })?;
    let headers = headers(p)?;
    let client = client.clone();
    let key = p.api_key.clone();
    Ok(match p.kind {
        ProviderKind::Anthropic => {
            Provider::Anthropic(AnthropicProvider::new(client, base, key, headers))
        }
        // A Gemini base given as the host root gets the API version Gemini's docs use.
        ProviderKind::Gemini => {
            let base = if has_version_segment(base) {
                base.to_owned()
            } else {
                with_suffix(base, "/v1beta")
            };
            Provider::Gemini(GeminiProvider::new(client, &base, key, headers))
        }
        ProviderKind::Azure => Provider::OpenAi(OpenAiProvider::azure(
            client,
            base,
            p.api_version.clone(),
            key,
            headers,
        )),
        // LiteLLM writes an Ollama api_base as the host root (`http://localhost:11434`);
        // its OpenAI-compatible API lives under /v1.
        ProviderKind::Ollama => Provider::OpenAi(OpenAiProvider::with_flavor(
            client,
            &with_suffix(base, "/v1"),
            Flavor::Ollama,
            key,
            headers,
        )),
        // The remaining kinds are OpenAI-compatible presets: only their default URL differs.
        _ => Provider::OpenAi(OpenAiProvider::new(client, base, key, headers)),
    })
}

/// `base` ending in `suffix` (added when missing).
fn with_suffix(base: &str, suffix: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(suffix) {
        base.to_owned()
    } else {
        format!("{base}{suffix}")
    }
}

/// Whether the URL's path has a segment like `v1`, `v1beta` or `v1alpha`.
fn has_version_segment(base: &str) -> bool {
    base.split('/').skip(3).any(|seg| {
        seg.strip_prefix('v')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Extra upstream headers; their values may be credentials, so they are marked sensitive
/// (hyper then keeps them out of its debug output).
fn headers(p: &ProviderSettings) -> Result<http::HeaderMap, BuildError> {
    let mut headers = http::HeaderMap::new();
    for (h, v) in &p.headers {
        let bad = || BuildError::BadHeader {
            name: p.name.clone(),
            header: h.clone(),
        };
        let name = http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| bad())?;
        let mut value = http::HeaderValue::from_str(v.expose()).map_err(|_| bad())?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_conventions() {
        assert_eq!(
            with_suffix("http://localhost:11434", "/v1"),
            "http://localhost:11434/v1"
        );
        assert_eq!(
            with_suffix("http://localhost:11434/v1/", "/v1"),
            "http://localhost:11434/v1"
        );
        assert!(has_version_segment(
            "https://generativelanguage.googleapis.com/v1beta"
        ));
        assert!(has_version_segment("http://127.0.0.1:9/v1"));
        assert!(!has_version_segment(
            "https://generativelanguage.googleapis.com"
        ));
        assert!(!has_version_segment("http://v1.example.com"));
    }
}
