//! The listings: `get clusters`, `get workers`, `events` and `logs --all`, one
//! row (or item) per thing. Tables for people; the same items, unchanged, in
//! the `muster/v1` list documents.

use std::time::Duration;

use muster::adaptive::Event;
use muster::{ClusterRecord, ClusterStatus};
use serde::Serialize;

use super::{age, one_line, render_table, table};
use crate::cli::Output;
use crate::contract::{self, Kind};
use crate::unrecorded::Unrecorded;

/// One cluster as `get clusters -o json` lists it.
#[derive(Debug, Serialize)]
pub struct ClusterItem<'a> {
    name: &'a str,
    backend: String,
    /// The phase as the manager shows it now (see [`super::live_phase`]).
    phase: &'a str,
    /// Why the phase is not the recorded one.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Worker jobs wanted.
    workers: u32,
    /// Worker jobs whose Dask workers are all registered, when the cluster
    /// could be looked at.
    ready_workers: Option<usize>,
    scheduler_address: Option<&'a str>,
    dashboard_url: Option<String>,
    age_seconds: u64,
    /// The client's TLS files (null when the cluster speaks plain TCP).
    tls: Option<&'a muster::tls::PartyFiles>,
    /// False for a cluster found only from its processes' markers (its
    /// registry record is gone): `muster down NAME` removes it.
    recorded: bool,
    /// For an unrecorded cluster, the jobs found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    found_jobs: Vec<String>,
}

/// A recorded cluster and, when it could be asked, its manager's view.
#[derive(Debug, Clone, Copy)]
pub struct ClusterRow<'a> {
    /// The registry record.
    pub record: &'a ClusterRecord,
    /// The live status (`None` when the backend or scheduler could not be
    /// asked in time).
    pub status: Option<&'a ClusterStatus>,
}

/// The phase word for unrecorded clusters.
pub const UNRECORDED: &str = "Unrecorded";

/// `muster get clusters`: the registry's clusters with their live phase and
/// READY count, then the clusters of this home found running without a
/// record (`unrecorded`: from this host's process markers and the batch
/// queues' job names).
/// `now` is the current Unix time, passed in so the listing is a pure function.
pub fn clusters(
    rows: &[ClusterRow<'_>],
    unrecorded: &[Unrecorded],
    now: u64,
    output: Output,
) -> String {
    let mut items: Vec<ClusterItem> = rows
        .iter()
        .map(|row| {
            let r = row.record;
            let (phase, reason) = super::live_phase(r.phase, row.status);
            ClusterItem {
                name: &r.name,
                backend: r.backend().to_string(),
                phase,
                reason,
                workers: r.spec.workers,
                ready_workers: row.status.map(super::ready_jobs),
                scheduler_address: r.scheduler_address.as_deref(),
                dashboard_url: r.dashboard_link(),
                age_seconds: now.saturating_sub(r.created_at),
                tls: r.credentials.as_ref(),
                recorded: true,
                found_jobs: Vec::new(),
            }
        })
        .collect();
    items.extend(unrecorded.iter().map(|u| ClusterItem {
        name: &u.name,
        backend: u.backend(),
        phase: UNRECORDED,
        reason: Some(format!("no registry record; {}", u.whereabouts())),
        workers: 0,
        ready_workers: None,
        scheduler_address: None,
        dashboard_url: None,
        age_seconds: 0,
        tls: None,
        recorded: false,
        found_jobs: u.jobs(),
    }));
    if let Some(s) = contract::list(Kind::ClusterList, &items, output) {
        return s;
    }
    if output == Output::Name {
        return items
            .iter()
            .map(|i| format!("cluster/{}\n", i.name))
            .collect();
    }
    if items.is_empty() {
        return "No clusters.\n".into();
    }
    let wide = output == Output::Wide;
    let mut header = vec!["NAME", "BACKEND", "PHASE", "READY", "AGE", "SCHEDULER"];
    if wide {
        header.extend(["DASHBOARD", "REASON"]);
    }
    let mut t = table(&header);
    for i in &items {
        let mut row = vec![
            i.name.to_string(),
            i.backend.to_string(),
            i.phase.to_string(),
            match (i.recorded, i.ready_workers) {
                (true, Some(n)) => format!("{n}/{}", i.workers),
                (true, None) => format!("?/{}", i.workers),
                (false, _) => "-".into(),
            },
            if i.recorded {
                age(Duration::from_secs(i.age_seconds))
            } else {
                "-".into()
            },
            i.scheduler_address.unwrap_or("-").to_string(),
        ];
        if wide {
            row.push(i.dashboard_url.clone().unwrap_or_else(|| "-".into()));
            row.push(i.reason.as_deref().map(one_line).unwrap_or_default());
        }
        t.add_row(row);
    }
    let mut out = render_table(&t);
    let lost: Vec<&str> = unrecorded.iter().map(|u| u.name.as_str()).collect();
    if !lost.is_empty() {
        out.push_str(&format!(
            "\n{} running without a registry record (found from their processes' markers or their jobs' names in the queue): \
             `muster down NAME` stops one, `muster down --all` all of them.\n",
            lost.join(", ")
        ));
    }
    out
}

/// One worker as `get workers -o json` lists it.
#[derive(Debug, Serialize)]
pub struct WorkerItem<'a> {
    name: &'a str,
    /// The manager's state of the job: a queued job is `Pending`.
    status: &'a str,
    /// Whether a Dask worker of the job is registered with the scheduler.
    connected: bool,
    dask_workers: usize,
    addresses: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

pub(super) fn worker_items(status: &ClusterStatus) -> Vec<WorkerItem<'_>> {
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

pub(super) fn workers_table(status: &ClusterStatus, wide: bool) -> String {
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
    if output == Output::Name {
        return status
            .workers
            .iter()
            .map(|w| format!("worker/{}\n", w.name))
            .collect();
    }
    workers_table(status, output == Output::Wide)
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
