//! Turning results into text: kubectl-like tables for people, JSON and YAML for
//! scripts. Pure functions from data to strings, snapshot-tested. Every
//! `-o json|yaml` document goes through [`crate::contract`] (the `muster/v1`
//! envelope); this module and its children decide only what goes inside it.
//! Split by shape: [`lists`] prints the `get`/`events`/`logs` listings (one row
//! per thing), [`describe`] the one-cluster report with its agent section, and
//! [`messages`] the short results of the verbs (`up`, `scale`, `down`, `adapt`,
//! `render`). It knows no backend and performs no I/O.

use std::time::Duration;

use comfy_table::{Table, presets};
use muster::{ClusterStatus, Phase};

mod describe;
mod lists;
mod messages;
#[cfg(test)]
mod tests;

pub use describe::{AgentView, describe};
pub use lists::{ClusterRow, LogItem, clusters, events, logs, workers};
pub use messages::{UpItem, adapted, down, rendered, up};

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.force_no_tty();
    t.set_header(header.iter().map(|h| h.to_string()));
    t
}

pub(crate) fn render_table(t: &Table) -> String {
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
/// Text safe for one table cell: control characters become spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The phase as the manager shows it, beside the recorded one: a Running
/// cluster whose scheduler job has ended is `Failed` (with why). Other
/// recorded phases are shown as recorded.
pub fn live_phase(
    recorded: Phase,
    status: Option<&ClusterStatus>,
) -> (&'static str, Option<String>) {
    match status.and_then(|s| s.scheduler.as_ref()) {
        Some((id, st)) if recorded == Phase::Running && !st.is_active() => {
            ("Failed", Some(format!("scheduler job {id} is {st}")))
        }
        _ => (recorded.word(), None),
    }
}

/// Worker jobs that are Running with all their Dask workers registered: the
/// numerator of `READY`.
pub fn ready_jobs(status: &ClusterStatus) -> usize {
    let per_job = status.processes_per_worker.max(1) as usize;
    status
        .workers
        .iter()
        .filter(|w| w.status == muster::JobStatus::Running && w.connected >= per_job)
        .count()
}
