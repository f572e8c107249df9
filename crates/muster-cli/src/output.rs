//! Turning results into text: kubectl-like tables for people, JSON and YAML for
//! scripts. Pure functions from data to strings, snapshot-tested.

use std::time::Duration;

use comfy_table::{Table, presets};
use muster::adaptive::{AgentHealth, Event};
use muster::{AdaptSpec, ClusterRecord, ClusterStatus, DownReport, Rendered};
use serde::Serialize;

use crate::cli::Output;
use crate::contract::{self, Kind};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.force_no_tty();
    t.set_header(header.iter().map(|h| h.to_string()));
    t
}

fn render_table(t: &Table) -> String {
    // comfy-table pads the first column with one leading space under the
    // NOTHING preset; strip it so columns start at the margin, like kubectl.
    t.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A duration the way kubectl prints ages: `45s`, `12m`, `3h`, `2d`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// One cluster as `get clusters -o json` lists it.
#[derive(Debug, Serialize)]
pub struct ClusterItem<'a> {
    name: &'a str,
    backend: &'a str,
    phase: &'a str,
    workers: u32,
    scheduler_address: Option<&'a str>,
    dashboard_url: Option<String>,
    age_seconds: u64,
    tls: Option<&'a muster::tls::PartyFiles>,
}

/// `muster get clusters`.
/// `now` is the current Unix time, passed in so the listing is a pure function.
pub fn clusters(records: &[ClusterRecord], now: u64, output: Output) -> String {
    let items: Vec<ClusterItem> = records
        .iter()
        .map(|r| ClusterItem {
            name: &r.name,
            backend: r.backend(),
            phase: r.phase.word(),
            workers: r.spec.workers,
            scheduler_address: r.scheduler_address.as_deref(),
            dashboard_url: r.dashboard_link(),
            age_seconds: now.saturating_sub(r.created_at),
            tls: r.credentials.as_ref(),
        })
        .collect();
    if let Some(s) = contract::list(Kind::ClusterList, &items, output) {
        return s;
    }
    if items.is_empty() {
        return "No clusters.\n".into();
    }
    let wide = output == Output::Wide;
    let mut header = vec!["NAME", "BACKEND", "PHASE", "WORKERS", "AGE", "SCHEDULER"];
    if wide {
        header.push("DASHBOARD");
    }
    let mut t = table(&header);
    for i in &items {
        let mut row = vec![
            i.name.to_string(),
            i.backend.to_string(),
            i.phase.to_string(),
            i.workers.to_string(),
            age(Duration::from_secs(i.age_seconds)),
            i.scheduler_address.unwrap_or("-").to_string(),
        ];
        if wide {
            row.push(i.dashboard_url.clone().unwrap_or_else(|| "-".into()));
        }
        t.add_row(row);
    }
    render_table(&t)
}

/// One worker as `get workers -o json` lists it.
#[derive(Debug, Serialize)]
pub struct WorkerItem<'a> {
    name: &'a str,
    status: &'a str,
    connected: bool,
    dask_workers: usize,
    addresses: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

fn worker_items(status: &ClusterStatus) -> Vec<WorkerItem<'_>> {
    status
        .workers
        .iter()
        .map(|w| WorkerItem {
            name: &w.name,
            status: w.status.word(),
            connected: w.connected > 0,
            dask_workers: w.connected,
            addresses: &w.addresses,
            reason: match &w.status {
                muster::JobStatus::Failed { reason } => Some(reason),
                _ => None,
            },
        })
        .collect()
}

fn workers_table(status: &ClusterStatus, wide: bool) -> String {
    let items = worker_items(status);
    if items.is_empty() {
        return "No workers.\n".into();
    }
    let mut header = vec!["NAME", "STATUS", "CONNECTED", "ADDRESS"];
    if wide {
        header.push("REASON");
    }
    let mut t = table(&header);
    let per_job = status.processes_per_worker as usize;
    for i in items {
        let mut row = vec![
            i.name.to_string(),
            i.status.to_string(),
            format!("{}/{per_job}", i.dask_workers),
            if i.addresses.is_empty() {
                "-".into()
            } else {
                i.addresses.join(",")
            },
        ];
        if wide {
            row.push(i.reason.unwrap_or("").to_string());
        }
        t.add_row(row);
    }
    render_table(&t)
}

/// `muster get workers NAME`.
pub fn workers(status: &ClusterStatus, output: Output) -> String {
    if let Some(s) = contract::list(Kind::WorkerList, &worker_items(status), output) {
        return s;
    }
    workers_table(status, output == Output::Wide)
}

/// What `up -o json` prints.
#[derive(Debug, Serialize)]
pub struct UpItem<'a> {
    /// The cluster's name.
    pub name: &'a str,
    /// Its backend kind.
    pub backend: &'a str,
    /// The scheduler's comm address.
    pub scheduler_address: Option<&'a str>,
    /// The dashboard link.
    pub dashboard_url: Option<&'a str>,
    /// Worker jobs.
    pub workers: usize,
    /// Dask workers registered.
    pub connected_workers: usize,
    /// The client's TLS files (null when the cluster speaks plain TCP).
    pub tls: Option<&'a muster::tls::PartyFiles>,
}

/// `muster up` and `muster scale`.
pub fn up(item: &UpItem<'_>, verb: &str, output: Output) -> String {
    if let Some(s) = contract::object(Kind::Cluster, item, output) {
        return s;
    }
    let mut out = format!(
        "cluster {} is {verb} ({} backend)\n  scheduler: {}\n  dashboard: {}\n  workers:   {} jobs, {} Dask workers connected\n",
        item.name,
        item.backend,
        item.scheduler_address.unwrap_or("-"),
        item.dashboard_url.unwrap_or("-"),
        item.workers,
        item.connected_workers,
    );
    if let Some(files) = item.tls {
        out.push_str(&format!(
            "  tls:       client files in {} (`muster env {}` prints them for Dask)\n",
            files
                .ca_file
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            item.name
        ));
    }
    out
}

/// `muster down`.
pub fn down(reports: &[DownReport], output: Output) -> String {
    if let Some(s) = contract::list(Kind::DownList, reports, output) {
        return s;
    }
    if reports.is_empty() {
        return "No clusters.\n".into();
    }
    reports
        .iter()
        .map(|r| {
            if r.existed {
                format!(
                    "cluster {} is down ({} jobs stopped)\n",
                    r.name,
                    r.stopped.len()
                )
            } else {
                format!("cluster {} not found: nothing to stop\n", r.name)
            }
        })
        .collect()
}

/// One job's log, as `logs --all` prints it.
#[derive(Debug, Serialize)]
pub struct LogItem {
    /// The job id.
    pub job: String,
    /// `scheduler` or `worker`.
    pub role: &'static str,
    /// The backend's state of the job (a queued job has no log yet).
    #[serde(serialize_with = "status_word")]
    pub status: muster::JobStatus,
    /// The log's text.
    pub text: String,
    /// Why the log could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn status_word<S: serde::Serializer>(st: &muster::JobStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(st.word())
}

/// `muster logs --all`.
pub fn logs(items: &[LogItem], output: Output) -> String {
    if let Some(s) = contract::list(Kind::LogList, items, output) {
        return s;
    }
    items
        .iter()
        .map(|i| {
            let body = match &i.error {
                Some(e) => format!("(no log: {e})\n"),
                None if i.text.is_empty() || i.text.ends_with('\n') => i.text.clone(),
                None => format!("{}\n", i.text),
            };
            format!("# {} {} ({})\n{body}", i.role, i.job, i.status.word())
        })
        .collect()
}

/// `muster render`.
pub fn rendered(r: &Rendered, output: Output) -> String {
    if let Some(s) = contract::object(Kind::Rendered, r, output) {
        return s;
    }
    r.items
        .iter()
        .map(|i| format!("# {}\n{}\n", i.title, i.text))
        .collect()
}

/// Events shown by `describe`.
pub const DESCRIBE_EVENTS: usize = 10;

/// One event with its age, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventItem {
    /// Seconds ago.
    pub age_seconds: u64,
    /// Its kind.
    pub kind: String,
    /// What happened and why.
    pub message: String,
}

/// The agent and the adaptive timeline, as `describe` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    /// `running`, `dead`, `not started`, or `none` (the backend has no agent).
    pub agent: &'static str,
    /// The agent's pid (the dead one's when it died).
    pub pid: Option<u32>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: Option<u64>,
    /// The pid of the agent started because the old one was dead.
    pub restarted_pid: Option<u32>,
    /// Why growing is paused, if it is.
    pub paused: Option<String>,
    /// The last decision's reason.
    pub last_decision: Option<String>,
    /// Events recorded in all.
    pub event_count: usize,
    /// The latest events, oldest first.
    pub events: Vec<EventItem>,
}

impl AgentView {
    /// The view from the agent's health as found, whether a new agent was
    /// started, and the timeline, at `now` (Unix seconds).
    pub fn new(
        has_agent: bool,
        health: &AgentHealth,
        restarted: Option<u32>,
        events: &[Event],
        now: f64,
    ) -> Self {
        let ago = |t: f64| Some((now - t).max(0.0) as u64);
        let (agent, st) = match health {
            _ if !has_agent => ("none", None),
            AgentHealth::Running(s) => ("running", Some(s)),
            AgentHealth::Dead(s) => ("dead", Some(s)),
            AgentHealth::Absent => ("not started", None),
        };
        AgentView {
            agent,
            pid: st.map(|s| s.pid).filter(|p| *p > 0),
            heartbeat_age_seconds: st.and_then(|s| ago(s.heartbeat)),
            restarted_pid: restarted,
            paused: st.and_then(|s| s.paused.clone()),
            last_decision: st.and_then(|s| s.last_decision.clone()),
            event_count: events.len(),
            events: events[events.len().saturating_sub(DESCRIBE_EVENTS)..]
                .iter()
                .map(|e| EventItem {
                    age_seconds: ago(e.time).unwrap_or(0),
                    kind: e.kind.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        }
    }
}

/// Text safe for one table cell: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn scaling_line(record: &ClusterRecord) -> String {
    match &record.spec.adapt {
        Some(a) => format!(
            "adaptive, {} to {} worker jobs (interval {}, scale-down wait {}, cooldown {}, max pending {}{})",
            a.minimum,
            a.maximum,
            a.interval,
            a.scale_down_wait,
            a.cooldown,
            a.max_pending,
            a.idle_timeout
                .map(|t| format!(", idle timeout {t}"))
                .unwrap_or_default()
        ),
        None => format!("fixed, {} worker jobs", record.spec.workers),
    }
}

fn agent_section(view: &AgentView, record: &ClusterRecord) -> String {
    let mut out = format!(
        "Scaling:      {}
",
        scaling_line(record)
    );
    let agent = match (view.agent, view.pid) {
        ("dead", pid) => format!(
            "DEAD (pid {}, last heartbeat {} ago){}",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            age(Duration::from_secs(view.heartbeat_age_seconds.unwrap_or(0))),
            match view.restarted_pid {
                Some(p) => format!("; restarted as pid {p}"),
                None => String::new(),
            }
        ),
        ("running", Some(pid)) => format!(
            "running (pid {pid}, heartbeat {} ago)",
            age(Duration::from_secs(view.heartbeat_age_seconds.unwrap_or(0)))
        ),
        (word, _) => match view.restarted_pid {
            Some(p) => format!("{word}; started as pid {p}"),
            None => word.to_string(),
        },
    };
    out.push_str(&format!(
        "Agent:        {agent}
"
    ));
    if let Some(p) = &view.paused {
        out.push_str(&format!(
            "Paused:       {}
",
            one_line(p)
        ));
    }
    if let Some(d) = &view.last_decision {
        out.push_str(&format!(
            "Decision:     {}
",
            one_line(d)
        ));
    }
    if !view.events.is_empty() {
        out.push_str(&format!(
            "\nEvents (last {} of {}):\n",
            view.events.len(),
            view.event_count
        ));
        let mut t = table(&["AGE", "KIND", "MESSAGE"]);
        for e in &view.events {
            t.add_row(vec![
                age(Duration::from_secs(e.age_seconds)),
                e.kind.clone(),
                one_line(&e.message),
            ]);
        }
        for line in render_table(&t).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// `muster events`: the timeline, oldest first, with UTC times.
pub fn events(evs: &[Event], output: Output) -> String {
    if let Some(s) = contract::list(Kind::EventList, evs, output) {
        return s;
    }
    if evs.is_empty() {
        return "No events.\n".into();
    }
    let mut t = table(&["TIME", "KIND", "MESSAGE"]);
    for e in evs {
        let when = std::time::UNIX_EPOCH + Duration::from_secs_f64(e.time.max(0.0));
        t.add_row(vec![
            humantime::format_rfc3339_seconds(when).to_string(),
            e.kind.clone(),
            one_line(&e.message),
        ]);
    }
    render_table(&t)
}

/// What `muster adapt` did.
pub fn adapted(
    name: &str,
    adapt: Option<&AdaptSpec>,
    workers: u32,
    agent_pid: Option<u32>,
    output: Output,
) -> String {
    #[derive(Serialize)]
    struct Item<'a> {
        name: &'a str,
        adapt: Option<&'a AdaptSpec>,
        workers: u32,
        agent_pid: Option<u32>,
    }
    if let Some(s) = contract::object(
        Kind::Adapt,
        &Item {
            name,
            adapt,
            workers,
            agent_pid,
        },
        output,
    ) {
        return s;
    }
    match adapt {
        Some(a) => format!(
            "cluster {name} adapts between {} and {} worker jobs\n",
            a.minimum, a.maximum
        ),
        None => format!("cluster {name} stays at {workers} worker jobs (adaptive scaling off)\n"),
    }
}

/// `muster describe` as a readable report.
pub fn describe(
    status: &ClusterStatus,
    record: &ClusterRecord,
    state_dir: &str,
    agent: Option<&AgentView>,
    output: Output,
) -> String {
    #[derive(Serialize)]
    struct Full<'a> {
        #[serde(flatten)]
        status: &'a ClusterStatus,
        spec: &'a muster::ClusterSpec,
        state_dir: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent: Option<&'a AgentView>,
        /// The client's TLS files; null for plain TCP.
        tls: Option<&'a muster::tls::PartyFiles>,
    }
    if let Some(s) = contract::object(
        Kind::ClusterDescription,
        &Full {
            status,
            spec: &record.spec,
            state_dir,
            agent,
            tls: record.credentials.as_ref(),
        },
        output,
    ) {
        return s;
    }
    let sched = match &status.scheduler {
        Some((id, st)) => format!("{id} ({st})"),
        None => "-".into(),
    };
    let mut out = format!(
        "Name:         {}\nBackend:      {}\nPhase:        {}\nAge:          {}\nScheduler:    {}\nAddress:      {}\nDashboard:    {}\nAPI:          {}\nWorkers:      {} jobs wanted, {} Dask workers connected ({} per job)\nState:        {}\n",
        status.name,
        status.backend,
        status.phase.word(),
        age(Duration::from_secs(status.age_seconds)),
        sched,
        status.scheduler_address.as_deref().unwrap_or("-"),
        status.dashboard_url.as_deref().unwrap_or("-"),
        if status.scheduler_reachable {
            "reachable"
        } else {
            "NOT reachable"
        },
        status.desired_workers,
        status.connected_workers,
        status.processes_per_worker,
        state_dir,
    );
    out.push_str(&match &record.credentials {
        Some(f) => format!(
            "TLS:          CA {}, client {} (key {})\n",
            f.ca_file.display(),
            f.cert_file.display(),
            f.key_file.display()
        ),
        None => "TLS:          none (plain TCP)\n".to_string(),
    });
    out.push_str("\nWorker jobs:\n");
    for line in workers_table(status, true).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if !status.unknown_workers.is_empty() {
        out.push_str("\nDask workers the scheduler knows but muster did not launch:\n");
        for w in &status.unknown_workers {
            out.push_str(&format!("  {} {}\n", w.name, w.address));
        }
    }
    if let Some(view) = agent {
        out.push('\n');
        out.push_str(&agent_section(view, record));
    }
    out.push_str("\nSpec:\n");
    for line in record.spec.to_yaml().lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster::{ClusterSpec, JobId, JobStatus, Phase, WorkerRow};

    /// A fixed "now" so ages in snapshots never drift.
    const NOW: u64 = 1_800_000_000;

    fn record(name: &str, workers: u32) -> ClusterRecord {
        let spec =
            ClusterSpec::from_yaml(&format!("name: {name}\nworkers: {workers}"), None).unwrap();
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

    #[test]
    fn cluster_listings() {
        let rs = [record("alpha", 2), record("beta", 0)];
        insta::assert_snapshot!("clusters_table", clusters(&rs, NOW, Output::Table));
        insta::assert_snapshot!("clusters_wide", clusters(&rs, NOW, Output::Wide));
        insta::assert_snapshot!("clusters_json", clusters(&rs, NOW, Output::Json));
        assert_eq!(clusters(&[], NOW, Output::Table), "No clusters.\n");
        assert_eq!(
            clusters(&[], NOW, Output::Json),
            "{\n  \"schema\": \"muster/v1\",\n  \"kind\": \"ClusterList\",\n  \"items\": []\n}\n"
        );
    }

    #[test]
    fn worker_listings() {
        let s = status();
        insta::assert_snapshot!("workers_table", workers(&s, Output::Table));
        insta::assert_snapshot!("workers_wide", workers(&s, Output::Wide));
        insta::assert_snapshot!("workers_yaml", workers(&s, Output::Yaml));
        insta::assert_snapshot!("workers_json", workers(&s, Output::Json));
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
        let text = describe(
            &status(),
            &adaptive_record(),
            "/state/clusters/demo",
            Some(&view),
            Output::Table,
        );
        insta::assert_snapshot!("describe_adaptive", text);
        let json: serde_json::Value = serde_json::from_str(&describe(
            &status(),
            &adaptive_record(),
            "/s",
            Some(&view),
            Output::Json,
        ))
        .unwrap();
        assert_eq!(json["agent"]["agent"], "running");
        assert_eq!(json["agent"]["pid"], 4242);
        assert_eq!(json["agent"]["events"].as_array().unwrap().len(), 7);
        assert_eq!(json["spec"]["adapt"]["maximum"], 6);
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
        insta::assert_snapshot!("down_table", down(&reports, Output::Table));
        insta::assert_snapshot!("down_json", down(&reports, Output::Json));
    }
}
