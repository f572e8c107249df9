//! Tests of the dialects' parsers over outputs recorded from the real
//! SLURM and its Torque-compatible commands (`tests/services/slurm/fixtures`,
//! with their provenance) and hand-written ones in real PBS formats (`fixtures/`),
//! and snapshots of the argv each dialect builds.

use super::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../tests/services/slurm/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hand(name: &str) -> String {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const TORQUE: Dialect = Dialect::Pbs(PbsFlavor::Torque);
const PRO: Dialect = Dialect::Pbs(PbsFlavor::Pbspro);

#[test]
fn submit_outputs_parse() {
    let s = Dialect::Slurm;
    assert_eq!(
        s.parse_submit(&fixture("sbatch-parsable-plain.txt"))
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        s.parse_submit(&fixture("sbatch-parsable-array.txt"))
            .as_deref(),
        Some("7")
    );
    assert_eq!(
        s.parse_submit(&fixture("sbatch-plain-no-parsable.txt"))
            .as_deref(),
        Some("2")
    );
    assert_eq!(s.parse_submit("31;other-cluster\n").as_deref(), Some("31"));
    assert_eq!(
        TORQUE.parse_submit(&fixture("qsub-array-J.txt")).as_deref(),
        Some("16")
    );
    assert_eq!(
        TORQUE
            .parse_submit("1234.pbs-server.example.org\n")
            .as_deref(),
        Some("1234")
    );
    assert_eq!(
        PRO.parse_submit(&hand("pbspro-qsub-array.txt")).as_deref(),
        Some("1234")
    );
    assert_eq!(s.parse_submit(""), None);
    assert_eq!(
        s.parse_submit("sbatch: error: Batch job submission failed"),
        None
    );
}

#[test]
fn ids_split_per_dialect() {
    assert_eq!(Dialect::Slurm.split_id("7_3"), Some(("7", Some(3))));
    assert_eq!(Dialect::Slurm.split_id("8"), Some(("8", None)));
    assert_eq!(Dialect::Slurm.split_id("demo-scheduler"), None);
    assert_eq!(TORQUE.split_id("16[2]"), Some(("16", Some(2))));
    assert_eq!(TORQUE.split_id("16_2"), None);
}

#[test]
fn task_lists() {
    assert_eq!(parse_task_list("0-3").unwrap().len(), 4);
    assert_eq!(
        parse_task_list("2-5%2")
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(
        parse_task_list("1,3,5-6")
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![1, 3, 5, 6]
    );
    assert_eq!(parse_task_list("x"), None);
}

#[test]
fn squeue_states_resolve() {
    let s = Dialect::Slurm;
    let none = BTreeMap::new();
    let all = parse_squeue(&fixture("squeue-all-states.txt"));
    assert_eq!(resolve(s, &all, &none, "7_2"), JobStatus::Pending);
    assert_eq!(resolve(s, &all, &none, "1"), JobStatus::Running);
    assert_eq!(resolve(s, &all, &none, "4"), JobStatus::Finished);
    assert_eq!(
        resolve(s, &all, &none, "3"),
        JobStatus::Failed {
            reason: "FAILED (NonZeroExitCode)".into()
        }
    );
    assert_eq!(resolve(s, &all, &none, "5"), JobStatus::Pending);
    assert_eq!(resolve(s, &all, &none, "7_9"), JobStatus::Unknown);
    assert_eq!(resolve(s, &all, &none, "99"), JobStatus::Unknown);

    let running = parse_squeue(&fixture("squeue-array-running.txt"));
    for i in 0..4 {
        assert_eq!(
            resolve(s, &running, &none, &format!("7_{i}")),
            JobStatus::Running
        );
    }
    assert_eq!(running[1].server_id, "7_2");

    let throttled = parse_squeue(&fixture("squeue-array-throttled.txt"));
    assert!(
        throttled
            .iter()
            .any(|e| matches!(&e.tasks, Tasks::Many(t) if t.contains(&5)))
    );
    let pending = parse_squeue(&fixture("squeue-array-pending.txt"));
    assert_eq!(pending[0].server_id, "7_[0-3]");
    let cancelled = parse_squeue(&fixture("squeue-array-one-task-cancelled.txt"));
    assert!(cancelled.iter().any(|e| e.status == JobStatus::Finished));
}

#[test]
fn qstat_f_blocks_parse() {
    let running = parse_qstat_f(&fixture("qstat-f-running.txt"));
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].server_id, "14");
    assert_eq!(running[0].name, "muster-pbs-demo");
    assert_eq!(running[0].status, JobStatus::Running);
    // SLURM's wrapper has no exit status: a failed job is just C.
    let failed = parse_qstat_f(&fixture("qstat-f-failed.txt"));
    assert_eq!(failed[0].status, JobStatus::Finished);

    // Real TORQUE (hand-written, see fixtures/README.md).
    let real = parse_qstat_f(&hand("torque-qstat-f-t.txt"));
    let none = BTreeMap::new();
    assert_eq!(real.len(), 4, "{real:?}");
    assert_eq!(resolve(TORQUE, &real, &none, "1234[0]"), JobStatus::Running);
    assert_eq!(resolve(TORQUE, &real, &none, "1234[1]"), JobStatus::Pending);
    assert_eq!(
        resolve(TORQUE, &real, &none, "1234[2]"),
        JobStatus::Failed {
            reason: "exit status 3".into()
        }
    );
    assert_eq!(resolve(TORQUE, &real, &none, "1235"), JobStatus::Running);
    assert_eq!(real[3].name, "muster_demo_scheduler");
}

#[test]
fn wrapper_array_tasks_resolve_through_recorded_ids() {
    // qstat under SLURM's wrappers lists tasks 16[0..2] as 19, 20, 16.
    let entries = vec![
        QueueEntry {
            array: "19".into(),
            tasks: Tasks::NotArray,
            server_id: "19".into(),
            status: JobStatus::Running,
            name: "muster_demo_w".into(),
        },
        QueueEntry {
            array: "16".into(),
            tasks: Tasks::NotArray,
            server_id: "16".into(),
            status: JobStatus::Pending,
            name: "muster_demo_w".into(),
        },
    ];
    let ids: BTreeMap<String, String> = [
        ("16[0]".to_string(), "19".to_string()),
        ("16[1]".into(), "20".into()),
    ]
    .into();
    assert_eq!(resolve(TORQUE, &entries, &ids, "16[0]"), JobStatus::Running);
    assert_eq!(
        resolve(TORQUE, &entries, &ids, "16[1]"),
        JobStatus::Finished
    );
    assert_eq!(resolve(TORQUE, &entries, &ids, "16[2]"), JobStatus::Pending);
    assert_eq!(resolve(TORQUE, &entries, &ids, "17[0]"), JobStatus::Unknown);
}

#[test]
fn pbspro_json_parses() {
    let entries = parse_qstat_json(&hand("pbspro-qstat-f-F-json.json")).unwrap();
    let none = BTreeMap::new();
    assert_eq!(resolve(PRO, &entries, &none, "1234[0]"), JobStatus::Running);
    assert_eq!(resolve(PRO, &entries, &none, "1234[1]"), JobStatus::Pending);
    assert_eq!(
        resolve(PRO, &entries, &none, "1234[2]"),
        JobStatus::Finished
    );
    assert_eq!(
        resolve(PRO, &entries, &none, "1234[3]"),
        JobStatus::Failed {
            reason: "exit status 1".into()
        }
    );
    assert_eq!(resolve(PRO, &entries, &none, "1230"), JobStatus::Running);
    assert!(parse_qstat_json("").unwrap().is_empty());
    assert!(parse_qstat_json("{not json").is_err());
}

#[test]
fn argv_snapshots() {
    insta::assert_debug_snapshot!((
        Dialect::Slurm.submit_argv(Some(4), "/l/s.sh", "/l"),
        Dialect::Slurm.status_argv(Some("alice")),
        Dialect::Slurm.cancel_argv(&["7_1".into(), "7_[2-3]".into()]),
        TORQUE.submit_argv(Some(4), "/l/scripts/w.sh", "/l"),
        PRO.submit_argv(None, "/l/scripts/s.sh", "/l"),
        TORQUE.status_argv(None),
        PRO.status_argv(None),
        TORQUE.cancel_argv(&["19".into()]),
    ));
}
