//! The YARN service of one Dask cluster, as the Services API takes it: pure
//! functions from a validated spec to the exact JSON muster submits (the same
//! text backs `muster render` and the snapshot tests), and the instance
//! names YARN will give the worker containers.
//!
//! The service has two components: `scheduler` (one container, a PORT
//! readiness check on the Dask port) and `worker` (depends on the scheduler,
//! so YARN starts workers once the scheduler is READY and substitutes
//! `${SCHEDULER-0_HOST}` in their command). Each container runs a short shell
//! script. The script travels base64-encoded in `launch_command`, because the
//! text of `launch_command` is not passed literally: YARN replaces `${...}`
//! tokens in it, and the NodeManager (3.4.2) writes it into
//! `exec /bin/bash -c "<launch_command> 1>stdout 2>stderr"` without escaping,
//! then also expands `{{VAR}}` and `<CPS>`. The base64 alphabet has none of
//! the characters those layers act on, so every user string (env, args,
//! python path) reaches Dask exactly as written, quoted for the inner shell.
//!
//! TLS (the default `scheduler.security: tls`): each component lists its
//! party's credential files (the cluster's CA, its own certificate and key)
//! as `STATIC` config files with `APPLICATION` visibility. YARN localises
//! them like any container resource: the NodeManager copies them into the
//! application's private cache under its local dirs (directories 0700,
//! files 0500, removed with the application) and links them into the
//! container's working directory (itself 0710). The service JSON, readable
//! through the RM's REST API, carries only their source paths; the scripts
//! only `--tls-*` paths. The sources are the owner-only files in the cluster's state
//! directory, which the ResourceManager, the service master and the
//! NodeManagers read as `file://` paths: muster runs on a machine of the
//! YARN cluster, or its home is on a filesystem they share.
//! This module does no I/O and knows nothing of HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;
use muster_core::dask::{self, ProcessCommand};
use muster_core::tls::{self, Party};
use muster_core::{ClusterSpec, Memory, SchedulerContact};
use serde::{Deserialize, Serialize};

use crate::options::{
    DEFAULT_DASHBOARD_PORT, DEFAULT_SCHEDULER_MEMORY, DEFAULT_SCHEDULER_PORT,
    DEFAULT_WORKER_MEMORY, YarnOptions,
};

/// Name of the scheduler component (and prefix of its instance, `scheduler-0`).
pub const SCHEDULER: &str = "scheduler";
/// Name of the worker component (instances `worker-0`, `worker-1`, ...).
pub const WORKER: &str = "worker";
/// The scheduler's one instance: also its muster job id.
pub const SCHEDULER_INSTANCE: &str = "scheduler-0";
/// Where a container finds its localised credential files: its working
/// directory, where the NodeManager (3.4.2) links each `STATIC` file by its
/// `dest_file` name.
pub const CONTAINER_TLS_DIR: &str = ".";

/// A service as submitted to `POST /app/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `muster-<cluster>`.
    pub name: String,
    /// The service's version (muster's).
    pub version: String,
    /// Says it is muster's, which cluster, and the user's tags.
    pub description: String,
    /// The queue, when the spec names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `scheduler`, then `worker`.
    pub components: Vec<ComponentSpec>,
}

/// One component of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// `scheduler` or `worker`.
    pub name: String,
    /// Containers wanted.
    pub number_of_containers: u64,
    /// Components that must be READY first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dependencies: Vec<String>,
    /// YARN relaunches a container that exits, whatever its exit code.
    pub restart_policy: String,
    /// The container's size.
    pub resource: ResourceSpec,
    /// When a container counts as READY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_check: Option<ReadinessCheck>,
    /// The environment archive, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Files YARN localises into each container (the TLS credentials).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub configuration: Option<Configuration>,
    /// `echo <script, base64> | base64 -d | bash -s -- <YARN tokens>`.
    pub launch_command: String,
}

/// A container's resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Virtual cores.
    pub cpus: u32,
    /// Memory in MiB, as text (the API's type).
    pub memory: String,
}

/// A readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessCheck {
    /// `PORT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{"port": "<n>"}`.
    pub properties: BTreeMap<String, String>,
}

/// An artifact YARN localises into each container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its URI.
    pub id: String,
    /// `TARBALL`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A component's configuration: only the files it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// The files, localised into every container of the component.
    pub files: Vec<ConfigFile>,
}

/// A file YARN copies into a container before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// `STATIC`: copied as it is, from `src_file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where YARN reads it (a URI of the cluster's filesystem).
    pub src_file: String,
    /// Its name in the container's working directory.
    pub dest_file: String,
    /// `APPLICATION`: cached for this application only, owner-only.
    pub visibility: String,
}

/// The `STATIC` files of `party`'s credentials, read from `dir` (the
/// cluster's local credential directory, an absolute path).
pub fn credential_files(dir: &Path, party: Party) -> Configuration {
    let names = [
        tls::CA_FILE.to_string(),
        party.cert_file(),
        party.key_file(),
    ];
    Configuration {
        files: names
            .into_iter()
            .map(|name| ConfigFile {
                kind: "STATIC".into(),
                src_file: format!("file://{}", dir.join(&name).display()),
                dest_file: name,
                visibility: "APPLICATION".into(),
            })
            .collect(),
    }
}

/// Everything muster would submit for one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendering {
    /// The service JSON.
    pub service: ServiceSpec,
    /// The scheduler container's script, decoded (for people to read).
    pub scheduler_script: String,
    /// The worker containers' script, decoded.
    pub worker_script: String,
}

impl ServiceSpec {
    /// The exact request body, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a service spec always serialises")
    }
}

/// The Dask scheduler's port in the service (YARN needs a fixed one).
pub fn scheduler_port(spec: &ClusterSpec) -> u16 {
    match spec.scheduler.port {
        0 => DEFAULT_SCHEDULER_PORT,
        p => p,
    }
}

/// The dashboard's (and HTTP API's) port in the service.
pub fn dashboard_port(spec: &ClusterSpec) -> u16 {
    match spec.scheduler.dashboard_port {
        0 => DEFAULT_DASHBOARD_PORT,
        p => p,
    }
}

/// A worker container's memory: `worker.memory`, else 2GiB.
pub fn worker_memory(spec: &ClusterSpec) -> Memory {
    spec.worker.memory.unwrap_or(DEFAULT_WORKER_MEMORY)
}

/// The service for `spec` with `workers` worker containers; with TLS, its
/// containers' credentials are localised from `credentials`, the cluster's
/// credential directory (see the module's text).
pub fn render(
    spec: &ClusterSpec,
    opts: &YarnOptions,
    workers: u64,
    credentials: &Path,
) -> Rendering {
    let files = |party| {
        spec.scheduler
            .security
            .is_tls()
            .then(|| credential_files(credentials, party))
    };
    let scheduler_script = scheduler_script(spec, opts);
    let worker_script = worker_script(spec, opts);
    let artifact = opts.archive.as_ref().map(|uri| Artifact {
        id: uri.clone(),
        kind: "TARBALL".into(),
    });
    let port = scheduler_port(spec);
    let scheduler = ComponentSpec {
        name: SCHEDULER.into(),
        number_of_containers: 1,
        dependencies: Vec::new(),
        restart_policy: "ALWAYS".into(),
        resource: ResourceSpec {
            cpus: opts.scheduler_cores.unwrap_or(1),
            memory: mib(opts.scheduler_memory.unwrap_or(DEFAULT_SCHEDULER_MEMORY)),
        },
        readiness_check: Some(ReadinessCheck {
            kind: "PORT".into(),
            properties: BTreeMap::from([("port".to_string(), port.to_string())]),
        }),
        artifact: artifact.clone(),
        configuration: files(Party::Scheduler),
        launch_command: launch_command(&scheduler_script, &[]),
    };
    let worker = ComponentSpec {
        name: WORKER.into(),
        number_of_containers: workers,
        dependencies: vec![SCHEDULER.into()],
        restart_policy: "ALWAYS".into(),
        resource: ResourceSpec {
            cpus: spec.worker.cores,
            memory: mib(worker_memory(spec)),
        },
        readiness_check: None,
        artifact,
        configuration: files(Party::Worker),
        // `${SCHEDULER-0_HOST}` is substituted by YARN once the scheduler's
        // container runs (only because the worker depends on it).
        launch_command: launch_command(&worker_script, &["${SCHEDULER-0_HOST}"]),
    };
    Rendering {
        service: ServiceSpec {
            name: YarnOptions::service_name(&spec.name),
            version: env!("CARGO_PKG_VERSION").into(),
            description: description(&spec.name, &opts.tags),
            queue: opts.queue.clone(),
            components: vec![scheduler, worker],
        },
        scheduler_script,
        worker_script,
    }
}

/// The description that marks a service as muster's: `muster cluster <name>`,
/// then the tags as a JSON list.
pub fn description(cluster: &str, tags: &[String]) -> String {
    let mut d = format!("muster cluster {cluster}");
    if !tags.is_empty() {
        d.push_str("; tags: ");
        d.push_str(&serde_json::to_string(tags).expect("strings serialise"));
    }
    d
}

/// The tags recorded in a description written by [`description`].
pub fn tags_of_description(description: &str) -> Vec<String> {
    description
        .split_once("; tags: ")
        .and_then(|(_, t)| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

fn mib(m: Memory) -> String {
    m.bytes().div_ceil(1 << 20).to_string()
}

/// `echo <base64 of script> | base64 -d | bash -s -- <args> ${COMPONENT_INSTANCE_NAME}`:
/// the script gets YARN's tokens (already substituted) as `$1`, `$2`, ...;
/// the instance name always comes last.
fn launch_command(script: &str, tokens: &[&str]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(script);
    let mut cmd = format!("echo {b64} | base64 -d | bash -s --");
    for t in tokens.iter().chain(&["${COMPONENT_INSTANCE_NAME}"]) {
        cmd.push(' ');
        cmd.push_str(t);
    }
    cmd
}

/// Decodes the script out of a launch command made by [`launch_command`].
pub fn script_of_launch_command(cmd: &str) -> Option<String> {
    let b64 = cmd.strip_prefix("echo ")?.split_once(' ')?.0;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

// Placeholders for the values only the container knows; each is replaced by
// a shell expansion at the one argv position Dask's builders put it.
const HOST: &str = "@MUSTER_YARN_HOST@";
const ADDRESS: &str = "@MUSTER_YARN_ADDRESS@";
const NAME: &str = "@MUSTER_YARN_NAME@";

fn header(spec: &ClusterSpec, what: &str) -> String {
    format!(
        "# muster: {what} of Dask cluster {} (YARN service {}).\n# Arguments: YARN's substitutions; the last is this container's instance name.\n",
        shell_words::quote(&spec.name),
        YarnOptions::service_name(&spec.name)
    )
}

fn exports(spec: &ClusterSpec, opts: &YarnOptions, cmd: &ProcessCommand) -> String {
    let mut env: BTreeMap<&str, &str> = BTreeMap::new();
    env.insert("MUSTER_CLUSTER", &spec.name);
    env.insert("MUSTER_BACKEND", "yarn");
    for (k, v) in opts.env.iter().chain(&cmd.env) {
        env.insert(k, v);
    }
    env.iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_words::quote(v)))
        .collect()
}

/// Joins argv into one shell line, quoting every element, except the
/// positions in `raw`, written as given (shell expansions muster controls).
fn shell_line(argv: &[String], raw: &BTreeMap<usize, String>) -> String {
    argv.iter()
        .enumerate()
        .map(|(i, a)| match raw.get(&i) {
            Some(r) => r.clone(),
            None => shell_words::quote(a).into_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Adds the TLS flags to `cmd` (core's `secure`, paths in the container's
/// working directory) and moves the `raw` positions past what it inserted.
fn secure(
    cmd: &mut ProcessCommand,
    spec: &ClusterSpec,
    party: Party,
    raw: BTreeMap<usize, String>,
) -> BTreeMap<usize, String> {
    let before = cmd.argv.clone();
    dask::secure(cmd, spec, party, CONTAINER_TLS_DIR);
    let added = cmd.argv.len() - before.len();
    let at = before
        .iter()
        .zip(&cmd.argv)
        .position(|(a, b)| a != b)
        .unwrap_or(before.len());
    raw.into_iter()
        .map(|(i, r)| (if i >= at { i + added } else { i }, r))
        .collect()
}

fn position(argv: &[String], value: &str, expected: usize) -> usize {
    // Dask's builders place these at fixed positions; a mismatch is a bug in
    // muster, caught by this module's tests, never a user's input.
    assert_eq!(
        argv.get(expected).map(String::as_str),
        Some(value),
        "muster-core's Dask command layout changed"
    );
    expected
}

/// The scheduler container's script.
pub fn scheduler_script(spec: &ClusterSpec, opts: &YarnOptions) -> String {
    let mut s = spec.clone();
    s.scheduler.port = scheduler_port(spec);
    s.scheduler.dashboard_port = dashboard_port(spec);
    let mut cmd = dask::scheduler_command(&s, HOST, Path::new("scheduler.json"));
    let host_at = position(&cmd.argv, HOST, 4);
    let dash = format!("{HOST}:{}", s.scheduler.dashboard_port);
    let dash_at = position(&cmd.argv, &dash, 8);
    let raw = BTreeMap::from([
        (host_at, "\"$host\"".to_string()),
        (dash_at, format!("\"$host:{}\"", s.scheduler.dashboard_port)),
    ]);
    let raw = secure(&mut cmd, spec, Party::Scheduler, raw);
    let host = match &spec.scheduler.host {
        Some(h) => format!("host={}\n", shell_words::quote(h)),
        // The name the NodeManager reports for the container, which is what
        // YARN substitutes for `${SCHEDULER-0_HOST}` in the workers' command.
        None => "host=$(hostname)\n".to_string(),
    };
    format!(
        "{}{}{host}exec {}\n",
        header(spec, "the scheduler"),
        exports(spec, opts, &cmd),
        shell_line(&cmd.argv, &raw)
    )
}

/// The worker containers' script: `$1` is the scheduler's host, `$2` the
/// container's instance name, which becomes the Dask worker's name.
pub fn worker_script(spec: &ClusterSpec, opts: &YarnOptions) -> String {
    let mut s = spec.clone();
    s.worker.memory = Some(worker_memory(spec));
    let mut cmd = dask::worker_command(&s, NAME, &SchedulerContact::Address(ADDRESS.into()));
    let addr_at = position(&cmd.argv, ADDRESS, 3);
    let name_at = position(&cmd.argv, NAME, 5);
    let raw = BTreeMap::from([
        (
            addr_at,
            format!(
                "\"{}://$1:{}\"",
                dask::comm_scheme(spec),
                scheduler_port(spec)
            ),
        ),
        (name_at, "\"$2\"".to_string()),
    ]);
    let raw = secure(&mut cmd, spec, Party::Worker, raw);
    format!(
        "{}{}exec {}\n",
        header(spec, "a worker"),
        exports(spec, opts, &cmd),
        shell_line(&cmd.argv, &raw)
    )
}

/// `PUT /app/v1/services/{name}/components/worker`: the new worker count.
pub fn flex_body(count: u64) -> serde_json::Value {
    serde_json::json!({ "number_of_containers": count })
}

/// `PUT /app/v1/services/{name}`: remove exactly these worker instances.
/// YARN lowers `number_of_containers` by their number and never reuses
/// their names.
pub fn decommission_body(service: &str, instances: &[String]) -> serde_json::Value {
    serde_json::json!({
        "name": service,
        "components": [{ "name": WORKER, "decommissioned_instances": instances }],
    })
}

/// The worker instances YARN keeps for `count` containers, given the names
/// decommissioned so far. YARN 3.4.2 numbers new instances from a counter
/// that skips decommissioned names, and a plain flex-down removes the
/// highest numbers and steps the counter back; so the live instances are
/// always the first `count` numbers that were not decommissioned.
pub fn worker_instances(count: u64, decommissioned: &BTreeSet<String>) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0u64;
    while (names.len() as u64) < count {
        let name = format!("{WORKER}-{i}");
        if !decommissioned.contains(&name) {
            names.push(name);
        }
        i += 1;
    }
    names
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
