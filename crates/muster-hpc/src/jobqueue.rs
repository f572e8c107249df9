//! Defaults from an existing dask-jobqueue configuration, so its users move
//! over without rewriting anything: the `jobqueue.slurm` / `jobqueue.pbs`
//! sections of the Dask config files (`/etc/dask/*.yaml`, then
//! `$DASK_CONFIG` or `~/.config/dask/*.yaml`; later files win). Values the
//! spec sets explicitly always win: batch options fill only absent fields,
//! worker options only fields still at muster's default. Reading files is the
//! thin edge; [`section`] and [`apply`] are pure.

use std::path::{Path, PathBuf};

use muster_core::spec::{ClusterSpec, WorkerSpec};

use crate::hpcspec::SlurmMem;
use crate::hpcspec::{HpcKind, HpcSpec};
use muster_core::units::{Memory, Seconds};
use serde_yaml_ng::{Mapping, Value};

/// The Dask config files in increasing priority, from the environment.
pub fn config_files() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/dask")];
    match std::env::var_os("DASK_CONFIG") {
        Some(d) => dirs.push(PathBuf::from(d)),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                dirs.push(Path::new(&home).join(".config").join("dask"));
            }
        }
    }
    config_files_in(&dirs)
}

/// The YAML files of these config locations (directories, or files given
/// directly), in order, each directory's files sorted by name.
pub fn config_files_in(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        if dir.is_file() {
            files.push(dir.clone());
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        here.sort();
        files.extend(here);
    }
    files
}

/// Merges the `jobqueue.<kind>` mappings of several parsed config documents
/// (later ones win, key by key).
pub fn section(docs: &[Value], kind: &str) -> Mapping {
    let mut out = Mapping::new();
    for doc in docs {
        if let Some(Value::Mapping(m)) = doc.get("jobqueue").and_then(|j| j.get(kind)) {
            for (k, v) in m {
                if !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

/// Reads the config files and returns the merged section for `kind`.
/// Unreadable files are skipped with a warning: they must not stop `up`.
pub fn load_section(kind: &str) -> Mapping {
    let docs: Vec<Value> = config_files()
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            match serde_yaml_ng::from_str(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("ignoring Dask config {}: {e}", p.display());
                    None
                }
            }
        })
        .collect();
    section(&docs, kind)
}

fn text(m: &Mapping, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match m.get(*k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn list(m: &Mapping, keys: &[&str]) -> Option<Vec<String>> {
    keys.iter().find_map(|k| match m.get(*k)? {
        Value::Sequence(items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    })
}

fn number(m: &Mapping, key: &str) -> Option<u32> {
    match m.get(key)? {
        Value::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value read from the config, or a warning naming the key it came from
/// (a value muster cannot read must not pass unnoticed).
fn readable<T, E: std::fmt::Display>(r: Result<T, E>, key: &str, value: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("ignoring jobqueue {key}: {value:?} from the Dask config: {e}");
            None
        }
    }
}

/// Fills the spec's unset options from a `jobqueue.<kind>` section. Returns
/// the dask-jobqueue keys it used (for `-v` logging and tests).
pub fn apply(spec: &mut ClusterSpec, section: &Mapping) -> Vec<&'static str> {
    let mut used = Vec::new();
    let defaults = WorkerSpec::default();
    if HpcKind::of(spec).is_none() {
        return used;
    }
    // Options that do not parse are left for validation to report.
    let Ok(mut options) = HpcSpec::of(spec) else {
        return used;
    };
    let hpc = &mut options;
    macro_rules! opt {
        ($field:expr, $value:expr, $key:literal) => {
            if $field.is_none()
                && let Some(v) = $value
            {
                $field = Some(v);
                used.push($key);
            }
        };
    }
    macro_rules! vec_opt {
        ($field:expr, $value:expr, $key:literal) => {
            if $field.is_empty()
                && let Some(v) = $value
                && !v.is_empty()
            {
                $field = v;
                used.push($key);
            }
        };
    }
    opt!(hpc.queue, text(section, &["queue"]), "queue");
    opt!(
        hpc.account,
        text(section, &["account", "project"]),
        "account"
    );
    opt!(hpc.walltime, text(section, &["walltime"]), "walltime");
    opt!(
        hpc.log_directory,
        text(section, &["log-directory"]),
        "log-directory"
    );
    opt!(hpc.shebang, text(section, &["shebang"]), "shebang");
    opt!(hpc.job_cpu, number(section, "job-cpu"), "job-cpu");
    // Passed through to SLURM as written, as dask-jobqueue does (validation
    // names the value if SLURM could not read it).
    opt!(
        hpc.job_mem,
        text(section, &["job-mem"]).map(|s| SlurmMem(s.trim().to_string())),
        "job-mem"
    );
    // dask-jobqueue's `name` is the job name (`-J dask-worker`): muster adds
    // it after the cluster's marker.
    opt!(hpc.job_name, text(section, &["name"]), "name");
    opt!(
        hpc.resource_spec,
        text(section, &["resource-spec"]),
        "resource-spec"
    );
    vec_opt!(
        hpc.job_extra_directives,
        list(section, &["job-extra-directives", "job-extra"]),
        "job-extra-directives"
    );
    vec_opt!(
        hpc.job_directives_skip,
        list(section, &["job-directives-skip", "header-skip"]),
        "job-directives-skip"
    );
    vec_opt!(
        hpc.job_script_prologue,
        list(section, &["job-script-prologue", "env-extra"]),
        "job-script-prologue"
    );

    options.store(spec);
    // Worker options: only where the spec still holds muster's default.
    let w = &mut spec.worker;
    if w.cores == defaults.cores
        && let Some(c) = number(section, "cores")
    {
        w.cores = c;
        used.push("cores");
    }
    if w.processes == defaults.processes
        && let Some(p) = number(section, "processes")
    {
        w.processes = p;
        used.push("processes");
    }
    opt!(
        w.memory,
        text(section, &["memory"]).and_then(|s| readable(s.parse::<Memory>(), "memory", &s)),
        "memory"
    );
    opt!(w.interface, text(section, &["interface"]), "interface");
    opt!(
        w.local_directory,
        text(section, &["local-directory"]),
        "local-directory"
    );
    if w.python == defaults.python
        && let Some(p) = text(section, &["python"])
    {
        w.python = p;
        used.push("python");
    }
    if w.death_timeout == defaults.death_timeout
        && let Some(d) = text(section, &["death-timeout"])
        && let Some(s) = readable(d.parse::<Seconds>(), "death-timeout", &d)
    {
        w.death_timeout = s;
        used.push("death-timeout");
    }
    if w.extra_args.is_empty()
        && let Some(a) = list(section, &["worker-extra-args", "extra"])
        && !a.is_empty()
    {
        w.extra_args = a;
        used.push("worker-extra-args");
    }
    used
}

/// PBS: an account still unset falls back to `$PBS_ACCOUNT`, as
/// dask-jobqueue's PBSCluster does. True if it was used.
pub fn pbs_account_fallback(spec: &mut ClusterSpec, pbs_account: Option<String>) -> bool {
    if HpcKind::of(spec) != Some(HpcKind::Pbs) {
        return false;
    }
    let Ok(mut h) = HpcSpec::of(spec) else {
        return false;
    };
    if h.account.is_none()
        && let Some(a) = pbs_account.filter(|a| !a.is_empty())
    {
        h.account = Some(a);
        h.store(spec);
        return true;
    }
    false
}

/// Applies the machine's dask-jobqueue configuration to a slurm/pbs spec.
pub fn apply_from_environment(spec: &mut ClusterSpec) {
    let kind = match HpcKind::of(spec) {
        Some(HpcKind::Slurm) => "slurm",
        Some(HpcKind::Pbs) => "pbs",
        None => return,
    };
    let mut used = apply(spec, &load_section(kind));
    if pbs_account_fallback(spec, std::env::var("PBS_ACCOUNT").ok()) {
        used.push("PBS_ACCOUNT");
    }
    if !used.is_empty() {
        tracing::info!(
            ?used,
            "defaults taken from the Dask config's jobqueue.{kind}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: &str = r#"
jobqueue:
  slurm:
    name: dask-worker
    cores: 8
    memory: 16GB
    processes: 2
    queue: batch
    account: null
    walltime: '01:00:00'
    job-extra-directives: ['--qos=normal']
    job-script-prologue: ['module load python']
    death-timeout: 90
    interface: ib0
    log-directory: /scratch/logs
  pbs:
    queue: workq
    resource-spec: select=1:ncpus=8:mem=16GB
"#;
    const USER: &str = r#"
jobqueue:
  slurm:
    account: proj42
    walltime: '02:00:00'
"#;

    fn docs() -> Vec<Value> {
        [SYSTEM, USER]
            .iter()
            .map(|t| serde_yaml_ng::from_str(t).unwrap())
            .collect()
    }

    #[test]
    fn config_locations_are_read_in_order() {
        let system = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        std::fs::write(system.path().join("jobqueue.yaml"), SYSTEM).unwrap();
        std::fs::write(system.path().join("notes.txt"), "not yaml").unwrap();
        std::fs::write(user.path().join("b.yml"), USER).unwrap();
        std::fs::write(
            user.path().join("a.yaml"),
            "jobqueue: {slurm: {account: early}}",
        )
        .unwrap();
        let files = config_files_in(&[
            system.path().to_path_buf(),
            user.path().to_path_buf(),
            PathBuf::from("/nonexistent/dask"),
        ]);
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["jobqueue.yaml", "a.yaml", "b.yml"]);
        let docs: Vec<Value> = files
            .iter()
            .map(|p| serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect();
        assert_eq!(
            text(&section(&docs, "slurm"), &["account"]).as_deref(),
            Some("proj42")
        );
    }

    #[test]
    fn later_files_win_and_nulls_are_skipped() {
        let s = section(&docs(), "slurm");
        assert_eq!(text(&s, &["account"]).as_deref(), Some("proj42"));
        assert_eq!(text(&s, &["walltime"]).as_deref(), Some("02:00:00"));
        assert_eq!(text(&s, &["queue"]).as_deref(), Some("batch"));
        assert!(section(&docs(), "sge").is_empty());
    }

    #[test]
    fn explicit_spec_values_win() {
        let mut spec = ClusterSpec::from_yaml(
            "name: x\nbackend: {kind: slurm, queue: gpu, job_script_prologue: ['source env']}\nworker: {cores: 4}",
            None,
        )
        .unwrap();
        let used = apply(&mut spec, &section(&docs(), "slurm"));
        let h = HpcSpec::of(&spec).unwrap();
        assert_eq!(h.queue.as_deref(), Some("gpu"));
        assert_eq!(h.account.as_deref(), Some("proj42"));
        assert_eq!(h.walltime.as_deref(), Some("02:00:00"));
        assert_eq!(h.job_extra_directives, ["--qos=normal"]);
        assert_eq!(h.job_script_prologue, ["source env"]);
        assert_eq!(h.log_directory.as_deref(), Some("/scratch/logs"));
        assert_eq!(spec.worker.cores, 4);
        assert_eq!(spec.worker.processes, 2);
        assert_eq!(spec.worker.memory, Some(Memory(16_000_000_000)));
        assert_eq!(spec.worker.death_timeout, Seconds::from_secs(90));
        assert_eq!(spec.worker.interface.as_deref(), Some("ib0"));
        assert!(
            !used.contains(&"queue") && !used.contains(&"cores"),
            "{used:?}"
        );
        spec.validate().unwrap();
    }

    #[test]
    fn pbs_reads_its_own_section_and_local_ignores_it() {
        let mut spec = ClusterSpec::from_yaml("name: x\nbackend: {kind: pbs}", None).unwrap();
        apply(&mut spec, &section(&docs(), "pbs"));
        let h = HpcSpec::of(&spec).unwrap();
        assert_eq!(
            h.resource_spec.as_deref(),
            Some("select=1:ncpus=8:mem=16GB")
        );
        assert_eq!(spec.worker.cores, 1);
        let mut local = ClusterSpec::from_yaml("name: x", None).unwrap();
        assert!(apply(&mut local, &section(&docs(), "slurm")).is_empty());
    }
}
