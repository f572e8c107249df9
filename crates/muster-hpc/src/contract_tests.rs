//! The backend contract (muster-core's test kit) over a runner that plays a
//! SLURM queue: `sbatch`, `squeue` and `scancel` answer in the formats
//! recorded from the real SLURM 22.05 of tests/services/slurm (the fixtures
//! of `dialect`), from a job table kept in memory. The real-service tier is
//! tests/e2e/test_slurm.py.

use std::sync::Mutex;

use async_trait::async_trait;
use muster_core::{CommandOutput, CommandSpec};

use super::*;

#[derive(Default)]
struct SimSlurm {
    /// (array id, task, state, job name)
    tasks: Mutex<Vec<(u32, u32, &'static str, String)>>,
    next: Mutex<u32>,
}

fn out(stdout: String) -> CommandOutput {
    CommandOutput {
        code: 0,
        stdout,
        stderr: String::new(),
    }
}

#[async_trait]
impl CommandRunner for SimSlurm {
    async fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput> {
        let argv = &cmd.argv;
        match cmd.program() {
            "sbatch" => {
                let script =
                    String::from_utf8_lossy(cmd.stdin.as_deref().unwrap_or_default()).into_owned();
                let name = script
                    .lines()
                    .find_map(|l| l.strip_prefix("#SBATCH --job-name="))
                    .unwrap_or("")
                    .to_string();
                let count = argv
                    .iter()
                    .find_map(|a| a.strip_prefix("--array=0-"))
                    .map_or(1, |n| n.parse::<u32>().unwrap() + 1);
                let mut next = self.next.lock().unwrap();
                *next += 1;
                let id = 40 + *next;
                let mut tasks = self.tasks.lock().unwrap();
                for t in 0..count {
                    tasks.push((id, t, "RUNNING", name.clone()));
                }
                Ok(out(format!("{id}\n")))
            }
            "squeue" => {
                let tasks = self.tasks.lock().unwrap();
                let lines: String = tasks
                    .iter()
                    .map(|(a, t, st, name)| {
                        format!("{a}_{t}|{a}|{t}|{}|{st}|None|{name}\n", a + 100 + t)
                    })
                    .collect();
                Ok(out(lines))
            }
            "scancel" => {
                let mut tasks = self.tasks.lock().unwrap();
                for id in &argv[1..] {
                    for (a, t, st, _) in tasks.iter_mut() {
                        if *id == format!("{a}_{t}") {
                            *st = "CANCELLED";
                        }
                    }
                }
                Ok(out(String::new()))
            }
            _ => LocalRunner.run(cmd).await,
        }
    }
}

#[tokio::test]
async fn keeps_the_backend_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ClusterSpec::from_yaml(
        &format!(
            "name: ctr\nbackend: {{kind: slurm, log_directory: {}}}\nworker: {{memory: 1GiB}}",
            dir.path().join("logs").display()
        ),
        None,
    )
    .unwrap();
    s.worker.python = "/usr/bin/python3".into();
    assert!(crate::kind::slurm_problems(&s).is_empty());
    let b = HpcBackend::for_spec_with(
        &s,
        Home::at(dir.path()),
        SimSlurm::default(),
        Arc::new(Direct),
    )
    .unwrap()
    .with_user(Some("alice".into()));
    muster_core::testkit::contract::run(&b, "ctr").await;
}
