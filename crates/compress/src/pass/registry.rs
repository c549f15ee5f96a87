//! Pass names → constructors, with a description of each pass's parameters (their
//! kinds, ranges and defaults): what a recipe may say, and the search space
//! `optimize` reads.

use super::{Pass, PassError, PassSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Builds a pass from its recipe parameters (every one optional: defaults apply).
pub type Build = fn(&Map<String, Value>) -> Result<Box<dyn Pass>, PassError>;

/// The values a parameter takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ParamKind {
    Bool,
    Integer {
        min: i64,
        max: Option<i64>,
    },
    Float {
        min: f64,
        max: f64,
    },
    /// One of these strings.
    Choice {
        values: Vec<String>,
    },
    /// A byte count (an integer or a string with a unit, "256KiB").
    Bytes,
}

/// One parameter of a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    pub doc: &'static str,
    #[serde(flatten)]
    pub kind: ParamKind,
    /// The value when the recipe does not give one (`null`: unset / off).
    pub default: Value,
    /// Whether a search over recipes should vary it (a choice of method, a bit width)
    /// rather than leave it to the user (a file-format detail).
    pub searchable: bool,
}

impl ParamSpec {
    pub fn choice(
        name: &'static str,
        doc: &'static str,
        values: &[&str],
        default: &str,
    ) -> ParamSpec {
        ParamSpec {
            name,
            doc,
            kind: ParamKind::Choice {
                values: values.iter().map(|s| s.to_string()).collect(),
            },
            default: Value::from(default),
            searchable: true,
        }
    }
}

/// A registered pass: its name, what it does, its parameters and its constructor.
#[derive(Clone, Serialize)]
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: Vec<ParamSpec>,
    #[serde(skip)]
    pub build: Build,
}

impl std::fmt::Debug for PassInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassInfo")
            .field("name", &self.name)
            .field("params", &self.params)
            .finish()
    }
}

/// The passes a recipe may name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    passes: BTreeMap<&'static str, PassInfo>,
}

impl Registry {
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Every pass of this crate. A new family of passes (pruning, factorization,
    /// clustering) adds its `register` call here.
    pub fn builtin() -> Registry {
        let mut r = Registry::empty();
        super::quant::register(&mut r);
        r
    }

    /// Adds a pass; a name already taken is refused (two passes must not shadow each
    /// other silently).
    pub fn register(&mut self, info: PassInfo) -> Result<(), PassError> {
        if self.passes.contains_key(info.name) {
            return Err(PassError::Recipe(format!(
                "a pass named '{}' is already registered",
                info.name
            )));
        }
        self.passes.insert(info.name, info);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&PassInfo> {
        self.passes.get(name)
    }

    /// Every registered pass, by name.
    pub fn infos(&self) -> impl Iterator<Item = &PassInfo> {
        self.passes.values()
    }

    /// The pass a recipe step names, built with its parameters.
    pub fn build(&self, spec: &PassSpec) -> Result<Box<dyn Pass>, PassError> {
        let info = self.get(&spec.name).ok_or_else(|| {
            PassError::Recipe(format!(
                "unknown pass '{}' (known: {})",
                spec.name,
                self.passes.keys().copied().collect::<Vec<_>>().join(", ")
            ))
        })?;
        (info.build)(&spec.params)
    }
}

/// A pass's parameters from a recipe step: unknown names and wrong types are recipe
/// errors naming the pass.
pub fn params<T: DeserializeOwned>(pass: &str, m: &Map<String, Value>) -> Result<T, PassError> {
    serde_json::from_value(Value::Object(m.clone()))
        .map_err(|e| PassError::Recipe(format!("pass '{pass}': {e}")))
}
