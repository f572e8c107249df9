//! Validation of the backend-independent fields of a [`ClusterSpec`]: every
//! value is checked and every problem is collected with its field's full
//! path, so a user sees them all at once, before anything is launched. The
//! checks of a backend's own options live in that backend's crate; this
//! module knows none of them. Strings that will reach a shell or a job
//! script are refused here when no quoting could make them safe (control
//! characters, NUL).

use std::collections::BTreeMap;
use std::fmt;

use super::{ClusterSpec, FieldError, MAX_WORKERS, SpecError};

impl ClusterSpec {
    /// Checks every field and returns all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let errs = self.problems();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(errs))
        }
    }

    /// Every problem of the backend-independent fields, unknown keys first.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errs: Vec<FieldError> = (self.unknown_fields.iter().cloned())
            .map(super::keys::unknown_field)
            .collect();
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
        check_owned_flags(
            "scheduler.extra_args",
            &self.scheduler.extra_args,
            SCHEDULER_FLAGS,
            &mut bad,
        );
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
        check_owned_flags("worker.extra_args", &w.extra_args, WORKER_FLAGS, &mut bad);
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

/// Where a flag muster puts on a Dask command line comes from: a spec field
/// the user sets instead, or muster alone.
#[derive(Clone, Copy)]
enum Owner {
    Field(&'static str),
    Muster(&'static str),
}

/// The `dask worker` flags muster sets itself ([`crate::dask::worker_command`]
/// and [`crate::dask::secure`]), with what to use instead.
const WORKER_FLAGS: &[(&str, Owner)] = &[
    ("--name", Owner::Muster("the worker's name is its job id")),
    (
        "--scheduler-file",
        Owner::Muster("workers find the scheduler through the file muster writes"),
    ),
    ("--nthreads", Owner::Field("worker.cores")),
    ("--nworkers", Owner::Field("worker.processes")),
    ("--nprocs", Owner::Field("worker.processes")),
    ("--memory-limit", Owner::Field("worker.memory")),
    ("--death-timeout", Owner::Field("worker.death_timeout")),
    ("--nanny", Owner::Field("worker.nanny")),
    ("--no-nanny", Owner::Field("worker.nanny")),
    ("--interface", Owner::Field("worker.interface")),
    ("--local-directory", Owner::Field("worker.local_directory")),
    ("--protocol", Owner::Field("scheduler.security")),
    ("--tls-ca-file", Owner::Field("scheduler.security")),
    ("--tls-cert", Owner::Field("scheduler.security")),
    ("--tls-key", Owner::Field("scheduler.security")),
];

/// The `dask scheduler` flags muster sets itself
/// ([`crate::dask::scheduler_command`] and [`crate::dask::secure`]).
const SCHEDULER_FLAGS: &[(&str, Owner)] = &[
    ("--host", Owner::Field("scheduler.host")),
    ("--port", Owner::Field("scheduler.port")),
    (
        "--dashboard-address",
        Owner::Field("scheduler.dashboard_port"),
    ),
    (
        "--scheduler-file",
        Owner::Muster("clients and workers read the file muster writes"),
    ),
    ("--protocol", Owner::Field("scheduler.security")),
    ("--tls-ca-file", Owner::Field("scheduler.security")),
    ("--tls-cert", Owner::Field("scheduler.security")),
    ("--tls-key", Owner::Field("scheduler.security")),
];

/// Refuses extra arguments that repeat a flag muster sets itself (as
/// `--flag value` or `--flag=value`): Dask would take one of the two
/// silently, so the spec would not say what runs.
fn check_owned_flags(
    field: &str,
    args: &[String],
    owned: &[(&str, Owner)],
    bad: &mut impl FnMut(&str, &dyn fmt::Display, &str),
) {
    for (i, arg) in args.iter().enumerate() {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
        let Some((_, owner)) = owned.iter().find(|(f, _)| *f == flag) else {
            continue;
        };
        let reason = match owner {
            Owner::Field(instead) => {
                format!("muster sets {flag} itself: use {instead} instead")
            }
            Owner::Muster(why) => format!("muster sets {flag} itself ({why}): remove it"),
        };
        bad(&format!("{field}[{i}]"), arg, &reason);
    }
}
