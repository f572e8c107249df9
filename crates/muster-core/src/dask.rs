//! The Dask side of muster, isolated in one place: the scheduler and worker
//! command lines, the environment they need, the scheduler file, and (in
//! `client`) an HTTP client for the scheduler's `/api/v1` routes. Backends
//! call these builders and never spell a Dask flag themselves.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{SchedulerContact, WorkerName};
use crate::error::{Error, Result};
use crate::spec::ClusterSpec;

mod client;
mod launcher;
pub use client::{SchedulerClient, WorkerInfo, WorkerLoad};
pub use launcher::launcher_source;

/// The environment variable that lists the scheduler's HTTP route modules.
pub const HTTP_ROUTES_ENV: &str = "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES";

/// distributed's default HTTP routes plus the `/api/v1` module muster needs
/// (adaptive_target, retire_workers, get_workers, check_idle).
pub const HTTP_ROUTES: &str = concat!(
    r#"["distributed.http.scheduler.prometheus", "distributed.http.scheduler.info", "#,
    r#""distributed.http.scheduler.json", "distributed.http.health", "#,
    r#""distributed.http.proxy", "distributed.http.statics", "distributed.http.scheduler.api"]"#,
);

/// A program to start: argv plus the environment it needs on top of the
/// inherited one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment variables to set.
    pub env: BTreeMap<String, String>,
}

/// The argv word that stands for the value of an environment variable,
/// filled in where the command runs ([`ProcessCommand::to_shell`] writes it
/// as `"$VAR"`; a Kubernetes manifest as `$(VAR)`).
pub fn env_word(var: &str) -> String {
    format!("\u{1}{var}\u{1}")
}

/// The variable an argv word made by [`env_word`] stands for.
pub fn env_of_word(word: &str) -> Option<&str> {
    word.strip_prefix('\u{1}')?.strip_suffix('\u{1}')
}

impl ProcessCommand {
    /// The command as one POSIX-shell line (`VAR=value ... prog args`), with
    /// every element quoted as needed.
    pub fn to_shell(&self) -> String {
        let env = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_words::quote(v)));
        let argv = self.argv.iter().map(|a| match env_of_word(a) {
            Some(var) => format!("\"${var}\""),
            None => shell_words::quote(a).into_owned(),
        });
        env.chain(argv).collect::<Vec<_>>().join(" ")
    }
}

/// Seconds as Dask's command line takes them: `60`, or `1.5` when fractional.
fn seconds_text(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

/// The scheduler's command line and environment.
pub fn scheduler_command(spec: &ClusterSpec, host: &str, scheduler_file: &Path) -> ProcessCommand {
    let python = spec
        .scheduler
        .python
        .clone()
        .unwrap_or_else(|| spec.worker.python.clone());
    let mut argv = vec![
        python,
        "-m".into(),
        "distributed.cli.dask_scheduler".into(),
        "--host".into(),
        host.to_string(),
        "--port".into(),
        spec.scheduler.port.to_string(),
        "--dashboard-address".into(),
        format!("{}:{}", bracket_ipv6(host), spec.scheduler.dashboard_port),
        "--scheduler-file".into(),
        scheduler_file.display().to_string(),
    ];
    argv.extend(spec.scheduler.extra_args.iter().cloned());
    let mut env = spec.scheduler.env.clone();
    env.insert(HTTP_ROUTES_ENV.into(), HTTP_ROUTES.into());
    ProcessCommand { argv, env }
}

/// The Dask configuration variables that make the scheduler serve its
/// dashboard and HTTP API over HTTPS with its certificate.
pub const DASHBOARD_TLS_ENV: [&str; 3] = [
    "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CA_FILE",
    "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CERT",
    "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__KEY",
];

/// The scheme of the scheduler's comm address for this spec: `tls` by
/// default, `tcp` with `scheduler.security: none`.
pub fn comm_scheme(spec: &ClusterSpec) -> &'static str {
    if spec.scheduler.security.is_tls() {
        "tls"
    } else {
        "tcp"
    }
}

/// THE place TLS reaches a Dask command (every backend calls it on the
/// scheduler's and the workers' commands it built): with the default
/// `scheduler.security: tls` it adds `--protocol tls`, `--tls-ca-file`,
/// `--tls-cert` and `--tls-key` naming the credential files in `dir`, the
/// directory that holds them on the machine where `cmd` runs (paths only,
/// never contents); for the scheduler also the variables that put its
/// HTTP server on the same certificate. With `none` it changes nothing.
/// The flags go right after the program's module, before the options and
/// the user's extra arguments.
pub fn secure(cmd: &mut ProcessCommand, spec: &ClusterSpec, party: crate::tls::Party, dir: &str) {
    if !spec.scheduler.security.is_tls() {
        return;
    }
    let dir = dir.trim_end_matches('/');
    let ca = format!("{dir}/{}", crate::tls::CA_FILE);
    let cert = format!("{dir}/{}", party.cert_file());
    let key = format!("{dir}/{}", party.key_file());
    let at = args_start(&cmd.argv);
    let flags = [
        "--protocol".to_string(),
        "tls".into(),
        "--tls-ca-file".into(),
        ca.clone(),
        "--tls-cert".into(),
        cert.clone(),
        "--tls-key".into(),
        key.clone(),
    ];
    cmd.argv.splice(at..at, flags);
    if party == crate::tls::Party::Scheduler {
        for (var, value) in DASHBOARD_TLS_ENV.iter().zip([ca, cert, key]) {
            cmd.env.insert((*var).to_string(), value);
        }
    }
}

/// Where the Dask arguments start in an argv built here: right after
/// `python -m distributed.cli.<x>` or `python -c <launcher>`, so flags added
/// later (TLS) go before the options and the user's extra arguments.
pub fn args_start(argv: &[String]) -> usize {
    argv.iter()
        .position(|a| a.starts_with("distributed.cli.") || a == launcher_source())
        .map_or(argv.len(), |i| i + 1)
}

/// A worker job's command line and environment. `name` is the job id, which
/// becomes the Dask worker name (with `-0`, `-1`, ... appended by Dask when the
/// job runs several processes). This and [`scheduler_command`] are the only
/// builders of Dask command lines: every backend calls them.
pub fn worker_command(
    spec: &ClusterSpec,
    name: impl Into<WorkerName>,
    contact: &SchedulerContact,
) -> ProcessCommand {
    let name = match name.into() {
        WorkerName::Fixed(n) => n,
        WorkerName::FromEnv(var) => env_word(&var),
    };
    let w = &spec.worker;
    let mut argv = launcher::worker_program(w);
    match contact {
        SchedulerContact::Address(addr) => argv.push(addr.clone()),
        SchedulerContact::File(path) => {
            argv.push("--scheduler-file".into());
            argv.push(path.display().to_string());
        }
    }
    argv.extend([
        "--name".into(),
        name,
        "--nthreads".into(),
        w.threads_per_process().to_string(),
    ]);
    if w.processes > 1 {
        argv.extend(["--nworkers".into(), w.processes.to_string()]);
    }
    argv.extend([
        "--memory-limit".into(),
        w.memory_per_process()
            .map(|m| m.bytes().to_string())
            .unwrap_or_else(|| "auto".into()),
        "--death-timeout".into(),
        seconds_text(w.death_timeout.duration()),
    ]);
    if !w.nanny {
        argv.push("--no-nanny".into());
    }
    if let Some(iface) = &w.interface {
        argv.extend(["--interface".into(), iface.clone()]);
    }
    if let Some(dir) = &w.local_directory {
        argv.extend(["--local-directory".into(), dir.clone()]);
    }
    argv.extend(w.extra_args.iter().cloned());
    let mut env = w.env.clone();
    launcher::add_env(w, &mut env);
    ProcessCommand { argv, env }
}

/// The argv that checks a python has `distributed` installed and prints its
/// version. It locates the package without importing it (about 10 ms instead
/// of about 330 ms for a full import, which `up` would pay before launching
/// anything); a package that is present but broken shows up as a failed
/// scheduler, reported with its log.
pub fn import_check_argv(python: &str) -> Vec<String> {
    vec![
        python.to_string(),
        "-c".into(),
        "import importlib.util as u, importlib.metadata as m, sys\n\
         if u.find_spec('distributed') is None: sys.exit('ModuleNotFoundError: No module named distributed')\n\
         print(m.version('distributed'))"
            .into(),
    ]
}

/// Checks that every python the spec names (worker's and scheduler's) can
/// import `distributed`, by running [`import_check_argv`] through `runner`
/// (this machine, or a login node). A missing one is
/// [`Error::MissingDask`] naming the python and why.
pub async fn check_pythons(
    runner: &dyn crate::runner::CommandRunner,
    spec: &ClusterSpec,
) -> Result<()> {
    let mut pythons = vec![spec.worker.python.clone()];
    if let Some(p) = &spec.scheduler.python
        && p != &spec.worker.python
    {
        pythons.push(p.clone());
    }
    for python in pythons {
        let mut cmd = crate::runner::CommandSpec::new(import_check_argv(&python));
        cmd.timeout = Some(Duration::from_secs(60));
        match runner.run(&cmd).await {
            Ok(out) if out.code == 0 => {
                tracing::debug!(python = %python, version = out.stdout.trim(), "distributed found");
            }
            Ok(out) => {
                let detail = out
                    .stderr
                    .lines()
                    .last()
                    .unwrap_or("import failed")
                    .trim()
                    .to_string();
                return Err(Error::MissingDask { python, detail });
            }
            Err(Error::CommandNotFound { .. }) => {
                return Err(Error::MissingDask {
                    python,
                    detail: "no such program".into(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The job id a Dask worker name belongs to: the name itself for one process
/// per job, or the name without Dask's `-<i>` suffix for several.
pub fn job_of_worker(worker_name: &str, processes: u32) -> &str {
    if processes > 1
        && let Some((job, index)) = worker_name.rsplit_once('-')
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
    {
        return job;
    }
    worker_name
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Where a running scheduler can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerEndpoint {
    /// The comm address workers and clients use, e.g. `tcp://127.0.0.1:8786`.
    pub address: String,
    /// The dashboard's base URL (also the HTTP API's), e.g. `http://127.0.0.1:8787`.
    pub http_url: String,
}

impl SchedulerEndpoint {
    /// The dashboard link a person opens.
    pub fn dashboard_link(&self) -> String {
        format!("{}/status", self.http_url)
    }
}

#[derive(Deserialize)]
struct SchedulerFile {
    address: String,
    #[serde(default)]
    services: BTreeMap<String, serde_json::Value>,
}

/// Reads the JSON a scheduler writes with `--scheduler-file`. Returns `None`
/// for an incomplete file (the scheduler may be writing it).
pub fn parse_scheduler_file(text: &str) -> Option<SchedulerEndpoint> {
    let file: SchedulerFile = serde_json::from_str(text).ok()?;
    let host = host_of_address(&file.address)?;
    let port = file.services.get("dashboard")?.as_u64()?;
    // A TLS scheduler is one muster started with its certificate on the
    // HTTP server too (see `secure`).
    let scheme = if file.address.starts_with("tls://") {
        "https"
    } else {
        "http"
    };
    Some(SchedulerEndpoint {
        http_url: format!("{scheme}://{}:{port}", bracket_ipv6(host)),
        address: file.address,
    })
}

/// Reads a scheduler file on this machine's filesystem: `None` while it does
/// not exist yet or is still being written.
pub fn read_scheduler_file(path: &Path) -> Result<Option<SchedulerEndpoint>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_scheduler_file(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(
            format!("reading the scheduler file {}", path.display()),
            e,
        )),
    }
}

/// The host and port of an HTTP URL such as `http://10.0.0.5:8787/`.
pub fn http_host_port(url: &str) -> Option<(String, u16)> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), u.port_or_known_default()?))
}

/// `url` with its host and port replaced (e.g. by a tunnel's local end).
pub fn with_host_port(url: &str, host: &str, port: u16) -> Option<String> {
    let mut u = reqwest::Url::parse(url).ok()?;
    u.set_host(Some(host)).ok()?;
    u.set_port(Some(port)).ok()?;
    Some(u.to_string())
}

/// The host part of `tcp://host:port` (IPv6 hosts come back without brackets).
pub fn host_of_address(address: &str) -> Option<&str> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let (host, port) = rest.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some(host.trim_start_matches('[').trim_end_matches(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_rehosted_for_tunnels() {
        let url = "http://10.0.0.5:8787/";
        assert_eq!(http_host_port(url), Some(("10.0.0.5".into(), 8787)));
        assert_eq!(
            with_host_port(url, "127.0.0.1", 40001).as_deref(),
            Some("http://127.0.0.1:40001/")
        );
        assert_eq!(
            http_host_port("http://[fe80::1]:80/x"),
            Some(("fe80::1".into(), 80))
        );
        assert_eq!(http_host_port("not a url"), None);
    }
    use std::path::PathBuf;

    fn spec(yaml: &str) -> ClusterSpec {
        let s = ClusterSpec::from_yaml(yaml, None).unwrap();
        s.validate().unwrap();
        s
    }

    #[test]
    fn secure_adds_tls_flags_and_paths_only() {
        use crate::tls::Party;
        let s = spec("name: demo\nworker: {extra_args: [--resources, GPU=1]}");
        let mut sched = scheduler_command(&s, "0.0.0.0", Path::new("/s/scheduler.json"));
        secure(&mut sched, &s, Party::Scheduler, "/state/tls/");
        insta::assert_snapshot!("secure_scheduler", sched.to_shell());
        let contact = SchedulerContact::File("/s/scheduler.json".into());
        let mut worker = worker_command(&s, "demo-w0", &contact);
        secure(&mut worker, &s, Party::Worker, "tls");
        insta::assert_snapshot!("secure_worker", worker.to_shell());
        // The user's extra arguments stay last.
        assert_eq!(worker.argv.last().map(String::as_str), Some("GPU=1"));

        let plain = spec("name: demo\nscheduler: {security: none}");
        let before = scheduler_command(&plain, "h", Path::new("f"));
        let mut after = before.clone();
        secure(&mut after, &plain, Party::Scheduler, "/state/tls");
        assert_eq!(before, after);
        assert_eq!(comm_scheme(&plain), "tcp");
        assert_eq!(comm_scheme(&s), "tls");
    }

    #[test]
    fn tls_scheduler_files_give_https_urls() {
        let ep = parse_scheduler_file(
            r#"{"address": "tls://10.0.0.5:8786", "services": {"dashboard": 8787}}"#,
        )
        .unwrap();
        assert_eq!(ep.http_url, "https://10.0.0.5:8787");
    }

    #[test]
    fn scheduler_command_enables_the_api() {
        let cmd = scheduler_command(
            &spec("name: demo"),
            "127.0.0.1",
            Path::new("/s/scheduler.json"),
        );
        insta::assert_snapshot!(cmd.to_shell());
    }

    #[test]
    fn worker_command_with_every_option() {
        let s = spec(
            r#"
name: demo
worker:
  cores: 8
  processes: 2
  memory: 16GiB
  python: /opt/venv/bin/python
  interface: ib0
  local_directory: /scratch/$USER
  death_timeout: 2m
  env: {OMP_NUM_THREADS: "1", NOTE: "it's $(id)"}
  extra_args: ["--resources", "GPU=1"]
"#,
        );
        let cmd = worker_command(
            &s,
            "demo-w3",
            &SchedulerContact::Address("tcp://10.0.0.1:8786".into()),
        );
        insta::assert_snapshot!(cmd.to_shell());
        let by_file = worker_command(
            &s,
            "demo-w3",
            &SchedulerContact::File(PathBuf::from("/s/f.json")),
        );
        assert_eq!(by_file.argv[3..5], ["--scheduler-file", "/s/f.json"]);
    }

    #[test]
    fn the_launcher_is_the_default_and_warm_start_false_runs_dask_as_is() {
        let contact = SchedulerContact::Address("tcp://h:1".into());
        let warm = worker_command(&spec("name: x"), "x-w0", &contact);
        assert_eq!(warm.argv[..3], ["python3", "-c", launcher_source()]);
        assert_eq!(warm.argv[3], "tcp://h:1");
        assert_eq!(warm.env["MALLOC_TRIM_THRESHOLD_"], "65536");
        // The shipped text is the file without comments and blank lines.
        assert!(!launcher_source().contains('#'));
        assert!(launcher_source().ends_with("main()\n"));
        assert_eq!(args_start(&warm.argv), 3);
        insta::assert_snapshot!("launcher_source", launcher_source());
        for off in ["worker: {warm_start: false}", "worker: {nanny: false}"] {
            let plain = worker_command(&spec(&format!("name: x\n{off}")), "x-w0", &contact);
            assert_eq!(
                plain.argv[..3],
                ["python3", "-m", "distributed.cli.dask_worker"],
                "{off}"
            );
            assert!(plain.env.is_empty(), "{off}");
        }
        let own = spec("name: x\nworker: {env: {MALLOC_TRIM_THRESHOLD_: '0'}}");
        assert_eq!(
            worker_command(&own, "x-w0", &contact).env["MALLOC_TRIM_THRESHOLD_"],
            "0"
        );
    }

    #[test]
    fn hostile_values_stay_single_arguments() {
        let s = spec("name: x\nworker: {extra_args: [\"a b; rm -rf / `id` $(id)\"]}");
        let cmd = worker_command(&s, "x-w0", &SchedulerContact::Address("tcp://h:1".into()));
        assert_eq!(cmd.argv.last().unwrap(), "a b; rm -rf / `id` $(id)");
        assert!(
            cmd.to_shell().ends_with("'a b; rm -rf / `id` $(id)'"),
            "{}",
            cmd.to_shell()
        );
    }

    #[test]
    fn scheduler_files_parse() {
        let text = r#"{"type": "Scheduler", "id": "Scheduler-1", "address": "tcp://127.0.0.1:38179",
            "services": {"dashboard": 44805}, "started": 1.0, "workers": {}}"#;
        let ep = parse_scheduler_file(text).unwrap();
        assert_eq!(ep.address, "tcp://127.0.0.1:38179");
        assert_eq!(ep.http_url, "http://127.0.0.1:44805");
        assert_eq!(ep.dashboard_link(), "http://127.0.0.1:44805/status");
        let v6 = r#"{"address": "tcp://[::1]:9000", "services": {"dashboard": 9001}}"#;
        assert_eq!(
            parse_scheduler_file(v6).unwrap().http_url,
            "http://[::1]:9001"
        );
        assert_eq!(parse_scheduler_file(""), None);
        assert_eq!(parse_scheduler_file("{\"addr"), None);
        assert_eq!(
            parse_scheduler_file(r#"{"address": "tcp://h:1", "services": {}}"#),
            None
        );
    }

    #[test]
    fn worker_names_map_to_jobs() {
        assert_eq!(job_of_worker("demo-w3", 1), "demo-w3");
        assert_eq!(job_of_worker("demo-w3-1", 2), "demo-w3");
        assert_eq!(job_of_worker("demo-w3", 2), "demo-w3");
        assert_eq!(job_of_worker("1234_5-0", 4), "1234_5");
    }
}
