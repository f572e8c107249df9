//! Unit tests of the backend's I/O layer over a fake `CommandRunner` that
//! replays recorded outputs, and snapshot tests of rendered job scripts.

use std::sync::Mutex;

use muster_core::backend::SchedulerContact;
use std::path::PathBuf;

use async_trait::async_trait;
use muster_core::backend::Backend;
use muster_core::{CommandOutput, CommandSpec, JobStatus};

use super::*;

/// Replays canned outputs of the batch commands by program name and records
/// their argvs; the file operations (see `files`) run for real on this
/// machine, recorded apart.
#[derive(Default)]
struct FakeRunner {
    replies: Mutex<Vec<(String, CommandOutput)>>,
    calls: Mutex<Vec<Vec<String>>>,
    file_ops: Mutex<Vec<Vec<String>>>,
    stdin: Mutex<Vec<String>>,
}

/// The programs `files` builds argvs for.
const FILE_TOOLS: [&str; 6] = ["cat", "mkdir", "sh", "rm", "grep", "touch"];

impl FakeRunner {
    fn reply(self, program: &str, code: i32, stdout: &str) -> Self {
        self.replies.lock().unwrap().push((
            program.to_string(),
            CommandOutput {
                code,
                stdout: stdout.to_string(),
                stderr: String::new(),
            },
        ));
        self
    }
}

#[async_trait]
impl CommandRunner for FakeRunner {
    async fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput> {
        if FILE_TOOLS.contains(&cmd.program()) {
            self.file_ops.lock().unwrap().push(cmd.argv.clone());
            return LocalRunner.run(cmd).await;
        }
        self.calls.lock().unwrap().push(cmd.argv.clone());
        if let Some(s) = &cmd.stdin {
            self.stdin
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(s).into_owned());
        }
        let mut replies = self.replies.lock().unwrap();
        let pos = replies
            .iter()
            .position(|(p, _)| p == cmd.program())
            .unwrap_or_else(|| panic!("unexpected command {:?}", cmd.argv));
        // The last reply for a program repeats.
        let count = replies.iter().filter(|(p, _)| p == cmd.program()).count();
        Ok(if count > 1 {
            replies.remove(pos).1
        } else {
            replies[pos].1.clone()
        })
    }
}

fn spec(yaml: &str) -> ClusterSpec {
    let mut s = ClusterSpec::from_yaml(yaml, None).unwrap();
    s.worker.memory.get_or_insert(muster_core::Memory(1 << 30));
    s.validate().unwrap();
    s
}

fn backend<R: CommandRunner>(
    spec: &ClusterSpec,
    runner: R,
    home: &std::path::Path,
) -> HpcBackend<R> {
    if home.exists() && spec.scheduler.security.is_tls() {
        // What `up` makes before anything is launched.
        muster_core::tls::create(&Home::at(home), &spec.name).unwrap();
    }
    HpcBackend::for_spec_with(spec, Home::at(home), runner, Arc::new(Direct))
        .unwrap()
        .with_user(Some("alice".into()))
        .with_home_tag(TAG)
}

/// A home tag pinned for every test home, so tests do not depend on where
/// their temporary home is.
const TAG: &str = "c4591508";

fn workers(count: u32) -> Role {
    Role::Workers {
        first_index: 0,
        count,
        contact: SchedulerContact::File(
            "/home/alice/.local/state/muster/clusters/demo/scheduler.json".into(),
        ),
    }
}

fn render(spec: &ClusterSpec, role: Role) -> String {
    let b = backend(
        spec,
        FakeRunner::default(),
        std::path::Path::new("/home/alice/.local/state/muster"),
    );
    b.render(&role)
        .unwrap()
        .items
        .iter()
        .map(|i| format!("# === {}\n{}", i.title, i.text))
        .collect()
}

const HOSTILE: &str = r#"
name: demo
backend:
  kind: KIND
  queue: debug
  account: proj-42
  walltime: "01:30:00"
  job_extra_directives: ["--comment=$(touch /tmp/pwned) `id` 'q' \"dq\""]
  job_directives_skip: ["--ntasks"]
  job_script_prologue: ["module load python/3.12", "export NOTE=\"$(hostname)\""]
  log_directory: /scratch/alice/logs
worker:
  cores: 4
  processes: 2
  memory: 4GiB
  python: "/opt/my env/bin/python"
  env: {EVIL: "$(touch /tmp/pwned); `id` 'x' \"y\"\nsecond line"}
  extra_args: ["--resources", "GPU=1;reboot `id`"]
  interface: ib0
  local_directory: "/tmp/dask $USER"
  death_timeout: 2m
"#;

#[test]
fn slurm_worker_script_with_hostile_values() {
    let s = spec(&HOSTILE.replace("KIND", "slurm"));
    insta::assert_snapshot!(render(&s, workers(4)));
}

#[test]
fn pbs_worker_script_with_hostile_values() {
    let s = spec(&HOSTILE.replace("KIND", "pbs"));
    insta::assert_snapshot!(render(&s, workers(3)));
}

#[test]
fn pbspro_worker_script() {
    let s = spec(
        "name: demo\nbackend: {kind: pbs, flavor: pbspro, queue: workq}\nworker: {cores: 2, memory: 2GiB}",
    );
    insta::assert_snapshot!(render(&s, workers(2)));
}

#[test]
fn slurm_scheduler_job_script() {
    let s = spec(
        "name: demo\nbackend: {kind: slurm, walltime: '12:00:00'}\nscheduler: {placement: job, env: {TOKEN: \"a'b\"}}",
    );
    insta::assert_snapshot!(render(&s, Role::Scheduler));
}

#[test]
fn host_placement_renders_a_detached_process() {
    let s = spec("name: demo\nbackend: {kind: slurm}");
    let text = render(&s, Role::Scheduler);
    assert!(text.contains("--host 0.0.0.0"), "{text}");
    assert!(!text.contains("#SBATCH"), "{text}");
}

#[test]
fn a_host_scheduler_publishes_its_file_in_the_shared_log_directory() {
    // Compute nodes may not share $MUSTER_HOME: the workers' contact (the
    // cluster's scheduler_file) and the scheduler's --scheduler-file are the
    // shared log directory's, as for a job-placed scheduler.
    let s = spec("name: demo\nbackend: {kind: slurm, log_directory: /scratch/a/logs/}");
    let b = backend(
        &s,
        FakeRunner::default(),
        std::path::Path::new("/home/a/.m"),
    );
    let file = std::path::PathBuf::from("/scratch/a/logs/demo/scheduler.json");
    let contact = |b: &HpcBackend<FakeRunner>| b.render(&Role::Scheduler).unwrap().contact;
    assert_eq!(contact(&b), Some(SchedulerContact::File(file)));
    let text = render(&s, Role::Scheduler);
    assert!(
        text.contains("--scheduler-file /scratch/a/logs/demo/scheduler.json"),
        "{text}"
    );
    // Without a log directory the jobs' output and the file stay in the home.
    let s = spec("name: demo\nbackend: {kind: slurm}");
    let b = backend(
        &s,
        FakeRunner::default(),
        std::path::Path::new("/home/a/.m"),
    );
    assert_eq!(
        contact(&b),
        Some(SchedulerContact::File(
            "/home/a/.m/clusters/demo/scheduler.json".into()
        ))
    );
}

#[test]
fn a_user_template_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("t.sh");
    fs::write(
        &good,
        "#!/bin/sh\n{{directives}}\n# site header\n{{identity}}\n{{command}}\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.sh");
    fs::write(&bad, "#!/bin/sh\necho nothing\n").unwrap();
    let s = spec(&format!(
        "name: demo\nbackend: {{kind: slurm, template: {}}}",
        good.display()
    ));
    let text = render(&s, workers(1));
    assert!(text.contains("# site header\nMUSTER_TASK="), "{text}");
    let s = spec(&format!(
        "name: demo\nbackend: {{kind: slurm, template: {}}}",
        bad.display()
    ));
    let b = backend(&s, FakeRunner::default(), dir.path());
    let err = b.render(&workers(1)).unwrap_err();
    assert!(err.to_string().contains("{{command}}"), "{err}");
}

#[tokio::test]
async fn k_workers_are_one_array_submission() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("name: demo\nbackend: {kind: slurm}");
    let runner = FakeRunner::default().reply("sbatch", 0, "41\n");
    let b = backend(&s, runner, dir.path());
    let ids = b.launch(&workers(4)).await.unwrap().jobs;
    assert_eq!(
        ids,
        ["demo-41_0", "demo-41_1", "demo-41_2", "demo-41_3"].map(JobId::from)
    );
    let calls = b.runner.calls.lock().unwrap().clone();
    assert_eq!(calls, vec![vec!["sbatch", "--parsable", "--array=0-3"]]);
    let script = b.runner.stdin.lock().unwrap()[0].clone();
    assert!(
        script.contains("#SBATCH --job-name=muster_demo_sc4591508_w"),
        "{script}"
    );
}

#[tokio::test]
async fn one_listing_serves_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("name: demo\nbackend: {kind: slurm}");
    let listing = "41_[2-3]|41|2-3|41|PENDING|Resources|muster_demo_sc4591508_w\n\
                   41_0|41|0|42|RUNNING|None|muster_demo_sc4591508_w\n\
                   41_1|41|1|43|FAILED|NonZeroExitCode|muster_demo_sc4591508_w\n\
                   50|50|N/A|50|RUNNING|None|muster_other_sc4591508_w\n\
                   60|60|N/A|60|RUNNING|None|muster_demo_s0badbad_w\n\
                   61|61|N/A|61|RUNNING|None|muster_demo_pc4591508_w\n";
    let b = backend(
        &s,
        FakeRunner::default().reply("squeue", 0, listing),
        dir.path(),
    );
    let ids: Vec<JobId> = ["demo-41_0", "demo-41_1", "41_2", "demo-41_3", "demo-41_9"]
        .map(JobId::from)
        .to_vec();
    let st = b.status(&ids).await.unwrap();
    assert_eq!(b.runner.calls.lock().unwrap().len(), 1);
    assert_eq!(st[&ids[0]], JobStatus::Running);
    let JobStatus::Failed { reason } = &st[&ids[1]] else {
        panic!("{st:?}")
    };
    assert!(
        reason.starts_with("FAILED (NonZeroExitCode); stderr: "),
        "{reason}"
    );
    assert!(reason.ends_with("/clusters/demo/logs/41_1.err"), "{reason}");
    assert_eq!(st[&ids[2]], JobStatus::Pending);
    assert_eq!(st[&ids[3]], JobStatus::Pending);
    assert_eq!(st[&ids[4]], JobStatus::Unknown);
    assert_eq!(
        b.runner.calls.lock().unwrap()[0],
        [
            "squeue",
            "--noheader",
            "--states=all",
            "--format=%i|%F|%K|%A|%T|%r|%j",
            "--user=alice"
        ]
    );

    // Discovery: only this cluster's active jobs (not another home's cluster
    // of the same name, nor a PBS one), pending tasks expanded.
    let found: Vec<String> = b
        .discover()
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(found, ["demo-41_0", "demo-41_2", "demo-41_3"]);
}

#[tokio::test]
async fn the_queued_cap_refuses_a_scale_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("name: demo\nbackend: {kind: slurm, max_queued_jobs: 5}");
    let listing = "41_[2-4]|41|2-4|41|PENDING|Resources|muster_demo_sc4591508_w\n";
    let b = backend(
        &s,
        FakeRunner::default().reply("squeue", 0, listing),
        dir.path(),
    );
    let err = b.launch(&workers(3)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("max_queued_jobs is 5: 3 worker jobs are queued"),
        "{err}"
    );
    assert!(
        b.runner
            .calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c[0] != "sbatch")
    );
}

#[tokio::test]
async fn cancel_names_exactly_the_tasks_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("name: demo\nbackend: {kind: slurm}");
    let before =
        "41_0|41|0|42|RUNNING|None|muster_demo_w\n41_1|41|1|43|RUNNING|None|muster_demo_w\n";
    let after =
        "41_0|41|0|42|RUNNING|None|muster_demo_w\n41_1|41|1|43|CANCELLED|None|muster_demo_w\n";
    let runner = FakeRunner::default()
        .reply("squeue", 0, before)
        .reply("squeue", 0, before)
        .reply("squeue", 0, after)
        .reply("scancel", 0, "");
    let b = backend(&s, runner, dir.path());
    b.cancel(&[JobId::from("41_1")]).await.unwrap();
    let calls = b.runner.calls.lock().unwrap().clone();
    let programs: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(programs, ["squeue", "scancel", "squeue", "squeue"]);
    assert_eq!(calls[1], ["scancel", "41_1"]);
}

#[tokio::test]
async fn pbs_wrapper_tasks_cancel_by_recorded_id_or_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("name: demo\nbackend: {kind: pbs}");
    let b0 = backend(&s, FakeRunner::default(), dir.path());
    let ids_dir = PathBuf::from(b0.log_dir("demo")).join("ids");
    fs::create_dir_all(&ids_dir).unwrap();
    fs::write(ids_dir.join("16[0]"), "19\n").unwrap();
    fs::write(ids_dir.join("16[2]"), "16\n").unwrap();
    let listing = "Job Id:\t19\n\tJob_Name = muster_demo_w\n\tjob_state = C\n\n\
                   Job Id:\t16\n\tJob_Name = muster_demo_w\n\tjob_state = R\n";
    // 16[2] (listed as 16, the array's own id) ends by itself after retirement.
    let gone = "Job Id:\t16\n\tJob_Name = muster_demo_w\n\tjob_state = C\n";
    let runner = FakeRunner::default()
        .reply("qstat", 0, listing)
        .reply("qstat", 0, gone)
        .reply("qdel", 0, "");
    let b = backend(&s, runner, dir.path());
    let ids = ["demo-16[0]", "demo-16[1]", "demo-16[2]"].map(JobId::from);
    b.cancel(&ids).await.unwrap();
    let calls = b.runner.calls.lock().unwrap().clone();
    let qdels: Vec<_> = calls.iter().filter(|c| c[0] == "qdel").collect();
    assert!(qdels.is_empty(), "{calls:?}");
    assert!(
        PathBuf::from(b.log_dir("demo"))
            .join("cancelled/16[1]")
            .exists()
    );

    // `down` passes the raw ids it discovered: the wrapper can only delete
    // the whole array, by the array's id.
    let runner = FakeRunner::default()
        .reply("qstat", 0, listing)
        .reply("qstat", 0, "")
        .reply("qdel", 0, "");
    let b = backend(&s, runner, dir.path());
    b.cancel(&["demo-19", "demo-16"].map(JobId::from))
        .await
        .unwrap();
    let calls = b.runner.calls.lock().unwrap().clone();
    assert!(
        calls.contains(&vec!["qdel".to_string(), "16".to_string()]),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_rejected_submission_reports_the_batch_systems_words() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("name: demo\nbackend: {kind: pbs}");
    let runner = FakeRunner::default().reply(
        "qsub",
        1,
        "qsub: error: Memory specification can not be satisfied\n",
    );
    let b = backend(&s, runner, dir.path());
    let err = b.launch(&workers(2)).await.unwrap_err();
    assert!(err.to_string().contains("Memory specification"), "{err}");
}

mod jobqueue_fidelity;

/// A fixture recorded from the test SLURM (tests/services/slurm/fixtures,
/// see COMMANDS.txt there).
fn recorded(name: &str) -> String {
    let path = format!(
        "{}/../../tests/services/slurm/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_homes_clusters_are_found_in_the_queue_by_its_tag_only() {
    // Recorded 2026-12-02 from the test SLURM 22.05.8 with two homes:
    // A (tag 3207fde7: rec-slurm by sbatch, rec-pbs by qsub) and B (tag
    // ca4fa2c8: a rec-slurm of its own), plus an untagged job named like
    // an old muster job and a job that is not muster's.
    let dir = tempfile::tempdir().unwrap();
    let slurm = |tag| {
        backend(
            &spec("name: listing\nbackend: {kind: slurm}"),
            FakeRunner::default(),
            dir.path(),
        )
        .with_home_tag(tag)
    };
    let squeue = crate::dialect::Dialect::Slurm
        .parse_status(&recorded("squeue-two-homes.txt"))
        .unwrap();
    let ids = |v: &[&str]| v.iter().map(|s| JobId::from(*s)).collect::<Vec<_>>();
    assert_eq!(
        slurm("3207fde7").clusters_in(&squeue),
        [(
            "rec-slurm".to_string(),
            ids(&["rec-slurm-1184_0", "rec-slurm-1184_1"])
        )]
        .into()
    );
    assert_eq!(
        slurm("ca4fa2c8").clusters_in(&squeue),
        [(
            "rec-slurm".to_string(),
            ids(&["rec-slurm-1188_0", "rec-slurm-1188_1"])
        )]
        .into()
    );
    assert!(slurm("00000000").clusters_in(&squeue).is_empty());

    // The same queue through SLURM's Torque-compatible qstat -f: only the
    // jobs qsub submitted for home A.
    let pbs = backend(
        &spec("name: listing\nbackend: {kind: pbs}"),
        FakeRunner::default(),
        dir.path(),
    )
    .with_home_tag("3207fde7");
    let qstat = crate::dialect::Dialect::Pbs(crate::PbsFlavor::Torque)
        .parse_status(&recorded("qstat-f-two-homes.txt"))
        .unwrap();
    assert_eq!(qstat.len(), 8);
    assert_eq!(
        pbs.clusters_in(&qstat),
        [(
            "rec-pbs".to_string(),
            ids(&["rec-pbs-1186", "rec-pbs-1187"])
        )]
        .into()
    );
}

#[test]
fn job_names_carry_cluster_and_home() {
    use crate::script::{job_tag, parse_job_name};
    let tag = job_tag(crate::Dialect::Slurm, "3207fde7");
    assert_eq!(tag, "s3207fde7");
    let at = |name| parse_job_name(name, &tag);
    assert_eq!(at("muster_rec-slurm_s3207fde7_w"), Some("rec-slurm"));
    assert_eq!(at("muster_demo_s3207fde7_my_word"), Some("demo"));
    assert_eq!(at("muster_demo_s3207fde7_"), None);
    assert_eq!(at("muster_demo_sca4fa2c8_w"), None);
    assert_eq!(at("muster_demo_p3207fde7_w"), None);
    assert_eq!(at("muster_demo_w"), None);
    assert_eq!(at("muster_Bad_s3207fde7_w"), None);
    assert_eq!(at("analysis"), None);
}
