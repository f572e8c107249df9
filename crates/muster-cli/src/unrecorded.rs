//! The clusters of this home that run without a registry record, found
//! where their jobs say whose they are: this host's processes (by the
//! `MUSTER_HOME`/`MUSTER_CLUSTER` markers in their environment) and the
//! SLURM and PBS queues whose commands are on PATH (by the home's tag in
//! the job names). `get clusters` lists them, `down --all` stops them. A
//! queue that cannot be asked is a warning, never a failure. It knows
//! nothing of how either search is done (the library's), nor of output.

use std::collections::BTreeMap;

use muster::Home;

/// A cluster found running without a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecorded {
    /// Its name.
    pub name: String,
    /// Job ids of its processes on this host.
    pub on_host: Vec<String>,
    /// Job ids of its jobs, by the batch kind whose queue lists them.
    pub queued: BTreeMap<&'static str, Vec<String>>,
}

impl Unrecorded {
    /// The backend column: the batch kinds whose queues hold its jobs, else
    /// `-` (only this host's processes are known).
    pub fn backend(&self) -> String {
        if self.queued.is_empty() {
            "-".into()
        } else {
            self.queued.keys().copied().collect::<Vec<_>>().join(",")
        }
    }

    /// Every job found, sorted.
    pub fn jobs(&self) -> Vec<String> {
        let mut all: Vec<String> = self.on_host.clone();
        all.extend(self.queued.values().flatten().cloned());
        all.sort();
        all.dedup();
        all
    }

    /// Where its jobs were found, as a sentence fragment.
    pub fn whereabouts(&self) -> String {
        let jobs = |n: usize| {
            if n == 1 {
                "1 job".to_string()
            } else {
                format!("{n} jobs")
            }
        };
        let mut parts = Vec::new();
        if !self.on_host.is_empty() {
            parts.push(format!("{} running on this host", jobs(self.on_host.len())));
        }
        for (kind, ids) in &self.queued {
            parts.push(format!("{} in the {kind} queue", jobs(ids.len())));
        }
        parts.join(", ")
    }
}

/// The batch kinds searched and the program that must be on PATH for each.
pub const QUEUES: [(&str, &str); 2] = [("slurm", "squeue"), ("pbs", "qstat")];

/// True when `program` is an executable on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .any(|d| std::fs::metadata(d.join(program)).is_ok_and(|m| m.is_file()))
    })
}

/// The clusters of `home` running without a record (`recorded`: the names
/// the registry has), and a warning for each queue that could not be asked.
pub async fn find(home: &Home, recorded: &[String]) -> (Vec<Unrecorded>, Vec<String>) {
    let mut found: BTreeMap<String, Unrecorded> = BTreeMap::new();
    fn entry<'a>(found: &'a mut BTreeMap<String, Unrecorded>, name: &str) -> &'a mut Unrecorded {
        found.entry(name.to_string()).or_insert_with(|| Unrecorded {
            name: name.to_string(),
            on_host: Vec::new(),
            queued: BTreeMap::new(),
        })
    }
    for (name, jobs) in muster::marked_on_this_host(home) {
        entry(&mut found, &name).on_host = jobs;
    }
    let mut warnings = Vec::new();
    for (kind, program) in QUEUES {
        if !on_path(program) {
            continue;
        }
        match muster::queued_in_batch(kind, home).await {
            Ok(clusters) => {
                for (name, jobs) in clusters {
                    entry(&mut found, &name).queued.insert(kind, jobs);
                }
            }
            Err(e) => warnings.push(format!("cannot list the {kind} queue ({program}): {e}")),
        }
    }
    let list = found
        .into_values()
        .filter(|u| !recorded.contains(&u.name))
        .collect();
    (list, warnings)
}
