//! A recipe: a list of passes with their parameters and an optional budget, written
//! in TOML or JSON.
//!
//! ```toml
//! name = "ptq-int8"
//! [budget]
//! ram = "256KiB"
//! flash = "1MiB"
//!
//! [[pass]]
//! name = "fold-bn"
//!
//! [[pass]]
//! name = "calibrate"
//! method = "minmax"
//! ```

use super::{Budget, Pass, PassError, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// One step of a recipe: a registered pass name and its parameters (the other keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassSpec {
    pub name: String,
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

impl PassSpec {
    pub fn new(name: &str) -> PassSpec {
        PassSpec {
            name: name.to_string(),
            params: Map::new(),
        }
    }

    /// The same step with one more parameter.
    pub fn with(mut self, key: &str, v: impl Into<Value>) -> PassSpec {
        self.params.insert(key.to_string(), v.into());
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    #[serde(rename = "pass", alias = "passes", default)]
    pub passes: Vec<PassSpec>,
}

impl Recipe {
    pub fn from_toml(text: &str) -> Result<Recipe, PassError> {
        toml::from_str(text).map_err(|e| PassError::Recipe(format!("recipe (TOML): {e}")))
    }

    pub fn from_json(text: &str) -> Result<Recipe, PassError> {
        serde_json::from_str(text).map_err(|e| PassError::Recipe(format!("recipe (JSON): {e}")))
    }

    /// Reads a `.toml` or `.json` recipe file.
    pub fn load(path: &Path) -> Result<Recipe, PassError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PassError::Recipe(format!("cannot read recipe {}: {e}", path.display()))
        })?;
        let r = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Recipe::from_toml(&text),
            Some("json") => Recipe::from_json(&text),
            _ => Err(PassError::Recipe(
                "a recipe file must end in .toml or .json".into(),
            )),
        };
        r.map_err(|e| PassError::Recipe(format!("{}: {e}", path.display())))
    }

    /// Every step built by `registry` (all errors before any work).
    pub fn build(&self, registry: &Registry) -> Result<Vec<Box<dyn Pass>>, PassError> {
        if self.passes.is_empty() {
            return Err(PassError::Recipe("the recipe lists no pass".into()));
        }
        self.passes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                registry.build(s).map_err(|e| match e {
                    PassError::Recipe(m) => PassError::Recipe(format!("step {}: {m}", i + 1)),
                    e => e,
                })
            })
            .collect()
    }
}
