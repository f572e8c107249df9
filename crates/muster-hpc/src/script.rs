//! Job scripts: the directives, identity, environment, prologue and Dask
//! command of one submission, filled into a template (built in from
//! `hpc-templates/`, or the user's own). Pure: the same inputs always give
//! the same text, which is what `muster render` prints and what is submitted.
//!
//! Quoting rules: directive values were validated to plain words up front
//! (muster-core's `hpcspec`); environment values and every argument of the
//! Dask command are single-quoted for the shell; prologue lines are the
//! user's own shell commands and go in as written (one line each).

use std::fmt::Write as _;

use crate::hpcspec::{HpcSpec, PbsFlavor};
use muster_core::backend::{SchedulerContact, WorkerName};
use muster_core::dask::{self, ProcessCommand};
use muster_core::spec::ClusterSpec;

use crate::dialect::Dialect;

/// The built-in SLURM template.
pub const SLURM_TEMPLATE: &str = include_str!("../../../hpc-templates/slurm.sh");
/// The built-in PBS template.
pub const PBS_TEMPLATE: &str = include_str!("../../../hpc-templates/pbs.sh");

/// What one script starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptRole {
    /// The Dask scheduler, as a batch job of its own.
    Scheduler {
        /// Where it writes its address.
        scheduler_file: String,
    },
    /// `count` workers as one job array.
    Workers {
        /// Array size.
        count: u32,
        /// How they find the scheduler.
        contact: SchedulerContact,
    },
}

/// Everything a script needs besides the spec.
#[derive(Debug, Clone)]
pub struct ScriptInput<'a> {
    /// The dialect.
    pub dialect: Dialect,
    /// The validated spec.
    pub spec: &'a ClusterSpec,
    /// The batch options of the spec.
    pub hpc: &'a HpcSpec,
    /// The tag of the home's jobs ([`job_tag`]), in every job name.
    pub tag: &'a str,
    /// The role.
    pub role: &'a ScriptRole,
    /// Directory for job output (validated as a plain path).
    pub log_dir: &'a str,
    /// Template text; the dialect's built-in one when `None`.
    pub template: Option<&'a str>,
}

/// The job name of a role: `muster_<cluster>_<tag>_<word>`, `tag` being
/// [`job_tag`]'s. `_` never occurs in cluster names nor tags, so one
/// cluster's marker is never a prefix of another's, and a job's name says
/// which cluster of which home it belongs to ([`parse_job_name`]).
pub fn job_name(cluster: &str, tag: &str, hpc: &HpcSpec, role: &ScriptRole) -> String {
    let word = match role {
        ScriptRole::Scheduler { .. } => "scheduler",
        ScriptRole::Workers { .. } => hpc.job_name.as_deref().unwrap_or("w"),
    };
    format!("{}{word}", marker(cluster, tag))
}

/// The prefix of every job name of a cluster of one home.
pub fn marker(cluster: &str, tag: &str) -> String {
    format!("muster_{cluster}_{tag}_")
}

/// The tag of a home's jobs in one dialect: `s` (SLURM) or `p` (PBS), then
/// the home's [`Home::tag`](muster_core::Home::tag). The letter keeps
/// apart jobs that both queues list (SLURM's Torque-compatible `qstat`
/// shows `sbatch`'s jobs too).
pub fn job_tag(dialect: Dialect, home_tag: &str) -> String {
    let letter = match dialect {
        Dialect::Slurm => 's',
        Dialect::Pbs(_) => 'p',
    };
    format!("{letter}{home_tag}")
}

/// The cluster a job name belongs to, when it is a muster job name with
/// this `tag` (so a job of another home, or not muster's, is `None`).
pub fn parse_job_name<'a>(name: &'a str, tag: &str) -> Option<&'a str> {
    let (cluster, rest) = name.strip_prefix("muster_")?.split_once('_')?;
    let word = rest.strip_prefix(tag)?.strip_prefix('_')?;
    (!word.is_empty() && muster_core::spec::check_name(cluster).is_ok()).then_some(cluster)
}

/// Single-quotes a value for a POSIX shell, always (even when harmless), so
/// the rendered scripts read the same way for every value.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn memory_mb(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20).max(1)
}

/// One generated directive: muster's spelling, dask-jobqueue's spelling of
/// the same request (so a `job_directives_skip` written for dask-jobqueue
/// removes what its user meant), and why it must stay, if it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The line as muster writes it, without the prefix.
    pub line: String,
    /// dask-jobqueue's spelling, when it writes this request at all.
    pub jobqueue: Option<String>,
    /// Why skipping it is refused.
    pub required: Option<&'static str>,
}

const NAME_REQUIRED: &str = "the job name carries the muster_<cluster>_<home tag>_ marker by which muster lists and cancels the cluster's jobs";
const OUTPUT_REQUIRED: &str =
    "muster reads the job's output from log_directory (muster logs, failure reasons)";

fn directive(line: String, jobqueue: Option<String>) -> Directive {
    Directive {
        line,
        jobqueue,
        required: None,
    }
}

/// The generated directive lines (without skip/extra handling).
pub fn base_directives(input: &ScriptInput<'_>) -> Vec<Directive> {
    let ScriptInput {
        dialect,
        spec,
        hpc,
        role,
        log_dir,
        tag,
        ..
    } = input;
    let name = job_name(&spec.name, tag, hpc, role);
    let w = &spec.worker;
    let mut d = Vec::new();
    match dialect {
        Dialect::Slurm => {
            d.push(Directive {
                required: Some(NAME_REQUIRED),
                ..directive(format!("--job-name={name}"), Some(format!("-J {name}")))
            });
            let stem = match role {
                ScriptRole::Scheduler { .. } => "%j",
                ScriptRole::Workers { .. } => "%A_%a",
            };
            for (long, short, ext) in [("output", "o", "out"), ("error", "e", "err")] {
                d.push(Directive {
                    required: Some(OUTPUT_REQUIRED),
                    ..directive(
                        format!("--{long}={log_dir}/{stem}.{ext}"),
                        Some(format!("-{short} {log_dir}/{stem}.{ext}")),
                    )
                });
            }
            if let Some(q) = &hpc.queue {
                d.push(directive(
                    format!("--partition={q}"),
                    Some(format!("-p {q}")),
                ));
            }
            if let Some(a) = &hpc.account {
                d.push(directive(format!("--account={a}"), Some(format!("-A {a}"))));
            }
            d.push(directive("--nodes=1".into(), None));
            d.push(directive("--ntasks=1".into(), Some("-n 1".into())));
            let cpus = match role {
                ScriptRole::Scheduler { .. } => 1,
                ScriptRole::Workers { .. } => hpc.job_cpu.unwrap_or(w.cores),
            };
            let line = format!("--cpus-per-task={cpus}");
            d.push(directive(line.clone(), Some(line)));
            if let ScriptRole::Workers { .. } = role {
                // job_mem goes to SLURM as written, like dask-jobqueue's.
                let mem = match (&hpc.job_mem, w.memory) {
                    (Some(m), _) => Some(m.0.clone()),
                    (None, Some(m)) => Some(format!("{}M", memory_mb(m.bytes()))),
                    (None, None) => None,
                };
                if let Some(mem) = mem {
                    let line = format!("--mem={mem}");
                    d.push(directive(line.clone(), Some(line)));
                }
            }
            if let Some(t) = &hpc.walltime {
                d.push(directive(format!("--time={t}"), Some(format!("-t {t}"))));
            }
        }
        Dialect::Pbs(flavor) => {
            d.push(Directive {
                required: Some(NAME_REQUIRED),
                ..directive(format!("-N {name}"), Some(format!("-N {name}")))
            });
            if let Some(q) = &hpc.queue {
                let line = format!("-q {q}");
                d.push(directive(line.clone(), Some(line)));
            }
            if let Some(a) = &hpc.account {
                let line = format!("-A {a}");
                d.push(directive(line.clone(), Some(line)));
            }
            let cores = match role {
                ScriptRole::Scheduler { .. } => 1,
                ScriptRole::Workers { .. } => w.cores,
            };
            let mem = match role {
                ScriptRole::Scheduler { .. } => None,
                ScriptRole::Workers { .. } => w.memory.map(|m| memory_mb(m.bytes())),
            };
            // dask-jobqueue writes one `-l select=...` line for the resources.
            let select = format!(
                "-l select=1:ncpus={cores}{}",
                mem.map(|m| format!(":mem={m}MB")).unwrap_or_default()
            );
            match (&hpc.resource_spec, flavor) {
                (Some(r), _) if matches!(role, ScriptRole::Workers { .. }) => {
                    let line = format!("-l {r}");
                    d.push(directive(line.clone(), Some(line)))
                }
                (_, PbsFlavor::Pbspro) => d.push(directive(
                    format!(
                        "-l select=1:ncpus={cores}{}",
                        mem.map(|m| format!(":mem={m}mb")).unwrap_or_default()
                    ),
                    Some(select),
                )),
                (_, PbsFlavor::Torque) => {
                    d.push(directive(
                        format!("-l nodes=1:ppn={cores}"),
                        Some(select.clone()),
                    ));
                    if let Some(m) = mem {
                        d.push(directive(format!("-l mem={m}mb"), Some(select)));
                    }
                }
            }
            if let Some(t) = &hpc.walltime {
                let line = format!("-l walltime={t}");
                d.push(directive(line.clone(), Some(line)));
            }
        }
    }
    d
}

/// Whether a `job_directives_skip` entry removes a directive: as in
/// dask-jobqueue, when its spelling of the directive contains the entry; or
/// when muster's own spelling starts with it (`--ntasks`, `--mem=`).
pub fn skips(skip: &str, d: &Directive) -> bool {
    d.line.starts_with(skip) || d.jobqueue.as_deref().is_some_and(|j| j.contains(skip))
}

/// The `job_directives_skip` entries that would remove a directive muster
/// needs: `(index, entry, the directive, why)`.
pub fn refused_skips(input: &ScriptInput<'_>) -> Vec<(usize, String, String, &'static str)> {
    let generated = base_directives(input);
    let mut out = Vec::new();
    for (i, skip) in input.hpc.job_directives_skip.iter().enumerate() {
        if let Some(d) = generated
            .iter()
            .find(|d| d.required.is_some() && skips(skip, d))
        {
            out.push((
                i,
                skip.clone(),
                d.line.clone(),
                d.required.unwrap_or_default(),
            ));
        }
    }
    out
}

/// The directives block: generated lines minus the skipped ones, then the
/// user's extra lines (never skipped, as in dask-jobqueue), each with the
/// dialect's prefix.
pub fn directives(input: &ScriptInput<'_>) -> String {
    let prefix = input.dialect.directive_prefix();
    let mut out = String::new();
    for d in base_directives(input) {
        if d.required.is_none()
            && input
                .hpc
                .job_directives_skip
                .iter()
                .any(|skip| skips(skip, &d))
        {
            continue;
        }
        let _ = writeln!(out, "{prefix} {}", d.line);
    }
    for extra in &input.hpc.job_extra_directives {
        let _ = writeln!(out, "{prefix} {}", extra.trim());
    }
    out.trim_end().to_string()
}

/// The lines that give the job its muster id. `MUSTER_TASK` is the id as the
/// batch system spells it (`41_3`, `16[3]`, `42`); `MUSTER_JOB` is
/// `<cluster>-<task>`, muster's job id and the Dask worker name (a bare
/// `41_3` would not do: Dask reads it as the number 413).
fn identity(input: &ScriptInput<'_>) -> String {
    let log = sh_quote(input.log_dir);
    let task = match (input.dialect, input.role) {
        (Dialect::Slurm, ScriptRole::Workers { .. }) => {
            "MUSTER_TASK=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"".to_string()
        }
        (Dialect::Slurm, ScriptRole::Scheduler { .. }) => {
            "MUSTER_TASK=\"${SLURM_JOB_ID}\"".to_string()
        }
        // Real PBS/TORQUE name a job `1234.server` or an array task
        // `1234[5].server`; SLURM's Torque-compatible commands set only
        // SLURM_* variables and list array tasks under SLURM's own ids, so
        // the task records that id for `qstat`/`qdel` in ids/.
        (Dialect::Pbs(_), ScriptRole::Workers { .. }) => concat!(
            "if [ -n \"${SLURM_ARRAY_JOB_ID:-}\" ]; then\n",
            "    MUSTER_TASK=\"${SLURM_ARRAY_JOB_ID}[${SLURM_ARRAY_TASK_ID}]\"\n",
            "    MUSTER_SERVER_ID=\"${SLURM_JOB_ID}\"\n",
            "else\n",
            "    MUSTER_TASK=\"${PBS_JOBID%%.*}\"\n",
            "    MUSTER_SERVER_ID=\"${PBS_JOBID%%.*}\"\n",
            "fi",
        )
        .to_string(),
        (Dialect::Pbs(_), ScriptRole::Scheduler { .. }) => concat!(
            "MUSTER_TASK=\"${SLURM_JOB_ID:-${PBS_JOBID%%.*}}\"\n",
            "MUSTER_SERVER_ID=\"$MUSTER_TASK\"",
        )
        .to_string(),
    };
    let job = format!("MUSTER_JOB=\"{}-$MUSTER_TASK\"", input.spec.name);
    match input.dialect {
        Dialect::Slurm => format!("{task}\n{job}"),
        Dialect::Pbs(_) => format!(
            "{task}\n{job}\n\
             MUSTER_LOGS={log}\n\
             # A task cancelled before it started leaves a tombstone: stop at once.\n\
             if [ -e \"$MUSTER_LOGS/cancelled/$MUSTER_TASK\" ]; then exit 0; fi\n\
             mkdir -p \"$MUSTER_LOGS/ids\"\n\
             printf '%s\\n' \"$MUSTER_SERVER_ID\" > \"$MUSTER_LOGS/ids/$MUSTER_TASK\"\n\
             exec > \"$MUSTER_LOGS/$MUSTER_TASK.out\" 2> \"$MUSTER_LOGS/$MUSTER_TASK.err\""
        ),
    }
}

/// The Dask command of the role (the worker's `--name` is the job's id).
pub fn dask_command(spec: &ClusterSpec, role: &ScriptRole) -> ProcessCommand {
    match role {
        ScriptRole::Scheduler { scheduler_file } => {
            let host = spec.scheduler.host.as_deref().unwrap_or("0.0.0.0");
            let mut cmd = dask::scheduler_command(spec, host, std::path::Path::new(scheduler_file));
            // As dask-jobqueue: without a scheduler host, the scheduler uses
            // the workers' interface (Dask takes --interface instead of --host).
            if spec.scheduler.host.is_none()
                && let Some(iface) = &spec.worker.interface
            {
                on_interface(&mut cmd.argv, iface, spec.scheduler.dashboard_port);
            }
            cmd
        }
        ScriptRole::Workers { contact, .. } => {
            dask::worker_command(spec, WorkerName::FromEnv("MUSTER_JOB".into()), contact)
        }
    }
}

/// Replaces a scheduler command's `--host H` by `--interface IFACE` (and its
/// dashboard address by `:PORT`, every address of the node).
fn on_interface(argv: &mut Vec<String>, iface: &str, dashboard_port: u16) {
    let mut out = Vec::with_capacity(argv.len());
    let mut words = argv.drain(..);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--host" => {
                words.next();
                out.extend(["--interface".to_string(), iface.to_string()]);
            }
            "--dashboard-address" => {
                words.next();
                out.extend([w, format!(":{dashboard_port}")]);
            }
            _ => out.push(w),
        }
    }
    drop(words);
    *argv = out;
}

fn environment(input: &ScriptInput<'_>, cmd: &ProcessCommand) -> String {
    // SLURM hands the submitter's environment to the job: drop muster-local's
    // process marker so a batch job is never mistaken for a local process.
    let mut out = format!(
        "unset MUSTER_HOME MUSTER_EXIT_FILE\nexport MUSTER_CLUSTER={} MUSTER_JOB",
        sh_quote(&input.spec.name)
    );
    for (k, v) in &cmd.env {
        // Keys were validated as [A-Za-z_][A-Za-z0-9_]*.
        let _ = write!(out, "\nexport {k}={}", sh_quote(v));
    }
    out
}

/// The Dask command. SLURM and real PBS stop one array task themselves, so
/// the script simply becomes Dask. PBS workers also watch for a tombstone:
/// SLURM's Torque-compatible `qdel` cannot stop one array task, so muster
/// asks the task to stop by leaving `cancelled/<task>` in the log directory.
fn command_line(input: &ScriptInput<'_>, cmd: &ProcessCommand) -> String {
    let words: Vec<String> = cmd
        .argv
        .iter()
        .map(|a| match dask::env_of_word(a) {
            Some(var) => format!("\"${var}\""),
            None => sh_quote(a),
        })
        .collect();
    let line = words.join(" ");
    match (input.dialect, input.role) {
        (Dialect::Pbs(_), ScriptRole::Workers { .. }) => format!(
            "{line} &\n\
             MUSTER_PID=$!\n\
             trap 'kill -TERM \"$MUSTER_PID\" 2>/dev/null' TERM INT\n\
             while kill -0 \"$MUSTER_PID\" 2>/dev/null; do\n\
             \x20   if [ -e \"$MUSTER_LOGS/cancelled/$MUSTER_TASK\" ]; then kill -TERM \"$MUSTER_PID\" 2>/dev/null; fi\n\
             \x20   sleep 1\n\
             done\n\
             wait \"$MUSTER_PID\""
        ),
        _ => format!("exec {line}"),
    }
}

/// Problems with a user's template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job-script template {path}: {reason}")]
pub struct TemplateError {
    /// Where the template came from.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Checks a template keeps the placeholders a working job needs.
pub fn check_template(path: &str, text: &str) -> Result<(), TemplateError> {
    for needed in ["{{command}}", "{{identity}}", "{{directives}}"] {
        if !text.contains(needed) {
            return Err(TemplateError {
                path: path.to_string(),
                reason: format!("it must contain {needed}"),
            });
        }
    }
    Ok(())
}

/// Where a batch cluster's TLS credentials are, for its jobs: `tls` in its
/// log directory.
pub fn tls_dir(log_dir: &str) -> String {
    format!(
        "{}/{}",
        log_dir.trim_end_matches('/'),
        muster_core::tls::DIR_NAME
    )
}

/// Renders the job script.
pub fn render(input: &ScriptInput<'_>) -> String {
    let template = input.template.unwrap_or(match input.dialect {
        Dialect::Slurm => SLURM_TEMPLATE,
        Dialect::Pbs(_) => PBS_TEMPLATE,
    });
    let mut cmd = dask_command(input.spec, input.role);
    // The cluster's credentials sit owner-only beside the job output, on the
    // shared filesystem; the script names them by path.
    let party = match input.role {
        ScriptRole::Scheduler { .. } => muster_core::tls::Party::Scheduler,
        ScriptRole::Workers { .. } => muster_core::tls::Party::Worker,
    };
    dask::secure(&mut cmd, input.spec, party, &tls_dir(input.log_dir));
    let prologue = input.hpc.job_script_prologue.join("\n");
    let role = match input.role {
        ScriptRole::Scheduler { .. } => "scheduler",
        ScriptRole::Workers { .. } => "workers",
    };
    let shebang = input
        .hpc
        .shebang
        .as_deref()
        .unwrap_or("#!/usr/bin/env bash");
    // One pass over the template so a value can never be re-expanded as a
    // placeholder.
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let key = &after[..end];
        let value = match key {
            "shebang" => shebang.to_string(),
            "directives" => directives(input),
            "identity" => identity(input),
            "environment" => environment(input, &cmd),
            "prologue" => prologue.clone(),
            "command" => command_line(input, &cmd),
            "cluster" => input.spec.name.clone(),
            "role" => role.to_string(),
            _ => format!("{{{{{key}}}}}"),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}
