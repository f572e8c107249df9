//! `describe`: one cluster's report (status, worker jobs, agent, recent
//! events, spec) and its `ClusterDescription` document.

use std::time::Duration;

use muster::adaptive::{AgentHealth, Event};
use muster::{ClusterRecord, ClusterStatus};
use serde::Serialize;

use super::lists::{WorkerItem, worker_items, workers_table};
use super::{age, one_line, render_table, table};
use crate::cli::Output;
use crate::contract::{self, Kind};

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
    /// The last decision's reason, under the cluster's current settings.
    pub last_decision: Option<String>,
    /// True when the settings changed (`scale`, `adapt`) since the last
    /// decision and no round has decided under the new ones yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub decision_pending: bool,
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
            decision_pending: false,
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

impl AgentView {
    /// The decision and pause as the record keeps them: every round writes
    /// them there, the agent's and those `scale` runs itself, while the
    /// agent's own state file is only as new as its last round (which may
    /// be an interval old, under settings `scale` or `adapt` replaced
    /// since). A decision made under older settings is not shown: the
    /// view says one is pending instead.
    pub fn current(mut self, record: &ClusterRecord) -> Self {
        if self.agent == "none" {
            return self;
        }
        let policy = &record.policy;
        if policy.generation == record.adapt_generation && !policy.settings.is_empty() {
            self.last_decision = policy.last_decision.clone();
            self.paused = policy.state.paused.clone();
            self.decision_pending = false;
        } else {
            self.last_decision = None;
            self.paused = None;
            self.decision_pending = true;
        }
        self
    }
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
    } else if view.decision_pending {
        out.push_str(
            "Decision:     none yet under the new settings (the agent's next round decides)\n",
        );
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

/// The scheduler job in a `ClusterDescription`.
#[derive(Debug, Serialize)]
struct SchedulerItem<'a> {
    job: &'a str,
    /// The same words as a worker's `status`.
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The `ClusterDescription` document: the same vocabulary as `get` (phase
/// and status words, worker items), objects rather than tuples, RFC 3339
/// times.
#[derive(Debug, Serialize)]
struct Doc<'a> {
    name: &'a str,
    backend: &'a str,
    /// The phase as the manager shows it (`Running`, `Failed`, ...).
    phase: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    created: String,
    age_seconds: u64,
    scheduler: Option<SchedulerItem<'a>>,
    scheduler_address: Option<&'a str>,
    dashboard_url: Option<&'a str>,
    scheduler_reachable: bool,
    desired_workers: u32,
    ready_workers: usize,
    processes_per_worker: u32,
    connected_workers: usize,
    workers: Vec<WorkerItem<'a>>,
    unknown_workers: &'a [muster::dask::WorkerInfo],
    spec: &'a muster::ClusterSpec,
    state_dir: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a AgentView>,
    /// The client's TLS files; null for plain TCP.
    tls: Option<&'a muster::tls::PartyFiles>,
    /// The last worker jobs that ended on their own (absent when none).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ended_workers: &'a [muster::EndedJob],
}

/// `muster describe` as a readable report.
pub fn describe(
    status: &ClusterStatus,
    record: &ClusterRecord,
    state_dir: &str,
    agent: Option<&AgentView>,
    output: Output,
) -> String {
    let (phase, reason) = super::live_phase(record.phase, Some(status));
    let doc = Doc {
        name: &status.name,
        backend: &status.backend,
        phase,
        reason: reason.clone(),
        created: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(record.created_at),
        )
        .to_string(),
        age_seconds: status.age_seconds,
        scheduler: status.scheduler.as_ref().map(|(id, st)| SchedulerItem {
            job: id.as_str(),
            status: st.word(),
            reason: match st {
                muster::JobStatus::Failed { reason } => Some(reason),
                _ => None,
            },
        }),
        scheduler_address: status.scheduler_address.as_deref(),
        dashboard_url: status.dashboard_url.as_deref(),
        scheduler_reachable: status.scheduler_reachable,
        desired_workers: status.desired_workers,
        ready_workers: super::ready_jobs(status),
        processes_per_worker: status.processes_per_worker,
        connected_workers: status.connected_workers,
        workers: worker_items(status),
        unknown_workers: &status.unknown_workers,
        spec: &record.spec,
        state_dir,
        agent,
        tls: record.credentials.as_ref(),
        ended_workers: &record.ended,
    };
    if let Some(s) = contract::object(Kind::ClusterDescription, &doc, output) {
        return s;
    }
    if output == Output::Name {
        return format!("cluster/{}\n", status.name);
    }
    let sched = match &status.scheduler {
        Some((id, st)) => format!("{id} ({st})"),
        None => "-".into(),
    };
    let phase_line = match &reason {
        Some(r) => format!("{phase} ({})", one_line(r)),
        None => phase.to_string(),
    };
    let mut out = format!(
        "Name:         {}\nBackend:      {}\nPhase:        {}\nAge:          {}\nScheduler:    {}\nAddress:      {}\nDashboard:    {}\nAPI:          {}\nWorkers:      {} jobs wanted, {} ready, {} Dask workers connected ({} per job)\nState:        {}\n",
        status.name,
        status.backend,
        phase_line,
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
        super::ready_jobs(status),
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
    if !record.ended.is_empty() {
        out.push_str(&format!(
            "\nWorker jobs that ended on their own (the last ones; their logs: `muster logs {} JOB`):\n",
            status.name
        ));
        for e in &record.ended {
            out.push_str(&format!("  {} {}\n", e.id, one_line(&e.status.to_string())));
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
