//! The helper protocol: how muster runs `helper.py` on a host and reads its
//! answer. The host's own Python serves requests, one JSON line each, on one
//! SSH channel per host for the whole muster process. This module owns the
//! wire format (the source on the first line, the answer marker) and turns a
//! helper that ended without answering into muster's errors. It knows
//! nothing of clusters, layouts or what the requests mean.

use std::time::Duration;

use muster_core::Error;
use serde_json::{Value, json};

use crate::{HostAnswer, HostPlan, SshPool, runner, session};

/// The helper program run by each host's Python (see `helper.py`).
const HELPER: &str = include_str!("helper.py");
/// The program `python -c` runs to start the helper as a server: it reads the
/// helper's source, one JSON string, from the first line of stdin.
const SERVE: &str = "import sys,json;exec(json.loads(sys.stdin.buffer.readline().decode()))";
/// The marker the helper prints before its JSON answer, so shell noise from
/// login scripts on stdout cannot confuse the parser.
const ANSWER: &str = "MUSTER-HELPER ";

/// Runs muster's helper on a host. `python` is the interpreter to use; when
/// `None`, the one recorded at launch on that host is used, else
/// `python3`.
pub async fn call_helper(
    pool: SshPool,
    host: HostPlan,
    python: Option<String>,
    state_dir: String,
    cluster: String,
    mut request: Value,
    timeout: Duration,
) -> HostAnswer {
    let host = &host;
    let python = python.as_deref();
    let remote_dir = state_dir.trim();
    let remote_dir = remote_dir
        .strip_prefix("~/")
        .unwrap_or(remote_dir)
        .to_string();
    request["state_dir"] = json!(state_dir);
    request["cluster"] = json!(cluster);
    request["host"] = json!(host.label);
    let req = request.to_string();
    // The helper runs as a server (see helper.py): its source comes first on
    // stdin as one JSON string, then one request per line.
    let serve = runner::quote(SERVE);
    let line = match python {
        Some(py) => format!("exec {} -c {serve}", runner::quote(py)),
        None => {
            let file = format!("{}/ssh/{cluster}/{}/python", remote_dir, host.label);
            format!(
                "cd && P=$(cat {} 2>/dev/null); exec \"${{P:-python3}}\" -c {serve}",
                runner::quote(&file),
            )
        }
    };
    tracing::debug!(host = %host.target.describe(), python = ?python, request = %req, "ssh helper");
    let mut preamble = serde_json::to_string(HELPER).expect("a string serializes");
    preamble.push('\n');
    let reply = pool
        .ask(
            &host.target,
            line,
            preamble.into_bytes(),
            req,
            ANSWER,
            timeout,
        )
        .await
        .map_err(|e| e.into_error(&host.target))?;
    let out = match reply {
        session::Reply::Line(answer) => {
            tracing::debug!(host = %host.target.describe(), "ssh helper answered");
            return serde_json::from_str(&answer).map_err(|e| Error::UnexpectedOutput {
                program: format!("muster helper on {}", host.target.describe()),
                output: format!("{e}: {answer}"),
            });
        }
        session::Reply::Ended(out) => out,
    };
    // It ended without answering.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = muster_core::cluster::tail_lines(stderr.trim(), 5);
    if out.code == 127 {
        Err(Error::MissingDask {
            python: format!(
                "{} on {}",
                python.unwrap_or("python3"),
                host.target.describe()
            ),
            detail: format!("no such program: {tail}"),
        })
    } else {
        Err(Error::CommandFailed {
            program: format!("muster helper on {}", host.target.describe()),
            code: out.code,
            stderr: tail,
        })
    }
}
