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
