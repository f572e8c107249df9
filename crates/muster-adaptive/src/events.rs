//! The event timeline of one cluster: every decision that changes something
//! or changes the situation, with its reason, as JSON lines in
//! `<cluster dir>/events.jsonl`. Appends are single `write` calls on a file
//! opened for appending, so concurrent writers (the agent, the CLI) never tear
//! a line. The file is trimmed to its last [`KEEP`] events when it grows past
//! twice that.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use muster_core::{Error, Home, Result};
use serde::{Deserialize, Serialize};

/// Events kept when the file is trimmed.
pub const KEEP: usize = 1000;

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (Unix seconds, fractional).
    pub time: f64,
    /// A stable word for the kind, e.g. `scale-up`, `scale-down`, `waiting`,
    /// `launched`, `retired`, `died`, `agent`, `adapt`.
    pub kind: String,
    /// What happened and why.
    pub message: String,
}

/// The timeline file of a cluster.
pub fn path(home: &Home, cluster: &str) -> PathBuf {
    home.cluster_dir(cluster).join("events.jsonl")
}

/// Seconds since the Unix epoch, with fractions.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Appends an event (now) to a cluster's timeline. Does nothing when the
/// cluster's directory is gone (it was brought down).
pub fn append(home: &Home, cluster: &str, kind: &str, message: &str) -> Result<()> {
    let dir = home.cluster_dir(cluster);
    if !dir.is_dir() {
        return Ok(());
    }
    let event = Event {
        time: unix_now(),
        kind: kind.to_string(),
        message: message.to_string(),
    };
    tracing::info!(cluster, kind, "{message}");
    let file = path(home, cluster);
    let mut line = serde_json::to_string(&event).expect("an event always serialises");
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .map_err(|e| Error::io(format!("opening {}", file.display()), e))?;
    f.write_all(line.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Roughly 200 bytes an event: trim now and then, not on every write.
    if len > (2 * KEEP * 200) as u64 {
        trim(&file)?;
    }
    Ok(())
}

fn trim(file: &Path) -> Result<()> {
    let text = fs::read_to_string(file).map_err(|e| Error::io("reading events", e))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= KEEP {
        return Ok(());
    }
    let kept = lines[lines.len() - KEEP..].join("\n") + "\n";
    let tmp = file.with_extension("jsonl.tmp");
    fs::write(&tmp, kept).map_err(|e| Error::io("writing events", e))?;
    fs::rename(&tmp, file).map_err(|e| Error::io("replacing events", e))
}

/// A cluster's `events.jsonl` as the reconciler's [`Timeline`](muster_core::Timeline).
#[derive(Debug, Clone)]
pub struct FileTimeline {
    home: Home,
    cluster: String,
}

impl FileTimeline {
    /// The timeline of `cluster` under `home`.
    pub fn new(home: Home, cluster: &str) -> Self {
        FileTimeline {
            home,
            cluster: cluster.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl muster_core::Timeline for FileTimeline {
    async fn record(&self, kind: &str, message: &str) -> Result<()> {
        append(&self.home, &self.cluster, kind, message)
    }
}

/// Parses a timeline; lines that are not events are skipped.
pub fn parse(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A cluster's timeline, oldest first (empty when there is none).
pub fn read(home: &Home, cluster: &str) -> Result<Vec<Event>> {
    let file = path(home, cluster);
    match fs::read_to_string(&file) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("reading {}", file.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_append_read_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        // No cluster directory: nothing is written.
        append(&home, "c", "agent", "hello").unwrap();
        assert!(read(&home, "c").unwrap().is_empty());
        fs::create_dir_all(home.cluster_dir("c")).unwrap();
        append(&home, "c", "scale-up", "target 12 > 4 workers: launching 8").unwrap();
        append(&home, "c", "hostile", "line\nbreak \"quoted\" \u{0}").unwrap();
        let evs = read(&home, "c").unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].kind, "scale-up");
        assert_eq!(evs[1].message, "line\nbreak \"quoted\" \u{0}");
        assert!(evs[0].time > 1.7e9);
        for i in 0..(3 * KEEP) {
            append(
                &home,
                "c",
                "waiting",
                &format!("event {i} {}", "x".repeat(150)),
            )
            .unwrap();
        }
        let evs = read(&home, "c").unwrap();
        assert!(
            evs.len() >= KEEP && evs.len() <= 2 * KEEP + 2,
            "{}",
            evs.len()
        );
        assert!(
            evs.last()
                .unwrap()
                .message
                .starts_with(&format!("event {} ", 3 * KEEP - 1))
        );
        assert_eq!(
            parse("garbage\n{\"time\":1,\"kind\":\"k\",\"message\":\"m\"}\n").len(),
            1
        );
    }
}
