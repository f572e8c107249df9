//! Finding and signalling muster's processes through `/proc`. Every process
//! muster starts carries `MUSTER_HOME`, `MUSTER_CLUSTER` and `MUSTER_JOB` in its
//! environment, and children inherit it, so the whole tree of a job (nanny,
//! worker, multiprocessing helpers) is found from the OS alone.

use std::collections::BTreeMap;
use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable naming the muster home a process belongs to.
pub const ENV_HOME: &str = "MUSTER_HOME";
/// The environment variable naming the cluster a process belongs to.
pub const ENV_CLUSTER: &str = "MUSTER_CLUSTER";
/// The environment variable naming the job a process belongs to.
pub const ENV_JOB: &str = "MUSTER_JOB";

/// A live process of some muster job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedProcess {
    /// Its pid.
    pub pid: i32,
    /// The job it belongs to.
    pub job: String,
}

/// Parses the NUL-separated `KEY=value` list of `/proc/<pid>/environ` into the
/// three marker values, if all are present.
pub fn parse_marker(environ: &[u8]) -> Option<(String, String, String)> {
    let (mut home, mut cluster, mut job) = (None, None, None);
    for entry in environ.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&entry[..eq], &entry[eq + 1..]);
        let slot = match key {
            k if k == ENV_HOME.as_bytes() => &mut home,
            k if k == ENV_CLUSTER.as_bytes() => &mut cluster,
            k if k == ENV_JOB.as_bytes() => &mut job,
            _ => continue,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
    Some((home?, cluster?, job?))
}

/// True when `/proc/<pid>/stat` says the process is a zombie or dead.
fn is_defunct(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself
        // contain spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Every live process of the cluster `cluster` under muster home `home`.
pub fn scan(home: &str, cluster: &str) -> Vec<MarkedProcess> {
    scan_home(home).remove(cluster).unwrap_or_default()
}

/// Every live process of any cluster under muster home `home`, by cluster:
/// what runs on this host whether or not the registry remembers it.
pub fn scan_home(home: &str) -> BTreeMap<String, Vec<MarkedProcess>> {
    let mut out: BTreeMap<String, Vec<MarkedProcess>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Unreadable (another user's process, or it just exited): not ours.
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if let Some((h, c, job)) = parse_marker(&environ)
            && h == home
            && !is_defunct(pid)
        {
            out.entry(c).or_default().push(MarkedProcess { pid, job });
        }
    }
    for procs in out.values_mut() {
        procs.sort_by_key(|p| p.pid);
    }
    out
}

/// The live processes of each job.
pub fn by_job(procs: &[MarkedProcess]) -> BTreeMap<&str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in procs {
        out.entry(p.job.as_str()).or_default().push(p.pid);
    }
    out
}

/// True when `pid` is alive, not a zombie, and carries the marker of `job`.
pub fn is_job_alive(pid: i32, home: &str, cluster: &str, job: &str) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    parse_marker(&environ).is_some_and(|(h, c, j)| h == home && c == cluster && j == job)
        && !is_defunct(pid)
}

/// Sends a signal to one process and to the process group it leads (each job
/// runs in its own session, so the group holds the job's whole tree).
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(-pid), sig);
    let _ = kill(Pid::from_raw(pid), sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_from_environ() {
        let env = b"PATH=/bin\0MUSTER_HOME=/h\0MUSTER_CLUSTER=demo\0MUSTER_JOB=demo-w1\0X=a=b\0";
        assert_eq!(
            parse_marker(env),
            Some(("/h".into(), "demo".into(), "demo-w1".into()))
        );
        assert_eq!(parse_marker(b"MUSTER_HOME=/h\0MUSTER_CLUSTER=demo\0"), None);
        assert_eq!(parse_marker(b""), None);
        assert_eq!(parse_marker(b"garbage\0\0=\0"), None);
    }

    #[test]
    fn this_test_process_is_not_a_muster_process() {
        assert!(scan("/nonexistent-home", "nothing").is_empty());
        assert!(!is_defunct(std::process::id() as i32));
    }
}
