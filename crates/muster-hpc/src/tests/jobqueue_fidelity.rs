//! Issue 16: what a dask-jobqueue user writes asks for what dask-jobqueue
//! asks (rendered directives and refusals; the real-SLURM tier is
//! tests/e2e/test_jobqueue_options.py).

use super::*;

fn slurm(extra: &str) -> ClusterSpec {
    spec(&format!("name: demo\nbackend: {{kind: slurm{extra}}}"))
}

fn directive_lines(s: &ClusterSpec) -> Vec<String> {
    render(s, workers(1))
        .lines()
        .filter_map(|l| l.strip_prefix("#SBATCH ").map(str::to_string))
        .collect()
}

/// Every problem the kind table would report for `s` (core's and the
/// batch kind's), one string; panics if there is none.
fn invalid(s: &ClusterSpec) -> String {
    use muster_core::kinds::BackendKind;
    let mut errs = s.problems();
    errs.extend(if s.backend.kind() == "pbs" {
        crate::PBS.validate(s)
    } else {
        crate::SLURM.validate(s)
    });
    assert!(!errs.is_empty(), "expected problems in {s:?}");
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn job_mem_reaches_slurm_as_written() {
    for (yaml, want) in [
        ("8000", "--mem=8000"),
        ("8GB", "--mem=8GB"),
        ("'8G'", "--mem=8G"),
    ] {
        let s = slurm(&format!(", job_mem: {yaml}"));
        assert!(directive_lines(&s).contains(&want.to_string()), "{yaml}");
    }
    for bad in ["8GiB", "'8 GB'", "4e9", "0", "1.5G"] {
        // Refused when read (a YAML float) or when validated, naming job_mem.
        let err = match ClusterSpec::from_yaml(
            &format!("name: demo\nbackend: {{kind: slurm, job_mem: {bad}}}"),
            None,
        ) {
            Ok(s) => invalid(&s),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("job_mem"), "{bad}: {err}");
    }
}

#[test]
fn skips_written_for_dask_jobqueue_remove_what_they_meant() {
    let s = slurm(
        ", account: proj42, queue: debug, walltime: '01:00:00', job_directives_skip: ['-A', '-n 1', '-p']",
    );
    let lines = directive_lines(&s);
    assert!(
        !lines.iter().any(|l| l.starts_with("--account")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("--ntasks")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("--partition")),
        "{lines:?}"
    );
    assert!(lines.contains(&"--time=01:00:00".to_string()));
    // muster's own spelling works too, and extra directives are never skipped.
    let s = slurm(", job_directives_skip: ['--mem'], job_extra_directives: ['--mem-per-cpu=1G']");
    let lines = directive_lines(&s);
    assert!(!lines.iter().any(|l| l.starts_with("--mem=")), "{lines:?}");
    assert!(lines.contains(&"--mem-per-cpu=1G".to_string()));
}

#[test]
fn a_skip_of_the_job_name_or_output_is_refused_naming_it() {
    for skip in ["-J", "--job-name", "-o", "--error"] {
        let s = slurm(&format!(", job_directives_skip: ['{skip}']"));
        let b = backend(&s, FakeRunner::default(), std::path::Path::new("/h"));
        let err = b.render(&workers(1)).unwrap_err().to_string();
        assert!(
            err.contains("backend.job_directives_skip[0]"),
            "{skip}: {err}"
        );
    }
}

#[test]
fn the_prologue_runs_without_set_e() {
    let s = slurm(", job_script_prologue: ['module load python']");
    let text = render(&s, workers(1));
    let set_plus = text.find("set +e").unwrap();
    assert!(
        set_plus < text.find("module load python").unwrap(),
        "{text}"
    );
}

#[test]
fn unlimited_walltime_for_slurm_only() {
    assert!(
        directive_lines(&slurm(", walltime: UNLIMITED")).contains(&"--time=UNLIMITED".to_string())
    );
    let pbs = ClusterSpec::from_yaml(
        "name: demo\nbackend: {kind: pbs, walltime: UNLIMITED}",
        None,
    )
    .unwrap();
    assert!(invalid(&pbs).contains("backend.walltime"));
}

#[test]
fn no_nanny_with_several_processes_is_refused_before_submission() {
    let s = ClusterSpec::from_yaml(
        "name: demo\nbackend: {kind: slurm}\nworker: {cores: 2, memory: 1GiB, nanny: false, processes: 2}",
        None,
    )
    .unwrap();
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("worker.nanny")
    );
}

#[test]
fn the_job_scheduler_uses_the_workers_interface() {
    let s = spec(
        "name: demo\nbackend: {kind: slurm}\nscheduler: {placement: job}\nworker: {interface: ib0}",
    );
    let text = render(&s, Role::Scheduler);
    assert!(text.contains("'--interface' 'ib0'"), "{text}");
    assert!(!text.contains("'--host'"), "{text}");
    // An explicit scheduler host wins.
    let s = spec(
        "name: demo\nbackend: {kind: slurm}\nscheduler: {placement: job, host: 10.0.0.5}\nworker: {interface: ib0}",
    );
    assert!(render(&s, Role::Scheduler).contains("'--host' '10.0.0.5'"));
}

#[test]
fn the_dask_config_keys_dask_jobqueue_reads() {
    let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "jobqueue: {slurm: {header-skip: ['-A'], name: my-worker, walltime: UNLIMITED, memory: 4e9, death-timeout: 1.5, job-mem: 8000}}",
    )
    .unwrap();
    let mut s = ClusterSpec::from_yaml("name: demo\nbackend: {kind: slurm}", None).unwrap();
    crate::jobqueue::apply(&mut s, &crate::jobqueue::section(&[cfg], "slurm"));
    s.validate().unwrap();
    let h = &crate::HpcSpec::of(&s).unwrap();
    assert_eq!(h.job_directives_skip, ["-A"]);
    assert_eq!(h.job_name.as_deref(), Some("my-worker"));
    assert_eq!(h.walltime.as_deref(), Some("UNLIMITED"));
    assert_eq!(h.job_mem.as_ref().map(|m| m.0.as_str()), Some("8000"));
    assert_eq!(s.worker.memory, Some(muster_core::Memory(4_000_000_000)));
    assert_eq!(
        s.worker.death_timeout.duration(),
        std::time::Duration::from_millis(1500)
    );
}

#[test]
fn pbs_account_falls_back_to_pbs_account() {
    let mut s = ClusterSpec::from_yaml("name: demo\nbackend: {kind: pbs}", None).unwrap();
    assert!(crate::jobqueue::pbs_account_fallback(
        &mut s,
        Some("proj7".into())
    ));
    let h = &crate::HpcSpec::of(&s).unwrap();
    assert_eq!(h.account.as_deref(), Some("proj7"));
    let mut s =
        ClusterSpec::from_yaml("name: demo\nbackend: {kind: pbs, account: mine}", None).unwrap();
    assert!(!crate::jobqueue::pbs_account_fallback(
        &mut s,
        Some("proj7".into())
    ));
}

#[test]
fn death_timeout_and_memory_as_dask_writes_them_in_a_spec() {
    let s = ClusterSpec::from_yaml(
        "name: demo\nworker: {death_timeout: 1.5, memory: 4e9}",
        None,
    )
    .unwrap();
    assert_eq!(
        s.worker.death_timeout.duration(),
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(s.worker.memory, Some(muster_core::Memory(4_000_000_000)));
}
