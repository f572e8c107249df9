//! What the verbs say when they are done: `up`/`scale` (a `Cluster`),
//! `down`, `adapt` and `render`.

use muster::{AdaptSpec, DownReport, Rendered};
use serde::Serialize;

use crate::cli::Output;
use crate::contract::{self, Kind};

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
}

/// `muster up` and `muster scale`.
pub fn up(item: &UpItem<'_>, verb: &str, output: Output) -> String {
    if let Some(s) = contract::object(Kind::Cluster, item, output) {
        return s;
    }
    if output == Output::Name {
        return format!("cluster/{}\n", item.name);
    }
    format!(
        "cluster {} is {verb} ({} backend)\n  scheduler: {}\n  dashboard: {}\n  workers:   {} jobs, {} Dask workers connected\n",
        item.name,
        item.backend,
        item.scheduler_address.unwrap_or("-"),
        item.dashboard_url.unwrap_or("-"),
        item.workers,
        item.connected_workers,
    )
}

/// `muster down`. `searched` says where a cluster without a registry record
/// was looked for, so "not found" is never a bare claim.
pub fn down(reports: &[DownReport], searched: Option<&str>, output: Output) -> String {
    if let Some(s) = contract::list(Kind::DownList, reports, output) {
        return s;
    }
    if output == Output::Name {
        return reports
            .iter()
            .filter(|r| r.existed)
            .map(|r| format!("cluster/{}\n", r.name))
            .collect();
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
                match searched {
                    Some(w) => format!(
                        "cluster {} not found: nothing to stop (no registry record; searched {w})\n",
                        r.name
                    ),
                    None => format!("cluster {} not found: nothing to stop\n", r.name),
                }
            }
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
    if output == Output::Name {
        return format!("cluster/{name}\n");
    }
    match adapt {
        Some(a) => format!(
            "cluster {name} adapts between {} and {} worker jobs\n",
            a.minimum, a.maximum
        ),
        None => format!("cluster {name} stays at {workers} worker jobs (adaptive scaling off)\n"),
    }
}
