//! The cluster spec: what the user asked for, read from YAML or flags, and its
//! validation. Every check runs before anything is launched, and every problem
//! names the field and the offending value. Nothing here knows how a backend
//! launches anything.
//!
//! No struct here denies unknown fields: [`keys`] reads the YAML noting every
//! key no field takes, and validation reports them all with the other
//! problems, each by its full path.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::{Memory, Seconds};

pub mod keys;
mod validate;
pub use validate::check_name;
#[cfg(test)]
mod tests;

/// Everything needed to bring one Dask cluster up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster's name: a DNS-1123 label (lower-case letters, digits and `-`).
    #[serde(default)]
    pub name: String,
    /// Which cluster manager runs the processes, and its options.
    #[serde(default)]
    pub backend: BackendSpec,
    /// The Dask scheduler's options.
    #[serde(default)]
    pub scheduler: SchedulerSpec,
    /// Options of every worker job.
    #[serde(default)]
    pub worker: WorkerSpec,
    /// How many worker jobs to start. Each job runs `worker.processes` Dask workers.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Adaptive-scaling bounds; absent means a fixed size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapt: Option<AdaptSpec>,
    /// The full path of every key the YAML had that no field takes
    /// (`worker.coress`); each is a problem [`ClusterSpec::problems`]
    /// reports. Never stored.
    #[serde(skip)]
    pub unknown_fields: Vec<String>,
}

fn default_workers() -> u32 {
    1
}

/// The cluster manager section of a spec: its `kind` and that backend's
/// own options (every other key), which core does not read. The backend's
/// crate parses and validates them (see [`crate::kinds`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Which cluster manager: `local`, `ssh`, `slurm`, `pbs`, ...
    pub kind: String,
    /// The backend's options, as written.
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl Default for BackendSpec {
    fn default() -> Self {
        BackendSpec::of_kind("local")
    }
}

impl BackendSpec {
    /// A section of this kind with no options.
    pub fn of_kind(kind: &str) -> Self {
        BackendSpec {
            kind: kind.to_string(),
            options: serde_json::Map::new(),
        }
    }

    /// The `kind` string of this backend, as written in specs and shown in tables.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

impl Serialize for BackendSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.options.len() + 1))?;
        m.serialize_entry("kind", &self.kind)?;
        for (k, v) in &self.options {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for BackendSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut options = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let kind = match options.remove("kind") {
            Some(serde_json::Value::String(k)) => k,
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "kind: expected a backend name, found {other}"
                )));
            }
            None => return Err(serde::de::Error::missing_field("kind")),
        };
        Ok(BackendSpec { kind, options })
    }
}

/// Options of the Dask scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulerSpec {
    /// Address to listen on; the backend's default when absent (127.0.0.1 locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port of the scheduler's comm; 0 picks a free one.
    #[serde(default)]
    pub port: u16,
    /// Port of the dashboard and HTTP API; 0 picks a free one.
    #[serde(default)]
    pub dashboard_port: u16,
    /// Python to run the scheduler with; the worker's python when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Extra environment variables for the scheduler.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Extra arguments appended to `dask scheduler`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Where the scheduler runs: on the submitting host (default) or, on batch
    /// backends, as a batch job of its own.
    #[serde(default, skip_serializing_if = "Placement::is_host")]
    pub placement: Placement,
    /// How clients and workers talk to the scheduler: TLS with the
    /// cluster's own certificates (default), or plain TCP when asked.
    #[serde(default, skip_serializing_if = "Security::is_tls")]
    pub security: Security,
}

/// The scheduler's transport security.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Mutual TLS with certificates made for this cluster: only holders of
    /// its files can connect.
    #[default]
    Tls,
    /// Plain TCP, no authentication: anyone who can reach the port can run
    /// code as the cluster's owner.
    None,
}

impl Security {
    /// True for the default.
    pub fn is_tls(&self) -> bool {
        *self == Security::Tls
    }
}

/// The warning `scheduler.security: none` earns.
pub const INSECURE_WARNING: &str = "scheduler.security is none: the scheduler speaks plain TCP without authentication, so anyone who can reach its port can run code as you";

/// Where a batch cluster's Dask scheduler runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// A detached process on the host running muster.
    #[default]
    Host,
    /// A batch job of its own; its address comes back through a scheduler
    /// file on a shared directory, and it outlives the user's session.
    Job,
}

impl Placement {
    /// True for the default placement.
    pub fn is_host(&self) -> bool {
        *self == Placement::Host
    }
}

/// Options of each worker job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Threads per job, split evenly over its processes.
    #[serde(default = "default_cores")]
    pub cores: u32,
    /// Memory per job, split evenly over its processes; Dask's `auto` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Dask worker processes per job.
    #[serde(default = "default_processes")]
    pub processes: u32,
    /// Python interpreter (a path or a command on `PATH`) that has `distributed`.
    #[serde(default = "default_python")]
    pub python: String,
    /// Extra environment variables for every worker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Extra arguments appended to `dask worker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// How long a worker waits for a scheduler that is gone before it exits.
    #[serde(default = "default_death_timeout")]
    pub death_timeout: Seconds,
    /// Run each worker under a nanny process that restarts it if it dies.
    #[serde(default = "default_true")]
    pub nanny: bool,
    /// Start each job through muster's launcher, which imports `distributed`
    /// once and forks the nanny's worker processes from that warm interpreter
    /// (Dask's forkserver, served by a fork of the launcher). `false` runs
    /// `python -m distributed.cli.dask_worker` as is: the nanny spawns each
    /// worker as a fresh interpreter that imports `distributed` again.
    #[serde(default = "default_true")]
    pub warm_start: bool,
    /// Network interface the workers listen on (e.g. `ib0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Directory for worker spill files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_directory: Option<String>,
}

fn default_cores() -> u32 {
    1
}
fn default_processes() -> u32 {
    1
}
fn default_python() -> String {
    "python3".to_string()
}
fn default_death_timeout() -> Seconds {
    Seconds::from_secs(60)
}
fn default_true() -> bool {
    true
}

impl Default for WorkerSpec {
    fn default() -> Self {
        WorkerSpec {
            cores: default_cores(),
            memory: None,
            processes: default_processes(),
            python: default_python(),
            env: BTreeMap::new(),
            extra_args: Vec::new(),
            death_timeout: default_death_timeout(),
            nanny: true,
            warm_start: true,
            interface: None,
            local_directory: None,
        }
    }
}

impl WorkerSpec {
    /// Threads of each Dask worker process.
    pub fn threads_per_process(&self) -> u32 {
        (self.cores / self.processes.max(1)).max(1)
    }

    /// Memory limit of each Dask worker process.
    pub fn memory_per_process(&self) -> Option<Memory> {
        self.memory
            .map(|m| Memory(m.bytes() / u64::from(self.processes.max(1))))
    }
}

/// Adaptive scaling: bounds in worker jobs and the policy's timings and
/// limits. Every field but `maximum` has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptSpec {
    /// Fewest worker jobs to keep.
    #[serde(default)]
    pub minimum: u32,
    /// Most worker jobs to run.
    pub maximum: u32,
    /// How often the agent looks at the scheduler.
    #[serde(default = "default_adapt_interval")]
    pub interval: Seconds,
    /// How long the scheduler's target must stay below the current size
    /// before workers are removed.
    #[serde(default = "default_scale_down_wait")]
    pub scale_down_wait: Seconds,
    /// After growing, how long before any removal.
    #[serde(default = "default_cooldown")]
    pub cooldown: Seconds,
    /// Most worker jobs launched but not yet connected at any time (a cap on
    /// jobs queued in the cluster manager).
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
    /// Bring the whole cluster down after it has been idle this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Seconds>,
    /// Launch failures in a row after which adaptation pauses.
    #[serde(default = "default_max_launch_failures")]
    pub max_launch_failures: u32,
    /// Worker jobs that died on their own the agent replaces before it pauses.
    #[serde(default = "default_max_replacements")]
    pub max_replacements: u32,
}

fn default_adapt_interval() -> Seconds {
    Seconds(std::time::Duration::from_millis(500))
}
/// Two seconds: Dask's own `Adaptive` removes workers on its third
/// observation below target, one second apart, i.e. two seconds after the
/// first; a longer wait made muster shrink 2.7x later than `LocalCluster.adapt`
/// (bench/adaptive_burst.py) with no fewer direction changes.
fn default_scale_down_wait() -> Seconds {
    Seconds::from_secs(2)
}
fn default_cooldown() -> Seconds {
    Seconds::from_secs(5)
}
fn default_max_pending() -> u32 {
    32
}
fn default_max_launch_failures() -> u32 {
    3
}
fn default_max_replacements() -> u32 {
    10
}

impl AdaptSpec {
    /// Bounds with every other setting at its default.
    pub fn new(minimum: u32, maximum: u32) -> Self {
        AdaptSpec {
            minimum,
            maximum,
            interval: default_adapt_interval(),
            scale_down_wait: default_scale_down_wait(),
            cooldown: default_cooldown(),
            max_pending: default_max_pending(),
            idle_timeout: None,
            max_launch_failures: default_max_launch_failures(),
            max_replacements: default_max_replacements(),
        }
    }
}

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `worker.memory`.
    pub field: String,
    /// The offending value as the user wrote it (or as parsed).
    pub value: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.reason)
        } else {
            write!(f, "{}: {:?}: {}", self.field, self.value, self.reason)
        }
    }
}

/// The reason of a [`FieldError`] for a key that no field takes.
pub const UNKNOWN_FIELD: &str = "unknown field";

/// A spec that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The YAML could not be read into a spec (syntax, unknown field, wrong type).
    #[error("cannot read cluster spec{}: {message}", source_name.as_ref().map(|s| format!(" {s}")).unwrap_or_default())]
    Parse {
        /// The file the spec came from, if any.
        source_name: Option<String>,
        /// The parser's message, which names the field and position.
        message: String,
    },
    /// The spec was read but some values are not acceptable.
    #[error("invalid cluster spec:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

/// Largest number of worker jobs a spec may ask for.
pub const MAX_WORKERS: u32 = 10_000;

impl ClusterSpec {
    /// Reads a spec from YAML text. `source_name` (a file name) is used in errors.
    pub fn from_yaml(text: &str, source_name: Option<&str>) -> Result<Self, SpecError> {
        let read = keys::read::<ClusterSpec, _>(serde_yaml_ng::Deserializer::from_str(text), "");
        if let Some(mut spec) = read.value {
            spec.unknown_fields = read.unknown;
            return Ok(spec);
        }
        // A value serde could not read ends the read; the unknown keys met
        // before it are named too.
        let (field, inner) = read.error.unwrap_or_default();
        let mut message = match field {
            Some(f) => format!("{f}: {inner}"),
            None => inner,
        };
        for key in &read.unknown {
            message.push_str(&format!("\n  {key}: {UNKNOWN_FIELD}"));
        }
        Err(SpecError::Parse {
            source_name: source_name.map(str::to_string),
            message,
        })
    }

    /// The spec as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a spec always serialises")
    }
}

/// The full path of a deserialisation error's field (`None` at the top)
/// and its message without the parser's own location prefix. serde names an
/// unknown key only in its message; it becomes part of the path.
pub fn error_path(path: &str, message: &str) -> (Option<String>, String) {
    let inner = match message.split_once(": ") {
        Some((at, rest)) if path.starts_with(at) => rest.to_string(),
        _ => message.to_string(),
    };
    let unknown = inner
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        .filter(|k| !path.ends_with(k))
        .map(str::to_string);
    let field = match (path, unknown) {
        (".", Some(k)) => Some(k),
        (".", None) => None,
        (p, Some(k)) => Some(format!("{p}.{k}")),
        (p, None) => Some(p.to_string()),
    };
    (field, inner)
}
