//! The two dialects, as pure functions: the argv of submit / status / cancel
//! commands and the parsers of their outputs (recorded real outputs are the
//! unit tests' fixtures). A queue listing becomes [`QueueEntry`]s, and
//! [`resolve`] maps muster's job ids onto them.
//!
//! Job ids: a SLURM array task is `<array>_<index>` (as `squeue` and
//! `scancel` spell it), a PBS one `<array>[<index>]` (as PBS spells it,
//! without the `.server` suffix); a plain job is its number.

use std::collections::{BTreeMap, BTreeSet};

use crate::hpcspec::PbsFlavor;
use muster_core::JobStatus;

/// A batch system's command language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `sbatch`, `squeue`, `scancel`.
    Slurm,
    /// `qsub`, `qstat`, `qdel`.
    Pbs(PbsFlavor),
}

/// The `squeue` output format: display id | array job id | array task id(s) |
/// raw job id | state | reason | name (last: it may contain `|`).
pub const SQUEUE_FORMAT: &str = "%i|%F|%K|%A|%T|%r|%j";

/// Which tasks of an array a queue line stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tasks {
    /// A plain job.
    NotArray,
    /// One task.
    One(u32),
    /// Several tasks still in one record (a pending array remainder).
    Many(BTreeSet<u32>),
    /// Tasks not listed one by one (PBS `1234[]` summary lines).
    Summary,
}

/// One line (or block) of a queue listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The array's (or plain job's) id.
    pub array: String,
    /// The tasks this entry stands for.
    pub tasks: Tasks,
    /// The id the batch system lists and cancels this entry by.
    pub server_id: String,
    /// The normalised state.
    pub status: JobStatus,
    /// The job name.
    pub name: String,
}

impl Dialect {
    /// `#SBATCH` or `#PBS`.
    pub fn directive_prefix(&self) -> &'static str {
        match self {
            Dialect::Slurm => "#SBATCH",
            Dialect::Pbs(_) => "#PBS",
        }
    }

    /// The submit command. SLURM reads the script on stdin; PBS's `qsub`
    /// (and SLURM's wrapper of it) needs a file.
    pub fn submit_argv(&self, array: Option<u32>, script_path: &str, log_dir: &str) -> Vec<String> {
        match self {
            Dialect::Slurm => {
                let mut argv = vec!["sbatch".to_string(), "--parsable".to_string()];
                if let Some(n) = array {
                    argv.push(format!("--array=0-{}", n.saturating_sub(1)));
                }
                argv
            }
            Dialect::Pbs(flavor) => {
                let mut argv = vec!["qsub".to_string()];
                if let Some(n) = array {
                    argv.push(
                        match flavor {
                            PbsFlavor::Torque => "-t",
                            PbsFlavor::Pbspro => "-J",
                        }
                        .to_string(),
                    );
                    argv.push(format!("0-{}", n.saturating_sub(1)));
                }
                // The script redirects its own output once it knows its id;
                // this file only catches what happens before that.
                argv.extend([
                    "-o".to_string(),
                    format!("{log_dir}/batch.out"),
                    "-e".to_string(),
                    format!("{log_dir}/batch.err"),
                    script_path.to_string(),
                ]);
                argv
            }
        }
    }

    /// The id of a submitted job (the array id for arrays) from the submit
    /// command's stdout: `26`, `26;cluster`, `26.server`, `26[].server`.
    pub fn parse_submit(&self, stdout: &str) -> Option<String> {
        let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
        let line = line.strip_prefix("Submitted batch job ").unwrap_or(line);
        let id = line.split([';', '.', '[']).next()?.trim();
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
    }

    /// The one listing command of a poll: every job of the user.
    pub fn status_argv(&self, user: Option<&str>) -> Vec<String> {
        match self {
            Dialect::Slurm => {
                let mut argv = vec![
                    "squeue".to_string(),
                    "--noheader".to_string(),
                    "--states=all".to_string(),
                    format!("--format={SQUEUE_FORMAT}"),
                ];
                if let Some(u) = user {
                    argv.push(format!("--user={u}"));
                }
                argv
            }
            Dialect::Pbs(PbsFlavor::Torque) => vec!["qstat".into(), "-f".into()],
            Dialect::Pbs(PbsFlavor::Pbspro) => vec![
                "qstat".into(),
                "-f".into(),
                "-F".into(),
                "json".into(),
                "-t".into(),
                "-x".into(),
            ],
        }
    }

    /// Parses the listing command's output.
    pub fn parse_status(&self, stdout: &str) -> Result<Vec<QueueEntry>, String> {
        match self {
            Dialect::Slurm => Ok(parse_squeue(stdout)),
            Dialect::Pbs(PbsFlavor::Torque) => Ok(parse_qstat_f(stdout)),
            Dialect::Pbs(PbsFlavor::Pbspro) => parse_qstat_json(stdout),
        }
    }

    /// The cancel command for these ids (as the batch system spells them).
    pub fn cancel_argv(&self, server_ids: &[String]) -> Vec<String> {
        let program = match self {
            Dialect::Slurm => "scancel",
            Dialect::Pbs(_) => "qdel",
        };
        std::iter::once(program.to_string())
            .chain(server_ids.iter().cloned())
            .collect()
    }

    /// A task id in this dialect's spelling.
    pub fn task_id(&self, array: &str, index: u32) -> String {
        match self {
            Dialect::Slurm => format!("{array}_{index}"),
            Dialect::Pbs(_) => format!("{array}[{index}]"),
        }
    }

    /// Splits a muster job id into array id and task index (`None` for a
    /// plain job); `None` overall when it is not a batch id at all.
    pub fn split_id<'a>(&self, id: &'a str) -> Option<(&'a str, Option<u32>)> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(id) {
            return Some((id, None));
        }
        let (array, index) = match self {
            Dialect::Slurm => id.split_once('_')?,
            Dialect::Pbs(_) => {
                let (a, rest) = id.split_once('[')?;
                (a, rest.strip_suffix(']')?)
            }
        };
        if digits(array) && digits(index) {
            Some((array, index.parse().ok()))
        } else {
            None
        }
    }
}

/// Parses a SLURM task list such as `0-3`, `2-5%2`, `1,3,5-7`.
pub fn parse_task_list(s: &str) -> Option<BTreeSet<u32>> {
    let s = s.split('%').next()?;
    let s = s.trim_start_matches('[').trim_end_matches(']');
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 100_000 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().ok()?);
            }
        }
    }
    Some(out)
}

/// SLURM states to muster's.
pub fn slurm_state(state: &str, reason: &str) -> JobStatus {
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" => JobStatus::Pending,
        "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "STAGE_OUT"
        | "RESIZING" => JobStatus::Running,
        "COMPLETED" | "CANCELLED" => JobStatus::Finished,
        "" => JobStatus::Unknown,
        other => JobStatus::Failed {
            reason: if reason.is_empty() || reason == "None" {
                other.to_string()
            } else {
                format!("{other} ({reason})")
            },
        },
    }
}

/// Parses `squeue --format=` [`SQUEUE_FORMAT`] output.
pub fn parse_squeue(stdout: &str) -> Vec<QueueEntry> {
    stdout
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(7, '|').collect();
            let [display, array, task, raw, state, reason, name] = f[..] else {
                return None;
            };
            let tasks = if task == "N/A" {
                Tasks::NotArray
            } else if let Ok(i) = task.parse() {
                Tasks::One(i)
            } else {
                Tasks::Many(parse_task_list(task)?)
            };
            // A pending remainder is cancelled by its display id (`7_[0-3]`
            // cancels exactly those tasks); a started task by its task id.
            let server_id = match &tasks {
                Tasks::NotArray => raw.to_string(),
                Tasks::One(i) => format!("{array}_{i}"),
                _ => display.to_string(),
            };
            Some(QueueEntry {
                array: array.to_string(),
                tasks,
                server_id,
                status: slurm_state(state, reason),
                name: name.to_string(),
            })
        })
        .collect()
}

/// PBS state letters to muster's (`exit` is `exit_status`/`Exit_status`).
pub fn pbs_state(state: &str, exit: Option<i64>) -> JobStatus {
    match state {
        "Q" | "H" | "W" | "T" | "M" | "B" => JobStatus::Pending,
        "R" | "E" | "S" | "U" => JobStatus::Running,
        "C" | "F" | "X" => match exit {
            None | Some(0) => JobStatus::Finished,
            // PBS reports deletion of a running job as a negative or
            // signal-shaped status; both mean it was stopped on request.
            Some(c) if c == 271 || c < 0 => JobStatus::Finished,
            Some(c) => JobStatus::Failed {
                reason: format!("exit status {c}"),
            },
        },
        _ => JobStatus::Unknown,
    }
}

/// Splits a PBS job id (`16`, `16.server`, `16[3].server`, `16[].server`)
/// into array id and tasks.
fn pbs_id(id: &str) -> (String, Tasks, String) {
    let bare = id.split('.').next().unwrap_or(id).trim();
    match bare.split_once('[') {
        Some((array, rest)) => {
            let inner = rest.trim_end_matches(']');
            let tasks = match inner.parse::<u32>() {
                Ok(i) => Tasks::One(i),
                Err(_) => Tasks::Summary,
            };
            (array.to_string(), tasks, bare.to_string())
        }
        None => (bare.to_string(), Tasks::NotArray, bare.to_string()),
    }
}

/// Parses `qstat -f` blocks (TORQUE, and SLURM's wrapper): `Job Id: X`
/// followed by indented `key = value` lines.
pub fn parse_qstat_f(stdout: &str) -> Vec<QueueEntry> {
    let mut out = Vec::new();
    let mut current: Option<(String, BTreeMap<String, String>)> = None;
    let mut flush = |cur: Option<(String, BTreeMap<String, String>)>| {
        if let Some((id, kv)) = cur {
            let (array, tasks, server_id) = pbs_id(&id);
            let exit = kv.get("exit_status").and_then(|v| v.trim().parse().ok());
            out.push(QueueEntry {
                array,
                tasks,
                server_id,
                status: pbs_state(kv.get("job_state").map_or("", |s| s.trim()), exit),
                name: kv.get("Job_Name").cloned().unwrap_or_default(),
            });
        }
    };
    for line in stdout.lines() {
        if let Some(id) = line.strip_prefix("Job Id:") {
            flush(current.take());
            current = Some((id.trim().to_string(), BTreeMap::new()));
        } else if let Some((_, kv)) = current.as_mut()
            && let Some((k, v)) = line.trim().split_once(" = ")
        {
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    flush(current.take());
    out
}

/// Parses PBS Pro's `qstat -f -F json` output.
pub fn parse_qstat_json(stdout: &str) -> Result<Vec<QueueEntry>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "Jobs", default)]
        jobs: BTreeMap<String, Job>,
    }
    #[derive(serde::Deserialize)]
    struct Job {
        #[serde(rename = "Job_Name", default)]
        name: String,
        #[serde(default)]
        job_state: String,
        #[serde(rename = "Exit_status", default)]
        exit: Option<i64>,
    }
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: Doc = serde_json::from_str(stdout).map_err(|e| e.to_string())?;
    Ok(doc
        .jobs
        .into_iter()
        .map(|(id, job)| {
            let (array, tasks, server_id) = pbs_id(&id);
            QueueEntry {
                array,
                tasks,
                server_id,
                status: pbs_state(&job.job_state, job.exit),
                name: job.name,
            }
        })
        .collect())
}

/// The state of one muster job id in a listing. `server_ids` maps task ids
/// to the ids the batch system lists them by, where those differ (SLURM's
/// Torque wrapper lists array tasks under SLURM's raw ids).
pub fn resolve(
    dialect: Dialect,
    entries: &[QueueEntry],
    server_ids: &BTreeMap<String, String>,
    id: &str,
) -> JobStatus {
    let Some((array, index)) = dialect.split_id(id) else {
        return JobStatus::Unknown;
    };
    let find = |pred: &dyn Fn(&QueueEntry) -> bool| entries.iter().find(|e| pred(e));
    match index {
        None => find(&|e| e.array == array && e.tasks == Tasks::NotArray)
            .map_or(JobStatus::Unknown, |e| e.status.clone()),
        Some(i) => {
            if let Some(e) = find(&|e| e.array == array && e.tasks == Tasks::One(i)) {
                return e.status.clone();
            }
            if let Some(e) = find(&|e| {
                e.array == array && matches!(&e.tasks, Tasks::Many(set) if set.contains(&i))
            }) {
                return e.status.clone();
            }
            if let Some(server) = server_ids.get(id) {
                // The task started and recorded the id it is listed by.
                return find(&|e| &e.server_id == server)
                    .map_or(JobStatus::Finished, |e| e.status.clone());
            }
            if let Some(e) = find(&|e| e.array == array && e.tasks == Tasks::Summary) {
                return e.status.clone();
            }
            // SLURM's Torque wrapper: the pending rest of an array is listed
            // under the array's own id; a task that has not yet recorded its
            // id is at most just starting.
            match find(&|e| e.server_id == array && e.tasks == Tasks::NotArray) {
                Some(e) if e.status.is_active() => JobStatus::Pending,
                _ => JobStatus::Unknown,
            }
        }
    }
}

#[cfg(test)]
mod tests;
