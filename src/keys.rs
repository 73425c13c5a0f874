//! Who a request is: the master key, a virtual key (with its models and limits), or, when
//! no key is configured at all, an anonymous client. Keys are looked up by their SHA-256,
//! so the process keeps no virtual key in clear.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AuthSettings, RateLimits};
use crate::secret::{Secret, sha256};

/// A configured virtual key, as the request path needs it.
#[derive(Debug)]
pub struct VirtualKey {
    /// Shared (not copied) by every request's rate-limit scope.
    pub name: Arc<str>,
    models: Vec<String>,
    pub limits: RateLimits,
    /// USD it may spend per period (no period: ever), from the ledger.
    pub budget: Option<Budget>,
    /// Its prompts and completions are logged (opt-in).
    pub log_content: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_usd: f64,
    pub period: Option<std::time::Duration>,
}

impl VirtualKey {
    /// Whether the key may use `model` (no patterns: every model).
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| glob(p, model))
    }
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The master (internal) key: every model; limited per client address.
    Master,
    Key(Arc<VirtualKey>),
    /// No key is configured: every model; limited per client address.
    Anonymous,
}

impl Principal {
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Principal::Key(k) => Some(&k.name),
            _ => None,
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
}

#[derive(Debug)]
pub struct KeyRing {
    master: Option<Secret>,
    by_hash: HashMap<[u8; 32], Arc<VirtualKey>>,
}

impl KeyRing {
    pub fn new(auth: &AuthSettings) -> Self {
        Self {
            master: auth.master_key.clone(),
            by_hash: auth
                .keys
                .iter()
                .map(|k| {
                    (
                        k.key_sha256,
                        Arc::new(VirtualKey {
                            name: Arc::from(k.name.as_str()),
                            models: k.models.clone(),
                            limits: k.limits,
                            budget: k.max_budget_usd.map(|max_usd| Budget {
                                max_usd,
                                period: k.budget_period,
                            }),
                            log_content: k.log_content,
                        }),
                    )
                })
                .collect(),
        }
    }

    /// Whether any key is configured (else every request is anonymous).
    pub fn enabled(&self) -> bool {
        self.master.is_some() || !self.by_hash.is_empty()
    }

    /// The principal for the keys a request presents (in every accepted header). The master
    /// key is compared in constant time; virtual keys are found by hash.
    pub fn identify<'a>(
        &self,
        presented: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Principal, AuthFailure> {
        if !self.enabled() {
            return Ok(Principal::Anonymous);
        }
        let mut any = false;
        let mut master = false;
        let mut found = None;
        for key in presented {
            any = true;
            // No early exit: every presented key costs the same work.
            master |= self.master.as_ref().is_some_and(|m| m.matches(key));
            // Without virtual keys there is nothing to hash for (and nothing to learn
            // from the time it takes).
            if self.by_hash.is_empty() {
                continue;
            }
            if let Some(k) = self.by_hash.get(&sha256(key)) {
                found = Some(k.clone());
            }
        }
        match (master, found, any) {
            (true, _, _) => Ok(Principal::Master),
            (false, Some(k), _) => Ok(Principal::Key(k)),
            (false, None, true) => Err(AuthFailure::Invalid),
            (false, None, false) => Err(AuthFailure::Missing),
        }
    }
}

/// Glob match with `*` (any run) and `?` (any one character).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VirtualKeySettings;

    #[test]
    fn globs() {
        assert!(glob("mock-*", "mock-small"));
        assert!(glob("*", "anything"));
        assert!(glob("gpt-4?", "gpt-4o"));
        assert!(glob("*-mini", "gpt-4o-mini"));
        assert!(!glob("mock-*", "gpt-4"));
        assert!(!glob("gpt-4?", "gpt-4o-mini"));
        assert!(glob("a*b*c", "aXXbYYc"));
    }

    #[test]
    fn identifies_master_and_virtual_keys() {
        let auth = AuthSettings {
            master_key: Some(Secret::new("master-0123")),
            keys: vec![VirtualKeySettings {
                name: "team-a".into(),
                key_sha256: sha256(b"team-a-key"),
                models: vec!["mock-*".into()],
                limits: RateLimits::default(),
                max_budget_usd: None,
                budget_period: None,
                metadata: Default::default(),
                log_content: false,
            }],
        };
        let ring = KeyRing::new(&auth);
        assert!(matches!(
            ring.identify([&b"master-0123"[..]].into_iter()),
            Ok(Principal::Master)
        ));
        let Ok(Principal::Key(k)) = ring.identify([&b"team-a-key"[..]].into_iter()) else {
            panic!("virtual key expected")
        };
        assert!(k.allows("mock-small") && !k.allows("gpt-4o"));
        assert_eq!(
            ring.identify([&b"nope"[..]].into_iter()).unwrap_err(),
            AuthFailure::Invalid
        );
        assert_eq!(
            ring.identify(std::iter::empty()).unwrap_err(),
            AuthFailure::Missing
        );
    }
}
