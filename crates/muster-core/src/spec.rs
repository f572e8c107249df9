//! The cluster spec: what the user asked for, read from YAML or flags, and its
//! validation. Every check runs before anything is launched, and every problem
//! names the field and the offending value. Nothing here knows how a backend
//! launches anything.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::{Memory, Seconds};

/// Everything needed to bring one Dask cluster up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
fn default_scale_down_wait() -> Seconds {
    Seconds::from_secs(5)
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
        write!(f, "{}: {:?}: {}", self.field, self.value, self.reason)
    }
}

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
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let (field, inner) = error_path(&path, &e.into_inner().to_string());
            SpecError::Parse {
                source_name: source_name.map(str::to_string),
                message: match field {
                    Some(f) => format!("{f}: {inner}"),
                    None => inner,
                },
            }
        })
    }

    /// The spec as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a spec always serialises")
    }

    /// Checks every field and returns all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let errs = self.problems();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(errs))
        }
    }

    /// Every problem of the backend-independent fields.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, value: &dyn fmt::Display, reason: &str| {
            errs.push(FieldError {
                field: field.to_string(),
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };

        if let Err(reason) = check_name(&self.name) {
            bad("name", &self.name, &reason);
        }

        // Scheduler.
        if let Some(host) = &self.scheduler.host
            && !is_host(host)
        {
            bad(
                "scheduler.host",
                host,
                "must be a host name or an IP address",
            );
        }
        if self.scheduler.port != 0 && self.scheduler.port == self.scheduler.dashboard_port {
            bad(
                "scheduler.dashboard_port",
                &self.scheduler.dashboard_port,
                "must differ from scheduler.port",
            );
        }
        if let Some(python) = &self.scheduler.python
            && let Err(reason) = check_program(python)
        {
            bad("scheduler.python", python, &reason);
        }
        check_env("scheduler.env", &self.scheduler.env, &mut bad);
        check_args("scheduler.extra_args", &self.scheduler.extra_args, &mut bad);
        // Worker.
        let w = &self.worker;
        if w.cores == 0 || w.cores > 4096 {
            bad("worker.cores", &w.cores, "must be between 1 and 4096");
        }
        if w.processes == 0 {
            bad("worker.processes", &w.processes, "must be at least 1");
        } else if w.processes > w.cores {
            bad(
                "worker.processes",
                &w.processes,
                &format!(
                    "must not exceed worker.cores ({}): each process needs a thread",
                    w.cores
                ),
            );
        }
        if !w.nanny && w.processes > 1 {
            bad(
                "worker.nanny",
                &w.nanny,
                &format!(
                    "Dask starts several worker processes per job (worker.processes is {}) only under nannies: set nanny: true or processes: 1",
                    w.processes
                ),
            );
        }
        if let Some(mem) = w.memory
            && mem.bytes() < u64::from(w.processes.max(1)) * (64 << 20)
        {
            bad(
                "worker.memory",
                &mem,
                "too small: each worker process needs at least 64MiB",
            );
        }
        if let Err(reason) = check_program(&w.python) {
            bad("worker.python", &w.python, &reason);
        }
        check_env("worker.env", &w.env, &mut bad);
        check_args("worker.extra_args", &w.extra_args, &mut bad);
        if w.death_timeout.duration().as_secs() == 0 {
            bad(
                "worker.death_timeout",
                &w.death_timeout,
                "must be at least 1s",
            );
        }
        if let Some(iface) = &w.interface
            && (iface.is_empty()
                || iface.len() > 15
                || !iface
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c)))
        {
            bad(
                "worker.interface",
                iface,
                "must be a network interface name such as eth0 or ib0",
            );
        }
        if let Some(dir) = &w.local_directory
            && let Err(reason) = check_text(dir)
        {
            bad("worker.local_directory", dir, &reason);
        }

        // Sizes.
        if self.workers > MAX_WORKERS {
            bad(
                "workers",
                &self.workers,
                &format!("must be at most {MAX_WORKERS}"),
            );
        }
        if let Some(adapt) = &self.adapt {
            if adapt.maximum == 0 || adapt.maximum > MAX_WORKERS {
                bad(
                    "adapt.maximum",
                    &adapt.maximum,
                    &format!("must be between 1 and {MAX_WORKERS}"),
                );
            }
            if adapt.minimum > adapt.maximum {
                bad(
                    "adapt.minimum",
                    &adapt.minimum,
                    &format!("must not exceed adapt.maximum ({})", adapt.maximum),
                );
            }
            let interval = adapt.interval.duration();
            if interval < std::time::Duration::from_millis(100)
                || interval > std::time::Duration::from_secs(3600)
            {
                bad(
                    "adapt.interval",
                    &adapt.interval,
                    "must be between 100ms and 1h",
                );
            }
            for (field, value) in [
                ("adapt.scale_down_wait", adapt.scale_down_wait),
                ("adapt.cooldown", adapt.cooldown),
            ] {
                if value.duration() > std::time::Duration::from_secs(86_400) {
                    bad(field, &value, "must be at most 24h");
                }
            }
            if adapt.max_pending == 0 {
                bad(
                    "adapt.max_pending",
                    &adapt.max_pending,
                    "must be at least 1",
                );
            }
            if let Some(idle) = adapt.idle_timeout
                && idle.duration() < std::time::Duration::from_secs(1)
            {
                bad("adapt.idle_timeout", &idle, "must be at least 1s");
            }
            if adapt.max_launch_failures == 0 {
                bad(
                    "adapt.max_launch_failures",
                    &adapt.max_launch_failures,
                    "must be at least 1",
                );
            }
        }

        errs
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

/// Checks a cluster name: a DNS-1123 label of at most 63 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a cluster name is required".into());
    }
    if name.len() > 63 {
        return Err("must be at most 63 characters".into());
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok_chars && ok_ends {
        Ok(())
    } else {
        Err("must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Rejects text that can never be passed safely: NUL bytes and line breaks.
/// Everything else is quoted wherever it reaches a shell or a file.
fn check_text(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        Err("must not contain NUL bytes".into())
    } else if text.contains(['\n', '\r']) {
        Err("must not contain line breaks".into())
    } else {
        Ok(())
    }
}

fn check_program(program: &str) -> Result<(), String> {
    if program.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if program.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn check_env(
    field: &str,
    env: &BTreeMap<String, String>,
    bad: &mut impl FnMut(&str, &dyn fmt::Display, &str),
) {
    for (key, value) in env {
        let valid_key = !key.is_empty()
            && !key.as_bytes()[0].is_ascii_digit()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            bad(
                &format!("{field}.{key}"),
                key,
                "an environment variable name must match [A-Za-z_][A-Za-z0-9_]*",
            );
        } else if key.starts_with("MUSTER_") {
            bad(
                &format!("{field}.{key}"),
                key,
                "MUSTER_* variables are set by muster itself",
            );
        }
        if value.contains('\0') {
            bad(
                &format!("{field}.{key}"),
                value,
                "must not contain NUL bytes",
            );
        }
    }
}

fn check_args(field: &str, args: &[String], bad: &mut impl FnMut(&str, &dyn fmt::Display, &str)) {
    for (i, arg) in args.iter().enumerate() {
        if let Err(reason) = check_text(arg) {
            bad(&format!("{field}[{i}]"), arg, &reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name: demo
backend: {kind: local}
scheduler: {host: 127.0.0.1, port: 0, dashboard_port: 0}
worker: {cores: 2, memory: 2GiB, processes: 1, python: python3, env: {}, extra_args: []}
workers: 2
adapt: {minimum: 0, maximum: 8}
"#;

    fn problems(yaml: &str) -> Vec<String> {
        match ClusterSpec::from_yaml(yaml, None).and_then(|s| s.validate().map(|_| s)) {
            Ok(_) => vec![],
            Err(SpecError::Invalid(errs)) => errs.into_iter().map(|e| e.field).collect(),
            Err(e @ SpecError::Parse { .. }) => vec![e.to_string()],
        }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let spec = ClusterSpec::from_yaml(FULL, None).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.worker.memory, Some(Memory(2 << 30)));
        assert_eq!(spec.workers, 2);
        assert_eq!(spec.adapt.as_ref().unwrap().maximum, 8);
    }

    #[test]
    fn a_minimal_spec_gets_defaults() {
        let spec = ClusterSpec::from_yaml("name: x", None).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.backend, BackendSpec::of_kind("local"));
        assert_eq!(spec.worker.python, "python3");
        assert_eq!(spec.worker.death_timeout, Seconds::from_secs(60));
        assert!(spec.worker.nanny);
    }

    #[test]
    fn the_yaml_form_round_trips() {
        let spec = ClusterSpec::from_yaml(FULL, None).unwrap();
        let again = ClusterSpec::from_yaml(&spec.to_yaml(), None).unwrap();
        assert_eq!(spec, again);
    }

    #[test]
    fn names_must_be_dns_labels() {
        for good in ["a", "demo", "demo-2", "0abc", &"a".repeat(63)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "-x",
            "x-",
            "a_b",
            "a.b",
            "a b",
            "$(id)",
            "`id`",
            "x\ny",
            &"a".repeat(64),
            "../etc",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_named() {
        let msg = problems("name: x\nworker: {coress: 2}").join("");
        assert!(msg.contains("worker.coress: unknown field"), "{msg}");
        let msg = problems("name: x\nbogus: 1").join("");
        assert!(msg.contains("bogus: unknown field"), "{msg}");
        let msg = problems("name: x\nworker: {memory: 2XB}").join("");
        assert!(
            msg.contains("worker.memory: ") && msg.contains("XB"),
            "{msg}"
        );
        let msg = problems("name: x\nadapt: {maximum: 2, interval: soon}").join("");
        assert!(msg.contains("adapt.interval: "), "{msg}");
        // The backend's own keys are its crate's to check (see kinds.rs).
        let spec =
            ClusterSpec::from_yaml("name: x\nbackend: {kind: mainframe, bogus: 1}", None).unwrap();
        assert_eq!(spec.backend.kind(), "mainframe");
        assert_eq!(spec.backend.options["bogus"], 1);
        let msg = problems("name: x\nbackend: {queue: q}").join("");
        assert!(msg.contains("backend: missing field `kind`"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = r#"
name: Bad_Name
scheduler: {host: "evil host;", port: 8786, dashboard_port: 8786}
worker: {cores: 0, processes: 3, python: "", memory: 1MiB, death_timeout: 0,
         env: {"BAD-KEY": x, MUSTER_CLUSTER: y}, extra_args: ["ok", "line\nbreak"],
         interface: "eth0; reboot"}
workers: 20000
adapt: {minimum: 9, maximum: 0}
"#;
        assert_eq!(
            problems(yaml),
            vec![
                "name",
                "scheduler.host",
                "scheduler.dashboard_port",
                "worker.cores",
                "worker.processes",
                "worker.memory",
                "worker.python",
                "worker.env.BAD-KEY",
                "worker.env.MUSTER_CLUSTER",
                "worker.extra_args[1]",
                "worker.death_timeout",
                "worker.interface",
                "workers",
                "adapt.maximum",
                "adapt.minimum",
            ]
        );
    }

    #[test]
    fn adapt_settings_have_defaults_and_are_checked_by_name() {
        let spec = ClusterSpec::from_yaml("name: x\nadapt: {maximum: 4}", None).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.adapt, Some(AdaptSpec::new(0, 4)));
        let spec = ClusterSpec::from_yaml(
            "name: x\nadapt: {maximum: 4, interval: 500ms, scale_down_wait: 2s, idle_timeout: 10m}",
            None,
        )
        .unwrap();
        spec.validate().unwrap();
        let a = spec.adapt.unwrap();
        assert_eq!(a.interval.duration().as_millis(), 500);
        assert_eq!(a.idle_timeout, Some(Seconds::from_secs(600)));
        let yaml = r#"
name: x
adapt: {minimum: 1, maximum: 4, interval: 10ms, scale_down_wait: 2d, cooldown: 3d,
        max_pending: 0, idle_timeout: 0, max_launch_failures: 0}
"#;
        assert_eq!(
            problems(yaml),
            vec![
                "adapt.interval",
                "adapt.scale_down_wait",
                "adapt.cooldown",
                "adapt.max_pending",
                "adapt.idle_timeout",
                "adapt.max_launch_failures",
            ]
        );
        let msg = problems("name: x\nadapt: {maximum: 4, wait: 3}").join("");
        assert!(msg.contains("wait"), "{msg}");
    }

    #[test]
    fn hostile_but_harmless_strings_are_accepted_for_quoting() {
        // Shell metacharacters in values are legal: they are passed as argv
        // elements or quoted, never interpreted.
        let yaml = r#"
name: x
worker:
  env: {NOTE: "$(touch /tmp/pwned) `id` 'quoted' \"dq\""}
  extra_args: ["--resources", "GPU=1; rm -rf /"]
"#;
        assert_eq!(problems(yaml), Vec::<String>::new());
    }

    #[test]
    fn per_process_shares() {
        let spec = ClusterSpec::from_yaml(
            "name: x\nworker: {cores: 8, processes: 4, memory: 8GiB}",
            None,
        )
        .unwrap();
        assert_eq!(spec.worker.threads_per_process(), 2);
        assert_eq!(spec.worker.memory_per_process(), Some(Memory(2 << 30)));
    }
}
