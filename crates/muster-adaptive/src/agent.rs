//! The per-cluster agent: a detached process (the `muster` binary run as
//! `muster agent NAME`, in a session of its own) that outlives the command
//! that started it. It loops muster-core's [`round`] (observe once, decide
//! with the pure policy, act, record) with the file registry as its store,
//! `events.jsonl` as its timeline and the real clock, so it works on every
//! backend the same way and resumes a pause or backoff after a restart (the
//! policy's memory is in the cluster's record).
//!
//! Liveness is an advisory lock (`locks/<name>.agent.lock`) the agent holds for
//! its whole life: the kernel drops it when the agent dies, even by SIGKILL,
//! so "is the agent alive" never guesses from pids, and two agents of one
//! cluster cannot run at once. The agent writes `agent.json` (pid, heartbeat,
//! mode, pause reason) in the cluster's directory every round.
//!
//! Against `down`: the agent only acts while holding the cluster lock and
//! after re-reading the record; `down` takes the same lock and marks the
//! cluster Stopping (or removes it) before cancelling anything, so the agent
//! can never launch a worker once `down` has begun. It exits when the record
//! is gone or not Running, and `down` also stops it ([`stop`]).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_core::policy::{Mode, Policy};
use muster_core::reconcile::{AgentControl, Clock, RoundContext, SystemClock, round};
use muster_core::{Backend, Error, FileStore, Home, Phase, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::events;

/// What the agent writes about itself every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// Its process id.
    pub pid: u32,
    /// When it started (Unix seconds).
    pub started_at: f64,
    /// When it last finished a round (Unix seconds).
    pub heartbeat: f64,
    /// What it aims for.
    pub mode: Option<Mode>,
    /// Why growing is paused, if it is.
    pub paused: Option<String>,
    /// The last decision's reason.
    pub last_decision: Option<String>,
}

/// Whether a cluster's agent runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentHealth {
    /// Alive (it holds its lock).
    Running(AgentState),
    /// It ran and is gone (killed, crashed).
    Dead(AgentState),
    /// It never wrote its state.
    Absent,
}

fn lock_path(home: &Home, cluster: &str) -> PathBuf {
    home.root()
        .join("locks")
        .join(format!("{cluster}.agent.lock"))
}

/// The agent's state file.
pub fn state_path(home: &Home, cluster: &str) -> PathBuf {
    home.cluster_dir(cluster).join("agent.json")
}

/// The agent's log.
pub fn log_path(home: &Home, cluster: &str) -> PathBuf {
    home.cluster_dir(cluster).join("logs").join("agent.log")
}

fn open_lock(home: &Home, cluster: &str) -> Result<File> {
    let path = lock_path(home, cluster);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// True when some process holds the cluster's agent lock.
pub fn is_alive(home: &Home, cluster: &str) -> Result<bool> {
    let file = open_lock(home, cluster)?;
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(fs::TryLockError::WouldBlock) => Ok(true),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("checking the agent lock", e)),
    }
}

/// Reads the agent's state file.
pub fn read_state(home: &Home, cluster: &str) -> Option<AgentState> {
    fs::read_to_string(state_path(home, cluster))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

fn write_state(home: &Home, cluster: &str, state: &AgentState) -> Result<()> {
    let dir = home.cluster_dir(cluster);
    if !dir.is_dir() {
        return Ok(());
    }
    let path = state_path(home, cluster);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(state).expect("agent state serialises");
    fs::write(&tmp, json).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Whether the cluster's agent runs, and what it last said.
pub fn health(home: &Home, cluster: &str) -> Result<AgentHealth> {
    let alive = is_alive(home, cluster)?;
    Ok(match (read_state(home, cluster), alive) {
        (Some(s), true) => AgentHealth::Running(s),
        (Some(s), false) => AgentHealth::Dead(s),
        (None, true) => AgentHealth::Running(AgentState {
            pid: 0,
            started_at: events::unix_now(),
            heartbeat: events::unix_now(),
            mode: None,
            paused: None,
            last_decision: None,
        }),
        (None, false) => AgentHealth::Absent,
    })
}

/// The argv that runs the agent of `cluster` with the binary `exe`.
pub fn agent_argv(exe: &Path, home: &Home, cluster: &str) -> Vec<String> {
    vec![
        exe.display().to_string(),
        "--home".into(),
        home.root().display().to_string(),
        "agent".into(),
        cluster.into(),
    ]
}

/// Starts the agent of `cluster` detached, running `exe agent NAME`, with its
/// output appended to `logs/agent.log`. The agent carries `MUSTER_HOME` and
/// `MUSTER_CLUSTER` (so a look at the OS finds it with the cluster's other
/// processes) but no job marker (so no backend mistakes it for a job). Returns
/// its pid. A second agent for the same cluster exits at once.
pub fn spawn(exe: &Path, home: &Home, cluster: &str) -> Result<u32> {
    let log = log_path(home, cluster);
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    let argv = agent_argv(exe, home, cluster);
    tracing::debug!(?argv, "starting the agent");
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("MUSTER_HOME", home.root())
        .env("MUSTER_CLUSTER", cluster)
        .env_remove("MUSTER_JOB")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    muster_core::runner::detach(&mut command);
    let mut child = command
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", argv.join(" ")), e))?;
    let pid = child.id();
    // Reap it should this process live longer than the agent.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// Starts the agent unless it runs, for a Running cluster. Returns the new
/// pid when one was started.
pub fn ensure(exe: &Path, home: &Home, cluster: &str) -> Result<Option<u32>> {
    let Some(record) = home.load(cluster)? else {
        return Ok(None);
    };
    if record.phase != Phase::Running || is_alive(home, cluster)? {
        return Ok(None);
    }
    let pid = spawn(exe, home, cluster)?;
    // Wait (briefly) until it holds its lock, so the caller sees it alive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !is_alive(home, cluster)? {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(pid))
}

/// Stops the cluster's agent, if it runs: SIGTERM, then SIGKILL after 3 s.
/// The signal goes only to the pid the agent recorded, and only while its
/// lock is held (so a recycled pid is never signalled after the agent died).
pub fn stop(home: &Home, cluster: &str) -> Result<bool> {
    if !is_alive(home, cluster)? {
        return Ok(false);
    }
    let Some(pid) = read_state(home, cluster).map(|s| s.pid).filter(|p| *p > 0) else {
        // Alive but not yet written its state: give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        return match read_state(home, cluster) {
            Some(_) => stop(home, cluster),
            None => Ok(false),
        };
    };
    let pid = Pid::from_raw(pid as i32);
    tracing::debug!(%pid, "stopping the agent");
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    let mut killed = false;
    while is_alive(home, cluster)? {
        if start.elapsed() > Duration::from_secs(3) && !killed {
            let _ = kill(pid, Signal::SIGKILL);
            killed = true;
        }
        if start.elapsed() > Duration::from_secs(8) {
            return Err(Error::LeftBehind {
                cluster: cluster.to_string(),
                jobs: vec![format!("agent (pid {pid})")],
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Wait until the process itself is gone (the lock drops slightly before).
    while kill(pid, None).is_ok() && start.elapsed() < Duration::from_secs(8) {
        if is_zombie(pid.as_raw()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(true)
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st == "Z" || st == "X"))
        })
        .unwrap_or(true)
}

/// Starts and stops agents by running `exe agent NAME` (the `muster`
/// binary) for clusters under `home`: the [`AgentControl`] the CLI and the
/// library hand to their clusters.
#[derive(Debug, Clone)]
pub struct ProcessAgent {
    exe: PathBuf,
    home: Home,
}

impl ProcessAgent {
    /// Agents run as `exe agent NAME` with clusters under `home`.
    pub fn new(exe: impl Into<PathBuf>, home: Home) -> Self {
        ProcessAgent {
            exe: exe.into(),
            home,
        }
    }
}

impl AgentControl for ProcessAgent {
    fn ensure(&self, cluster: &str) -> Result<Option<u32>> {
        let ran_before = read_state(&self.home, cluster).is_some();
        let pid = ensure(&self.exe, &self.home, cluster)?;
        if let (Some(pid), true) = (pid, ran_before) {
            events::append(
                &self.home,
                cluster,
                "agent",
                &format!("the agent was not running: restarted it (pid {pid})"),
            )?;
        }
        Ok(pid)
    }
    fn stop(&self, cluster: &str) -> Result<bool> {
        stop(&self.home, cluster)
    }
}

/// Runs the agent of `name` until the cluster is gone or not Running: one
/// [`round`] after another, each in a span naming the cluster. Holds the
/// agent lock for its whole life; returns at once if another agent holds it.
pub async fn run(home: Home, name: &str, backend: Arc<dyn Backend>) -> Result<()> {
    let span = tracing::info_span!("agent", cluster = %name);
    run_inner(home, name, backend).instrument(span).await
}

async fn run_inner(home: Home, name: &str, backend: Arc<dyn Backend>) -> Result<()> {
    let lock = open_lock(&home, name)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            tracing::info!("another agent runs for {name}: exiting");
            return Ok(());
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("taking the agent lock", e)),
    }
    let mut me = AgentState {
        pid: std::process::id(),
        started_at: events::unix_now(),
        heartbeat: events::unix_now(),
        mode: None,
        paused: None,
        last_decision: None,
    };
    write_state(&home, name, &me)?;
    events::append(
        &home,
        name,
        "agent",
        &format!("agent started (pid {})", me.pid),
    )?;
    let store = FileStore::new(home.clone(), name);
    let timeline = events::FileTimeline::new(home.clone(), name);
    let clock = SystemClock;
    let ctx = RoundContext {
        backend: backend.as_ref(),
        store: &store,
        timeline: &timeline,
        clock: &clock,
    };
    loop {
        let outcome = match round(&ctx).await {
            Ok(o) => o,
            // The round could not even read or write the cluster's state.
            Err(e) if e.is_transient() => {
                tracing::warn!("round failed, retrying: {e}");
                clock.sleep(Duration::from_secs(1)).await;
                continue;
            }
            // `down` removed the cluster, or someone deleted its registry
            // entry, while the round ran: the record is not written back.
            Err(Error::NotFound(_)) => {
                tracing::info!("cluster {name} has no record any more: the agent exits");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if outcome.finished {
            tracing::info!("cluster {name} is gone or stopping: the agent exits");
            return Ok(());
        }
        if let Some(e) = &outcome.failure {
            tracing::warn!("{e}");
        }
        let mut generation = None;
        if let Ok(Some(record)) = home.load(name) {
            me.mode = Some(Policy::from_spec(&record.spec).mode);
            me.paused = record.policy.state.paused.clone();
            me.last_decision = record.policy.last_decision.clone();
            generation = Some(record.adapt_generation);
        }
        me.heartbeat = events::unix_now();
        write_state(&home, name, &me)?;
        sleep_unless_resized(&home, name, generation, outcome.next_poll, &clock).await;
    }
}

/// How often a sleeping agent looks whether its cluster's settings changed.
const SETTINGS_CHECK: Duration = Duration::from_secs(1);

/// Sleeps `wait`, but returns within [`SETTINGS_CHECK`] once the record's
/// `adapt_generation` is no longer `generation` (a `scale` or `adapt` since
/// the round): the agent then decides under the new settings at once, not
/// an interval (up to an hour) later with a decision that no longer holds.
async fn sleep_unless_resized(
    home: &Home,
    name: &str,
    generation: Option<u64>,
    wait: Duration,
    clock: &SystemClock,
) {
    let until = std::time::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        clock.sleep(left.min(SETTINGS_CHECK)).await;
        if let Some(g) = generation
            && matches!(home.load(name), Ok(Some(r)) if r.adapt_generation != g)
        {
            tracing::info!("the cluster's settings changed: deciding now");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_lock_not_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert_eq!(health(&home, "c").unwrap(), AgentHealth::Absent);
        fs::create_dir_all(home.cluster_dir("c")).unwrap();
        let st = AgentState {
            pid: 999_999,
            started_at: 1.0,
            heartbeat: 2.0,
            mode: Some(Mode::Adaptive {
                minimum: 0,
                maximum: 6,
            }),
            paused: None,
            last_decision: None,
        };
        write_state(&home, "c", &st).unwrap();
        assert_eq!(health(&home, "c").unwrap(), AgentHealth::Dead(st.clone()));
        let held = open_lock(&home, "c").unwrap();
        held.try_lock().unwrap();
        assert_eq!(health(&home, "c").unwrap(), AgentHealth::Running(st));
        drop(held);
        assert!(!is_alive(&home, "c").unwrap());
        // Nothing to stop when no agent holds the lock (the recorded pid is
        // never signalled).
        assert!(!stop(&home, "c").unwrap());
    }

    #[test]
    fn the_agent_argv_names_home_and_cluster() {
        let argv = agent_argv(Path::new("/usr/bin/muster"), &Home::at("/h o/me"), "demo");
        assert_eq!(
            argv,
            ["/usr/bin/muster", "--home", "/h o/me", "agent", "demo"]
        );
    }
}
