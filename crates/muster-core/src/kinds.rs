//! How a backend plugs in: a [`BackendKind`] names the `kind` it serves,
//! validates its own `backend:` options (owned by its own crate) together
//! with whatever else of the spec it depends on, and builds the cluster's
//! [`Backend`] from the whole validated spec. The one table of kinds
//! ([`Kinds`]) is assembled by the `muster` facade crate, the only crate that
//! knows every backend; core knows none of them.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::error::Result;
use crate::registry::Home;
use crate::spec::{ClusterSpec, FieldError, SpecError};

/// One kind of cluster manager.
pub trait BackendKind: Send + Sync {
    /// The `kind` name in specs and on the command line (`slurm`).
    fn kind(&self) -> &'static str;

    /// Checks the spec's `backend:` options (see [`parse_options`]) and the
    /// rest of the spec as far as this backend constrains it (e.g. batch
    /// backends need `worker.memory`). Every problem names its full path.
    /// Called only after the backend-independent checks.
    fn validate(&self, spec: &ClusterSpec) -> Vec<FieldError>;

    /// The backend for one cluster, from its validated spec, keeping local
    /// state under `home`. Connects nothing yet.
    fn build(&self, spec: &ClusterSpec, home: &Home) -> Result<Arc<dyn Backend>>;
}

/// The table of every kind muster knows.
#[derive(Clone, Copy)]
pub struct Kinds(pub &'static [&'static dyn BackendKind]);

impl std::fmt::Debug for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Kinds {
    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn BackendKind> {
        self.0.iter().copied().find(|k| k.kind() == name)
    }

    /// Every kind's name, in table order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|k| k.kind()).collect()
    }

    /// Every problem of the spec at once: the backend-independent checks,
    /// an unknown kind, and the backend's own.
    pub fn validate(&self, spec: &ClusterSpec) -> Result<(), SpecError> {
        let mut errs = spec.problems();
        match self.get(spec.backend.kind()) {
            Some(k) => errs.extend(k.validate(spec)),
            None => errs.push(FieldError {
                field: "backend.kind".into(),
                value: spec.backend.kind().to_string(),
                reason: format!("unknown kind; one of: {}", self.names().join(", ")),
            }),
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(errs))
        }
    }

    /// Validates the spec, then builds its backend.
    pub fn build(&self, spec: &ClusterSpec, home: &Home) -> Result<Arc<dyn Backend>> {
        self.validate(spec)?;
        let kind = self.get(spec.backend.kind()).expect("validated above");
        kind.build(spec, home)
    }
}

/// Reads a backend's typed options from its `backend:` section (the keys
/// besides `kind`): the options, unless a value could not be read, and every
/// problem found, each named by its full path from `prefix`: every key no
/// field takes (`backend.bogus`, `backend.hosts[0].prot`) and the value that
/// could not be read (`backend.hosts[0].port`). `T` must not deny unknown
/// fields (they are collected here instead).
pub fn read_options<T: DeserializeOwned>(
    prefix: &str,
    options: &serde_json::Map<String, serde_json::Value>,
) -> (Option<T>, Vec<FieldError>) {
    let value = serde_json::Value::Object(options.clone());
    let read = crate::spec::keys::read::<T, _>(value, prefix);
    let problems = read.problems(prefix);
    (read.value, problems)
}

/// Reads a backend's typed options like [`read_options`], failing on the
/// first problem (an unknown key is one): for building a backend from a
/// spec that was validated.
pub fn parse_options<T: DeserializeOwned>(
    prefix: &str,
    options: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, FieldError> {
    match read_options(prefix, options) {
        (Some(value), problems) if problems.is_empty() => Ok(value),
        (_, problems) => Err(problems.into_iter().next().unwrap_or_else(|| FieldError {
            field: prefix.to_string(),
            value: String::new(),
            reason: "cannot be read".into(),
        })),
    }
}

/// The problem of a spec that asks a backend without batch jobs to run the
/// scheduler as a job (`scheduler.placement: job`), if it does.
pub fn placement_needs_batch(spec: &ClusterSpec) -> Option<FieldError> {
    (spec.scheduler.placement == crate::spec::Placement::Job).then(|| FieldError {
        field: "scheduler.placement".into(),
        value: "job".into(),
        reason: format!(
            "only batch backends (slurm, pbs) can run the scheduler as a job, not {}",
            spec.backend.kind()
        ),
    })
}

/// The problems of a backend that takes no options.
pub fn no_options(spec: &ClusterSpec) -> Vec<FieldError> {
    spec.backend
        .options
        .keys()
        .map(|k| FieldError {
            field: format!("backend.{k}"),
            value: String::new(),
            reason: format!(
                "unknown field: the {} backend takes no options",
                spec.backend.kind()
            ),
        })
        .collect()
}
