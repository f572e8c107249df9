//! muster's warm worker launcher: the program a worker job runs by default
//! (`worker.warm_start`). It owns the shipped text of `launcher.py` and the
//! choice between it and Dask's stock `python -m distributed.cli.dask_worker`;
//! it knows nothing of the Dask flags that follow (the parent module builds
//! them) nor of any backend.

use std::collections::BTreeMap;

use crate::spec::WorkerSpec;

/// The launcher's source as shipped in a job's command (`python -c`): the
/// file without its comment lines and blank lines (the file keeps the
/// explanation). It runs `dask worker` with the arguments that follow it,
/// having imported `distributed` once and forked a warm multiprocessing
/// forkserver from itself before any thread runs, so the nanny's worker
/// process is a fork instead of a second fresh interpreter.
pub fn launcher_source() -> &'static str {
    static SOURCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut out = String::new();
        for line in include_str!("launcher.py").lines() {
            if !line.trim_start().starts_with('#') && !line.trim().is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    &SOURCE
}

/// Whether this worker spec starts through the launcher: by default, unless
/// `worker.warm_start: false` or `worker.nanny: false` (without a nanny
/// there is no second process to fork).
pub fn is_warm(w: &WorkerSpec) -> bool {
    w.warm_start && w.nanny
}

/// The argv that starts a worker job's `dask worker`, before its arguments.
pub fn worker_program(w: &WorkerSpec) -> Vec<String> {
    if is_warm(w) {
        vec![w.python.clone(), "-c".into(), launcher_source().into()]
    } else {
        vec![
            w.python.clone(),
            "-m".into(),
            "distributed.cli.dask_worker".into(),
        ]
    }
}

/// What a warm job's environment needs on top of `worker.env`: Dask's nanny
/// sets `MALLOC_TRIM_THRESHOLD_` just before it spawns a worker, but a forked
/// worker keeps the launcher's malloc settings, read at its start, so the
/// launcher must start with it. The user's own value wins.
pub fn add_env(w: &WorkerSpec, env: &mut BTreeMap<String, String>) {
    if is_warm(w) {
        env.entry("MALLOC_TRIM_THRESHOLD_".into())
            .or_insert_with(|| "65536".into());
    }
}
