//! Snapshot tests of every output (kept in one module so the snapshot names,
//! `muster__output__tests__*`, stay what they were before the split).

use std::time::Duration;

use muster::adaptive::{AgentHealth, Event};
use muster::{AdaptSpec, ClusterRecord, ClusterStatus, DownReport};

use super::*;
use crate::cli::Output;
use crate::unrecorded::Unrecorded;
use muster::{ClusterSpec, JobId, JobStatus, Phase, WorkerRow};

/// A fixed "now" so ages in snapshots never drift.
const NOW: u64 = 1_800_000_000;

fn record(name: &str, workers: u32) -> ClusterRecord {
    let spec = ClusterSpec::from_yaml(&format!("name: {name}\nworkers: {workers}"), None).unwrap();
    let mut r = ClusterRecord::new(spec);
    r.phase = Phase::Running;
    r.created_at = NOW - 125;
    r.scheduler_job = Some(JobId(format!("{name}-scheduler")));
    r.scheduler_address = Some("tcp://127.0.0.1:40001".into());
    r.http_url = Some("http://127.0.0.1:40002".into());
    r
}

fn status() -> ClusterStatus {
    ClusterStatus {
        name: "demo".into(),
        backend: "local".into(),
        phase: Phase::Running,
        age_seconds: 3700,
        scheduler: Some((JobId::from("demo-scheduler"), JobStatus::Running)),
        scheduler_address: Some("tcp://127.0.0.1:40001".into()),
        dashboard_url: Some("http://127.0.0.1:40002/status".into()),
        scheduler_reachable: true,
        desired_workers: 3,
        processes_per_worker: 1,
        connected_workers: 1,
        workers: vec![
            WorkerRow {
                name: "demo-w0".into(),
                status: JobStatus::Running,
                connected: 1,
                addresses: vec!["tcp://127.0.0.1:41000".into()],
            },
            WorkerRow {
                name: "demo-w1".into(),
                status: JobStatus::Pending,
                connected: 0,
                addresses: vec![],
            },
            WorkerRow {
                name: "demo-w2".into(),
                status: JobStatus::Failed {
                    reason: "exited with code 1; log: /x/demo-w2.log".into(),
                },
                connected: 0,
                addresses: vec![],
            },
        ],
        unknown_workers: vec![],
    }
}

#[test]
fn ages() {
    assert_eq!(age(Duration::from_secs(5)), "5s");
    assert_eq!(age(Duration::from_secs(125)), "2m");
    assert_eq!(age(Duration::from_secs(7300)), "2h");
    assert_eq!(age(Duration::from_secs(200_000)), "2d");
}

fn rows<'a>(rs: &'a [ClusterRecord], st: &'a [Option<ClusterStatus>]) -> Vec<ClusterRow<'a>> {
    rs.iter()
        .zip(st)
        .map(|(record, status)| ClusterRow {
            record,
            status: status.as_ref(),
        })
        .collect()
}

#[test]
fn cluster_listings() {
    let rs = [record("alpha", 2), record("beta", 0), record("gamma", 3)];
    // alpha: looked at, 1 of 2 ready; beta: could not be looked at; gamma:
    // its scheduler died, so it is Failed whatever the record says.
    let mut alpha = status();
    alpha.desired_workers = 2;
    let mut gamma = status();
    gamma.scheduler = Some((
        JobId::from("gamma-scheduler"),
        JobStatus::Failed {
            reason: "killed by signal 9".into(),
        },
    ));
    let st = [Some(alpha), None, Some(gamma)];
    let lost = [
        Unrecorded {
            name: "orphan".into(),
            on_host: vec!["orphan-scheduler".into()],
            queued: [
                ("pbs", vec!["orphan-12[0]".into()]),
                ("slurm", vec!["orphan-11_0".into(), "orphan-11_1".into()]),
            ]
            .into(),
        },
        Unrecorded {
            name: "stray".into(),
            on_host: vec!["stray-scheduler".into(), "stray-w0".into()],
            queued: Default::default(),
        },
    ];
    let r = rows(&rs, &st);
    insta::assert_snapshot!("clusters_table", clusters(&r, &lost, NOW, Output::Table));
    insta::assert_snapshot!("clusters_wide", clusters(&r, &lost, NOW, Output::Wide));
    insta::assert_snapshot!("clusters_json", clusters(&r, &lost, NOW, Output::Json));
    insta::assert_snapshot!("clusters_name", clusters(&r, &lost, NOW, Output::Name));
    assert_eq!(clusters(&[], &[], NOW, Output::Table), "No clusters.\n");
    assert_eq!(
        clusters(&[], &[], NOW, Output::Json),
        "{\n  \"schema\": \"muster/v1\",\n  \"kind\": \"ClusterList\",\n  \"items\": []\n}\n"
    );
}

#[test]
fn get_and_describe_speak_one_vocabulary() {
    let s = status();
    let r = record("demo", 3);
    let d: serde_json::Value =
        serde_json::from_str(&describe(&s, &r, "/s", None, Output::Json)).unwrap();
    let rs = [r.clone()];
    let st = [Some(s.clone())];
    let l: serde_json::Value =
        serde_json::from_str(&clusters(&rows(&rs, &st), &[], NOW, Output::Json)).unwrap();
    let w: serde_json::Value = serde_json::from_str(&workers(&s, Output::Json)).unwrap();
    assert_eq!(d["phase"], l["items"][0]["phase"]);
    assert_eq!(d["phase"], "Running");
    assert_eq!(d["workers"], w["items"]);
    assert_eq!(d["scheduler"]["job"], "demo-scheduler");
    assert_eq!(d["scheduler"]["status"], "Running");
    assert_eq!(d["created"], "2027-01-15T07:57:55Z");
    assert_eq!(d["ready_workers"], 1);
}

#[test]
fn worker_listings() {
    let s = status();
    insta::assert_snapshot!("workers_table", workers(&s, Output::Table));
    insta::assert_snapshot!("workers_wide", workers(&s, Output::Wide));
    insta::assert_snapshot!("workers_yaml", workers(&s, Output::Yaml));
    insta::assert_snapshot!("workers_json", workers(&s, Output::Json));
    insta::assert_snapshot!("workers_name", workers(&s, Output::Name));
}

#[test]
fn describe_report() {
    let s = status();
    let r = record("demo", 3);
    insta::assert_snapshot!(describe(
        &s,
        &r,
        "/state/clusters/demo",
        None,
        Output::Table
    ));
    insta::assert_snapshot!(
        "describe_json",
        describe(&s, &r, "/state/clusters/demo", None, Output::Json)
    );
}

fn timeline() -> Vec<Event> {
    let ev = |time: f64, kind: &str, message: &str| Event {
        time,
        kind: kind.into(),
        message: message.into(),
    };
    vec![
        ev(
            1_790_000_000.0,
            "adapt",
            "adaptive scaling on: 0 to 6 worker jobs",
        ),
        ev(1_790_000_000.2, "agent", "agent started (pid 4242)"),
        ev(
            1_790_000_030.5,
            "scale-up",
            "target 20 > 0 workers: launching 6",
        ),
        ev(
            1_790_000_030.6,
            "launched",
            "launched demo-w0, demo-w1, demo-w2, demo-w3, demo-w4, demo-w5",
        ),
        ev(
            1_790_000_051.0,
            "waiting",
            "target 2 < 6 workers: removing 4 if it stays lower for 5s",
        ),
        ev(
            1_790_000_056.0,
            "scale-down",
            "wanted at most 2 < 6 workers for the last 5s: retiring 4",
        ),
        ev(
            1_790_000_057.0,
            "launch-failed",
            "launching 1 failed: worker job demo-w9 failed:\nexited with code 1 `$(id)` \u{1b}[31m",
        ),
    ]
}

fn adaptive_record() -> ClusterRecord {
    let mut r = record("demo", 2);
    r.spec.adapt = Some(AdaptSpec {
        idle_timeout: Some(muster::Seconds::from_secs(3600)),
        ..AdaptSpec::new(0, 6)
    });
    r
}

#[test]
fn event_listings() {
    let evs = timeline();
    insta::assert_snapshot!("events_table", events(&evs, Output::Table));
    insta::assert_snapshot!("events_json", events(&evs[..2], Output::Json));
    assert_eq!(events(&[], Output::Table), "No events.\n");
    assert!(events(&[], Output::Json).contains("\"items\": []"));
}

#[test]
fn describe_with_a_running_agent() {
    let st = muster::adaptive::AgentState {
        pid: 4242,
        started_at: 1_790_000_000.0,
        heartbeat: 1_790_000_059.0,
        mode: None,
        paused: None,
        last_decision: Some("target 2: 2 workers is right".into()),
    };
    let view = AgentView::new(
        true,
        &AgentHealth::Running(st),
        None,
        &timeline(),
        1_790_000_060.0,
    );
    // A worker job that died on its own and was replaced stays listed.
    let mut rec = adaptive_record();
    rec.remember_ended([muster::EndedJob {
        id: JobId::from("demo-w0"),
        status: JobStatus::Failed {
            reason: "exit code 3\nlog: /state/clusters/demo/logs/demo-w0.log".into(),
        },
    }]);
    let text = describe(
        &status(),
        &rec,
        "/state/clusters/demo",
        Some(&view),
        Output::Table,
    );
    insta::assert_snapshot!("describe_adaptive", text);
    let json: serde_json::Value =
        serde_json::from_str(&describe(&status(), &rec, "/s", Some(&view), Output::Json)).unwrap();
    assert_eq!(json["agent"]["agent"], "running");
    assert_eq!(json["agent"]["pid"], 4242);
    assert_eq!(json["agent"]["events"].as_array().unwrap().len(), 7);
    assert_eq!(json["spec"]["adapt"]["maximum"], 6);
    assert_eq!(json["ended_workers"][0]["id"], "demo-w0");
    assert_eq!(json["ended_workers"][0]["status"]["state"], "failed");
}

#[test]
fn describe_with_a_dead_agent_restarted_and_paused() {
    let st = muster::adaptive::AgentState {
        pid: 4242,
        started_at: 1_790_000_000.0,
        heartbeat: 1_790_000_020.0,
        mode: None,
        paused: Some(
            "3 launches failed in a row (max_launch_failures 3); last: boom\nline two".into(),
        ),
        last_decision: None,
    };
    let view = AgentView::new(
        true,
        &AgentHealth::Dead(st),
        Some(5151),
        &[],
        1_790_000_200.0,
    );
    let text = describe(
        &status(),
        &record("demo", 3),
        "/state/clusters/demo",
        Some(&view),
        Output::Table,
    );
    let section: String = text
        .lines()
        .skip_while(|l| !l.starts_with("Scaling:"))
        .take_while(|l| !l.starts_with("Spec:"))
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("describe_dead_agent", section);
    let none = AgentView::new(false, &AgentHealth::Absent, None, &[], 0.0);
    assert_eq!(none.agent, "none");
    let absent = AgentView::new(true, &AgentHealth::Absent, Some(7), &[], 0.0);
    assert_eq!(absent.agent, "not started");
}

#[test]
fn adapt_messages() {
    let a = AdaptSpec::new(1, 8);
    insta::assert_snapshot!(
        "adapt_on",
        adapted("demo", Some(&a), 1, Some(4242), Output::Table)
    );
    insta::assert_snapshot!(
        "adapt_on_json",
        adapted("demo", Some(&a), 1, Some(4242), Output::Json)
    );
    insta::assert_snapshot!(
        "adapt_off",
        adapted("demo", None, 3, Some(4242), Output::Table)
    );
}

#[test]
fn log_listings() {
    let items = [
        LogItem {
            job: "demo-scheduler".into(),
            role: "scheduler",
            status: JobStatus::Running,
            text: "started\n".into(),
            error: None,
        },
        LogItem {
            job: "demo-w1".into(),
            role: "worker",
            status: JobStatus::Failed {
                reason: "exited with code 1".into(),
            },
            text: String::new(),
            error: Some("no such file".into()),
        },
    ];
    insta::assert_snapshot!("logs_json", logs(&items, Output::Json));
    insta::assert_snapshot!("logs_table", logs(&items, Output::Table));
}

#[test]
fn up_and_down_messages() {
    let item = UpItem {
        name: "demo",
        backend: "local",
        scheduler_address: Some("tcp://127.0.0.1:40001"),
        dashboard_url: Some("http://127.0.0.1:40002/status"),
        workers: 2,
        connected_workers: 2,
        tls: None,
    };
    insta::assert_snapshot!("up_table", up(&item, "up", Output::Table));
    insta::assert_snapshot!("up_json", up(&item, "up", Output::Json));
    let reports = [
        DownReport {
            name: "demo".into(),
            stopped: vec![JobId::from("demo-w0"), JobId::from("demo-scheduler")],
            existed: true,
            warnings: vec![],
        },
        DownReport {
            name: "gone".into(),
            stopped: vec![],
            existed: false,
            warnings: vec![],
        },
    ];
    insta::assert_snapshot!("down_table", down(&reports, None, Output::Table));
    insta::assert_snapshot!("down_json", down(&reports, None, Output::Json));
    insta::assert_snapshot!("down_name", down(&reports, None, Output::Name));
    insta::assert_snapshot!(
        "down_searched",
        down(&reports[1..], Some("this host's processes"), Output::Table)
    );
    insta::assert_snapshot!("up_name", up(&item, "up", Output::Name));
}

#[test]
fn describe_shows_the_decision_of_the_current_settings() {
    // The agent's state is a round old: it decided under adaptive settings.
    let st = muster::adaptive::AgentState {
        pid: 4242,
        started_at: 1_790_000_000.0,
        heartbeat: 1_790_000_059.0,
        mode: None,
        paused: None,
        last_decision: Some("target 0 < 3 workers: removing 2".into()),
    };
    let view = || AgentView::new(true, &AgentHealth::Running(st.clone()), None, &[], 1.79e9);
    let mut rec = record("demo", 2);
    // `scale` bumped the generation and decided itself: the record's
    // decision is the one shown.
    rec.adapt_generation = 3;
    rec.policy.generation = 3;
    rec.policy.settings = "Policy { .. }".into();
    rec.policy.last_decision = Some("fixed size 2: 2 workers is right".into());
    let v = view().current(&rec);
    assert_eq!(
        v.last_decision.as_deref(),
        Some("fixed size 2: 2 workers is right")
    );
    assert!(!v.decision_pending);
    // `adapt --off` bumped it and no round ran yet: nothing stale is shown.
    rec.adapt_generation = 4;
    let v = view().current(&rec);
    assert_eq!(v.last_decision, None);
    let text = describe(&status(), &rec, "/s", Some(&v), Output::Table);
    assert!(
        text.contains("Decision:     none yet under the new settings"),
        "{text}"
    );
    assert!(!text.contains("removing 2"), "{text}");
}
