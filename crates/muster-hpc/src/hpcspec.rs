//! The options of the batch-scheduler backends (`kind: slurm`, `kind: pbs`),
//! named as dask-jobqueue names them (in snake_case) so its users recognise
//! them, and their validation. Every string here ends up in a job script: in
//! a `#SBATCH`/`#PBS` directive, in the environment, or in the prologue, so
//! anything that could break out of its place is rejected up front. How the
//! options become a script lives in [`crate::script`]. Core never reads them.

use serde::{Deserialize, Serialize};

use muster_core::spec::{ClusterSpec, FieldError, Placement};
use muster_ssh::ssh_spec::{SshConnectSpec, parse_destination};

/// Options shared by the SLURM and PBS backends (some are one dialect's only;
/// validation names the ones that do not apply).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HpcSpec {
    /// Partition (SLURM) or queue (PBS) to submit to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Account (project) to charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Wall-clock limit of each job, e.g. `01:30:00` or `2-00:00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walltime: Option<String>,
    /// Extra directive lines, without the `#SBATCH`/`#PBS` prefix
    /// (e.g. `--qos=high` or `-l gpus=1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_extra_directives: Vec<String>,
    /// Generated directives to drop: any directive line containing one of
    /// these strings is left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_directives_skip: Vec<String>,
    /// Shell lines run before Dask starts (e.g. `module load python`). They
    /// are the user's own commands and run as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_script_prologue: Vec<String>,
    /// Directory (shared with the compute nodes) for job output; the
    /// cluster's state directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_directory: Option<String>,
    /// The script's first line; `#!/usr/bin/env bash` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shebang: Option<String>,
    /// A word added to every job's name, after the `muster_<cluster>_<tag>_`
    /// marker (the marker always stays: it is how `down` finds the jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// SLURM: CPUs per job (`--cpus-per-task`); `worker.cores` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_cpu: Option<u32>,
    /// SLURM: memory per job, passed to `--mem` as written (as dask-jobqueue
    /// does: `8000` is 8000 MB, `8G`/`8GB` 8 GiB to SLURM);
    /// `worker.memory` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_mem: Option<SlurmMem>,
    /// PBS: the `-l` resource request, e.g. `select=1:ncpus=4:mem=8GB`;
    /// derived from `worker.cores`/`worker.memory` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_spec: Option<String>,
    /// PBS: which PBS the commands belong to, `torque` (default; also the
    /// Torque-compatible commands of SLURM) or `pbspro` (OpenPBS / PBS Pro).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<PbsFlavor>,
    /// The most worker jobs that may sit queued (pending) at once; a scale-up
    /// that would exceed it is refused. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_jobs: Option<u32>,
    /// Path of a job-script template to use instead of the built-in one
    /// (see `hpc-templates/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Run every batch command (and read job output) on this login node
    /// over SSH instead of on this machine: `user@host:port` (user and port
    /// optional; `host` may be an alias from the ssh config). Needs
    /// `log_directory` (on the cluster's shared filesystem) and
    /// `scheduler.placement: job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_host: Option<String>,
    /// How to connect to `submit_host` (key, ssh config, known_hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConnectSpec>,
}

/// A SLURM memory request as SLURM reads it (`--mem`): a whole number with
/// an optional `K`, `M`, `G` or `T` suffix (binary units; `B` after it is
/// allowed; no suffix means megabytes). Kept as written, so a dask-jobqueue
/// `job_mem` asks SLURM for the same amount under muster. A YAML number is
/// taken as its digits (`8000` → `--mem=8000`, 8000 MB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmMem(pub String);

impl SlurmMem {
    /// Why the value is not one SLURM's `--mem` takes, if it is not.
    pub fn problem(&self) -> Option<&'static str> {
        let s = self.0.as_str();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let unit = s[digits..].to_ascii_uppercase();
        let unit_ok = matches!(
            unit.as_str(),
            "" | "K" | "M" | "G" | "T" | "KB" | "MB" | "GB" | "TB"
        );
        if digits == 0 || digits > 12 || !unit_ok {
            Some(
                "is passed to SLURM's --mem as written (as dask-jobqueue does): a whole number with an optional K, M, G or T suffix (binary units, no suffix = MB), e.g. 8000, 8G, 8GB",
            )
        } else if s[..digits].bytes().all(|b| b == b'0') {
            Some("must be more than 0")
        } else {
            None
        }
    }
}

impl std::fmt::Display for SlurmMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SlurmMem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SlurmMem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "job_mem must be a whole number (MB) or a SLURM size such as 8G or 8GB",
            )
        })? {
            Raw::Int(n) => Ok(SlurmMem(n.to_string())),
            Raw::Text(t) => Ok(SlurmMem(t.trim().to_string())),
        }
    }
}

/// Which PBS implementation the `qsub`/`qstat`/`qdel` commands belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PbsFlavor {
    /// TORQUE, and SLURM's Torque-compatible wrappers.
    Torque,
    /// OpenPBS / PBS Professional (`qstat -F json`, `-J` arrays).
    Pbspro,
}

/// Which dialect a spec is validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpcKind {
    /// `kind: slurm`.
    Slurm,
    /// `kind: pbs`.
    Pbs,
}

/// Characters allowed in queue, account and job-name values: what SLURM and
/// PBS accept in those names, and nothing a shell or directive parser treats
/// specially.
fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-+@".contains(&b))
}

/// A walltime: `[days-]hours:minutes:seconds`, `minutes`, `h:m`, digits only.
fn is_walltime(s: &str) -> bool {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, s),
    };
    let digits = |p: &str| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit());
    days.is_none_or(digits) && {
        let parts: Vec<&str> = rest.split(':').collect();
        parts.len() <= 3 && parts.iter().all(|p| digits(p))
    }
}

/// SLURM's words for no time limit (`--time=UNLIMITED`), which dask-jobqueue
/// passes through.
fn is_unlimited(s: &str) -> bool {
    s.eq_ignore_ascii_case("UNLIMITED") || s.eq_ignore_ascii_case("INFINITE")
}

/// A path that can be written inside a directive without quoting.
pub fn is_plain_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 1024
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-+@,=".contains(&b))
}

fn single_line(s: &str) -> Result<(), &'static str> {
    if s.contains('\0') {
        Err("must not contain NUL bytes")
    } else if s.contains(['\n', '\r']) {
        Err("must not contain line breaks: give one list item per line")
    } else {
        Ok(())
    }
}

impl HpcKind {
    /// The dialect of a spec's `backend.kind`, if it is a batch one.
    pub fn of(spec: &ClusterSpec) -> Option<HpcKind> {
        match spec.backend.kind() {
            "slurm" => Some(HpcKind::Slurm),
            "pbs" => Some(HpcKind::Pbs),
            _ => None,
        }
    }
}

impl HpcSpec {
    /// The batch options of a spec's `backend:` section.
    pub fn of(spec: &ClusterSpec) -> Result<HpcSpec, FieldError> {
        muster_core::kinds::parse_options("backend", &spec.backend.options)
    }

    /// Writes these options into the spec's `backend:` section.
    pub fn store(&self, spec: &mut ClusterSpec) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            spec.backend.options = map;
        }
    }

    /// Every problem of a batch spec: its options, and what batch jobs need
    /// of the rest of the spec.
    pub fn problems(kind: HpcKind, spec: &ClusterSpec) -> Vec<FieldError> {
        let (hpc, mut errs) =
            muster_core::kinds::read_options::<HpcSpec>("backend", &spec.backend.options);
        let hpc = hpc.unwrap_or_default();
        hpc.validate(kind, &mut errs);
        if spec.worker.memory.is_none() {
            errs.push(FieldError {
                field: "worker.memory".into(),
                value: String::new(),
                reason: "is required on batch backends: it is the job's memory request and the workers' limit".into(),
            });
        }
        if hpc.submit_host.is_some() && spec.scheduler.placement != Placement::Job {
            errs.push(FieldError {
                field: "scheduler.placement".into(),
                value: "host".into(),
                reason: "must be `job` with backend.submit_host: the scheduler has to run inside the cluster, where its workers can reach it".into(),
            });
        }
        errs
    }

    /// Checks every option for this dialect; problems are pushed with their
    /// dotted field names under `backend.`.
    pub fn validate(&self, kind: HpcKind, errs: &mut Vec<FieldError>) {
        let mut bad = |field: &str, value: &str, reason: &str| {
            errs.push(FieldError {
                field: format!("backend.{field}"),
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        let word = "only letters, digits and _ . - + @ are allowed";
        if let Some(q) = &self.queue
            && !is_plain_word(q)
        {
            bad("queue", q, word);
        }
        if let Some(a) = &self.account
            && !is_plain_word(a)
        {
            bad("account", a, word);
        }
        if let Some(n) = &self.job_name
            && (!is_plain_word(n) || n.len() > 40)
        {
            bad(
                "job_name",
                n,
                "at most 40 letters, digits and _ . - + @ (it follows the muster_<cluster>_<tag>_ marker)",
            );
        }
        if let Some(w) = &self.walltime
            && kind == HpcKind::Pbs
            && is_unlimited(w)
        {
            bad(
                "walltime",
                w,
                "PBS has no unlimited walltime (SLURM has): give HH:MM:SS, or leave it out for the queue's default",
            );
        } else if let Some(w) = &self.walltime
            && !is_walltime(w)
            && !is_unlimited(w)
        {
            bad(
                "walltime",
                w,
                "must look like HH:MM:SS, D-HH:MM:SS or minutes (digits and ':' only)",
            );
        }
        for (i, d) in self.job_extra_directives.iter().enumerate() {
            if let Err(r) = single_line(d) {
                bad(&format!("job_extra_directives[{i}]"), d, r);
            } else if d.trim().is_empty() {
                bad(
                    &format!("job_extra_directives[{i}]"),
                    d,
                    "must not be empty",
                );
            } else if d.trim_start().starts_with('#') {
                bad(
                    &format!("job_extra_directives[{i}]"),
                    d,
                    "write the directive without its #SBATCH/#PBS prefix",
                );
            }
        }
        for (i, d) in self.job_directives_skip.iter().enumerate() {
            if let Err(r) = single_line(d) {
                bad(&format!("job_directives_skip[{i}]"), d, r);
            } else if d.is_empty() {
                bad(
                    &format!("job_directives_skip[{i}]"),
                    d,
                    "must not be empty (it would skip every directive)",
                );
            }
        }
        for (i, line) in self.job_script_prologue.iter().enumerate() {
            if let Err(r) = single_line(line) {
                bad(&format!("job_script_prologue[{i}]"), line, r);
            }
        }
        if let Some(dir) = &self.log_directory
            && !is_plain_path(dir)
        {
            bad(
                "log_directory",
                dir,
                "must be an absolute path of letters, digits and / _ . - + @ , = (it is written into directives)",
            );
        }
        if let Some(s) = &self.shebang
            && (single_line(s).is_err() || !s.starts_with("#!") || s.len() < 3)
        {
            bad(
                "shebang",
                s,
                "must be one line starting with #!, e.g. #!/usr/bin/env bash",
            );
        }
        if let Some(t) = &self.template
            && (single_line(t).is_err() || t.trim().is_empty())
        {
            bad("template", t, "must be the path of a template file");
        }
        if self.max_queued_jobs == Some(0) {
            bad(
                "max_queued_jobs",
                "0",
                "must be at least 1 (or absent for no cap)",
            );
        }
        if let Some(c) = self.job_cpu
            && (c == 0 || c > 4096)
        {
            bad("job_cpu", &c.to_string(), "must be between 1 and 4096");
        }
        if let Some(m) = &self.job_mem
            && let Some(reason) = m.problem()
        {
            bad("job_mem", &m.0, reason);
        }
        match &self.submit_host {
            Some(host) => {
                if let Err(reason) = parse_destination(host) {
                    bad("submit_host", host, &reason);
                }
                if self.log_directory.is_none() {
                    bad(
                        "log_directory",
                        "",
                        "is required with backend.submit_host: give a directory on the cluster's shared filesystem (seen by the login node and the compute nodes)",
                    );
                }
            }
            None => {
                if self.ssh.is_some() {
                    bad(
                        "ssh",
                        "{...}",
                        "applies only with backend.submit_host (the login node to connect to)",
                    );
                }
            }
        }
        match kind {
            HpcKind::Slurm => {
                if let Some(r) = &self.resource_spec {
                    bad(
                        "resource_spec",
                        r,
                        "is a PBS option; use job_cpu/job_mem with slurm",
                    );
                }
                if let Some(f) = &self.flavor {
                    bad("flavor", &format!("{f:?}"), "is a PBS option");
                }
            }
            HpcKind::Pbs => {
                if let Some(c) = self.job_cpu {
                    bad(
                        "job_cpu",
                        &c.to_string(),
                        "is a SLURM option; use resource_spec with pbs",
                    );
                }
                if let Some(m) = &self.job_mem {
                    bad(
                        "job_mem",
                        &m.0,
                        "is a SLURM option; use resource_spec with pbs",
                    );
                }
                if let Some(r) = &self.resource_spec
                    && (r.is_empty()
                        || !r
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_.-+:=,@".contains(&b)))
                {
                    bad(
                        "resource_spec",
                        r,
                        "only letters, digits and _ . - + : = , @ are allowed, e.g. select=1:ncpus=4:mem=8GB",
                    );
                }
            }
        }
        if let Some(ssh) = &self.ssh {
            ssh.validate("backend.ssh", errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walltimes() {
        for ok in ["30", "01:00:00", "2-00:00:00", "10:00", "1-2"] {
            assert!(is_walltime(ok), "{ok}");
        }
        for bad in ["", "1h", "01:00:00;id", "$(id)", "1:2:3:4", "-1", "1-"] {
            assert!(!is_walltime(bad), "{bad}");
        }
    }

    #[test]
    fn hostile_values_are_named() {
        let spec = HpcSpec {
            queue: Some("debug;reboot".into()),
            account: Some("$(id)".into()),
            walltime: Some("`id`".into()),
            job_extra_directives: vec!["--qos=x\n#SBATCH --uid=0".into(), "#SBATCH -x".into()],
            job_script_prologue: vec!["module load x\nrm -rf /".into()],
            log_directory: Some("/tmp/my logs".into()),
            shebang: Some("/bin/bash".into()),
            job_name: Some("a'b".into()),
            resource_spec: Some("select=1".into()),
            max_queued_jobs: Some(0),
            ..Default::default()
        };
        let mut errs = Vec::new();
        spec.validate(HpcKind::Slurm, &mut errs);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "backend.queue",
                "backend.account",
                "backend.job_name",
                "backend.walltime",
                "backend.job_extra_directives[0]",
                "backend.job_extra_directives[1]",
                "backend.job_script_prologue[0]",
                "backend.log_directory",
                "backend.shebang",
                "backend.max_queued_jobs",
                "backend.resource_spec",
            ]
        );
    }

    #[test]
    fn a_login_node_needs_a_shared_log_directory_and_a_clean_destination() {
        let fields = |spec: &HpcSpec| {
            let mut errs = Vec::new();
            spec.validate(HpcKind::Slurm, &mut errs);
            errs.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        let login = HpcSpec {
            submit_host: Some("me@login.example.org:2222".into()),
            log_directory: Some("/scratch/me/logs".into()),
            ..Default::default()
        };
        assert!(fields(&login).is_empty());
        let hostile = HpcSpec {
            submit_host: Some("login;reboot".into()),
            log_directory: None,
            ssh: Some(SshConnectSpec {
                known_hosts: Some("a\nb".into()),
                connect_timeout: Some(muster_core::units::Seconds::from_secs(0)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(&hostile),
            [
                "backend.submit_host",
                "backend.log_directory",
                "backend.ssh.known_hosts",
                "backend.ssh.connect_timeout",
            ]
        );
        let stray = HpcSpec {
            ssh: Some(SshConnectSpec::default()),
            ..Default::default()
        };
        assert_eq!(fields(&stray), ["backend.ssh"]);
    }

    #[test]
    fn dialect_only_options_are_refused_on_the_other() {
        let spec = HpcSpec {
            job_cpu: Some(2),
            job_mem: Some(SlurmMem("1G".into())),
            ..Default::default()
        };
        let mut errs = Vec::new();
        spec.validate(HpcKind::Pbs, &mut errs);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["backend.job_cpu", "backend.job_mem"]);
        let mut errs = Vec::new();
        spec.validate(HpcKind::Slurm, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }
}
