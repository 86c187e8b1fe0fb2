use std::collections::HashMap;

use super::{ConfigError, invalid};

/// A snapshot of the environment, taken once. Tests build their own instead of mutating the
/// process environment, and secrets loaded from Secrets Manager overlay it.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// Values in `overlay` win over the environment's.
    pub fn with_overlay(mut self, overlay: HashMap<String, String>) -> Self {
        self.vars.extend(overlay);
        self
    }

    /// A variable that is set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    pub fn require(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    pub fn parse_u64(&self, name: &'static str) -> Result<Option<u64>, ConfigError> {
        self.get(name)
            .map(|value| {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(name, "expected a whole number"))
            })
            .transpose()
    }
}
