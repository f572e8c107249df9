//! The `backend:` section of a YARN cluster (`kind: yarn`): its typed options
//! and their validation. Every problem names its full field path and the
//! offending value, and all are reported at once, before anything is sent to
//! a ResourceManager. This module knows nothing of HTTP or of the service
//! JSON; it only says what a spec may contain.

use std::collections::BTreeMap;

use muster_core::spec::FieldError;
use muster_core::{ClusterSpec, Memory};
use serde::{Deserialize, Serialize};

/// The prefix of every YARN service muster creates: the service of cluster
/// `demo` is `muster-demo`. It is muster's marker on the ResourceManager.
pub const SERVICE_PREFIX: &str = "muster-";

/// YARN limits a service name to a DNS label (its registry and DNS use it).
pub const MAX_SERVICE_NAME: usize = 63;

/// The Dask scheduler's port when the spec leaves it at 0: a YARN service
/// needs a fixed one (workers are told `${SCHEDULER-0_HOST}:<port>`).
pub const DEFAULT_SCHEDULER_PORT: u16 = 8786;
/// The dashboard's port when the spec leaves it at 0.
pub const DEFAULT_DASHBOARD_PORT: u16 = 8787;
/// A worker container's memory when `worker.memory` is absent.
pub const DEFAULT_WORKER_MEMORY: Memory = Memory(2 << 30);
/// The scheduler container's memory when `backend.scheduler_memory` is absent.
pub const DEFAULT_SCHEDULER_MEMORY: Memory = Memory(1 << 30);

/// Options of the YARN backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct YarnOptions {
    /// The ResourceManager's web address (`http://rm:8088`), or several for an
    /// HA pair: each is tried in turn, and the one that answers is kept.
    #[serde(default)]
    pub resource_manager: ResourceManagers,
    /// The queue the service is submitted to; the cluster's default queue
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Who the service runs as: `user.name` under simple authentication.
    /// The local user when absent. (Kerberos/SPNEGO is not supported yet.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An environment archive (a venv-pack or conda-pack tarball) to ship to
    /// every container as a YARN `TARBALL` artifact, e.g.
    /// `hdfs:///envs/dask.tar.gz`. YARN unpacks it into `./lib` of each
    /// container, so point `worker.python` at `lib/bin/python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Extra environment variables of every container (scheduler and
    /// workers); `scheduler.env` and `worker.env` override them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Labels recorded with the service (in its description, since the
    /// Services API has no tag field) so people can tell clusters apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Virtual cores of the scheduler's container (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_cores: Option<u32>,
    /// Memory of the scheduler's container (default 1GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_memory: Option<Memory>,
}

/// One ResourceManager address or an HA list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResourceManagers {
    /// No address given.
    #[default]
    #[serde(skip)]
    Missing,
    /// One address.
    One(String),
    /// Several (ResourceManager HA), tried in order.
    Many(Vec<String>),
}

impl ResourceManagers {
    /// The addresses in the order they are tried.
    pub fn urls(&self) -> Vec<&str> {
        match self {
            ResourceManagers::Missing => Vec::new(),
            ResourceManagers::One(u) => vec![u.as_str()],
            ResourceManagers::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl YarnOptions {
    /// The name of the YARN service of cluster `cluster`.
    pub fn service_name(cluster: &str) -> String {
        format!("{SERVICE_PREFIX}{cluster}")
    }

    /// The user the REST calls name: the configured one, else the local user.
    pub fn effective_user(&self) -> String {
        self.user.clone().unwrap_or_else(local_user)
    }

    /// Every problem with these options and with the parts of `spec` the YARN
    /// backend constrains, each naming its full path (`prefix` is the path of
    /// the options themselves, normally `backend`).
    pub fn validate(&self, prefix: &str, spec: &ClusterSpec) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut bad = |field: String, value: &dyn std::fmt::Display, reason: &str| {
            errs.push(FieldError {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };

        let rm_field = format!("{prefix}.resource_manager");
        match &self.resource_manager {
            ResourceManagers::Missing => bad(
                rm_field.clone(),
                &"",
                "is required: the ResourceManager's web address, e.g. http://rm.example.org:8088 (or a list of them for HA)",
            ),
            ResourceManagers::Many(v) if v.is_empty() => {
                bad(rm_field.clone(), &"[]", "must list at least one address")
            }
            _ => {}
        }
        let many = matches!(self.resource_manager, ResourceManagers::Many(_));
        for (i, url) in self.resource_manager.urls().into_iter().enumerate() {
            let field = if many {
                format!("{rm_field}[{i}]")
            } else {
                rm_field.clone()
            };
            if let Err(reason) = check_rm_url(url) {
                bad(field, &url, &reason);
            }
        }

        if let Some(queue) = &self.queue {
            let ok = !queue.is_empty()
                && queue.len() <= 255
                && queue
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !queue.starts_with('.')
                && !queue.ends_with('.');
            if !ok {
                bad(
                    format!("{prefix}.queue"),
                    queue,
                    "must be a queue name or path such as default or root.analytics (letters, digits, '.', '_', '-')",
                );
            }
        }
        if let Some(user) = &self.user {
            let ok = !user.is_empty()
                && user.len() <= 64
                && !user.starts_with('-')
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                bad(
                    format!("{prefix}.user"),
                    user,
                    "must be a user name (letters, digits, '.', '_', '-'; not starting with '-')",
                );
            }
        }
        if let Some(archive) = &self.archive
            && let Err(reason) = check_archive(archive)
        {
            bad(format!("{prefix}.archive"), archive, &reason);
        }
        for (key, value) in &self.env {
            let field = format!("{prefix}.env.{key}");
            let valid_key = !key.is_empty()
                && !key.as_bytes()[0].is_ascii_digit()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_key {
                bad(
                    field.clone(),
                    key,
                    "an environment variable name must match [A-Za-z_][A-Za-z0-9_]*",
                );
            } else if key.starts_with("MUSTER_") {
                bad(
                    field.clone(),
                    key,
                    "MUSTER_* variables are set by muster itself",
                );
            }
            if value.contains('\0') {
                bad(field, value, "must not contain NUL bytes");
            }
        }
        if self.tags.len() > 10 {
            bad(
                format!("{prefix}.tags"),
                &self.tags.len(),
                "at most 10 tags (YARN's limit on application tags)",
            );
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.is_empty() || tag.chars().count() > 100 || tag.chars().any(char::is_control) {
                bad(
                    format!("{prefix}.tags[{i}]"),
                    tag,
                    "must be 1 to 100 characters without control characters",
                );
            }
        }
        if let Some(cores) = self.scheduler_cores
            && !(1..=4096).contains(&cores)
        {
            bad(
                format!("{prefix}.scheduler_cores"),
                &cores,
                "must be between 1 and 4096",
            );
        }
        if let Some(mem) = self.scheduler_memory
            && mem.bytes() < (128 << 20)
        {
            bad(
                format!("{prefix}.scheduler_memory"),
                &mem,
                "too small: the scheduler's container needs at least 128MiB",
            );
        }

        // The rest of the spec, as far as YARN constrains it.
        let service = Self::service_name(&spec.name);
        if !spec.name.is_empty() && service.len() > MAX_SERVICE_NAME {
            bad(
                "name".into(),
                &spec.name,
                &format!(
                    "too long for YARN: the service name {service:?} must be at most {MAX_SERVICE_NAME} characters"
                ),
            );
        }
        if spec.scheduler.port != 0 && spec.scheduler.port == DEFAULT_DASHBOARD_PORT
            || spec.scheduler.dashboard_port != 0
                && spec.scheduler.dashboard_port == DEFAULT_SCHEDULER_PORT
                && spec.scheduler.port == 0
        {
            bad(
                "scheduler.port".into(),
                &spec.scheduler.port,
                "clashes with the other of the scheduler's ports (YARN needs both fixed: 0 means 8786 for the scheduler, 8787 for the dashboard)",
            );
        }
        if let Some(mem) = spec.worker.memory
            && mem.bytes() > (1 << 50)
        {
            bad(
                "worker.memory".into(),
                &mem,
                "too large for a YARN container request",
            );
        }
        errs
    }
}

/// The local user, for `user.name` when the spec names none: `$USER`,
/// else `$LOGNAME`, else this process's uid looked up in /etc/passwd.
pub fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_of_uid)
        .unwrap_or_else(|| "root".to_string())
}

fn user_of_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

fn check_rm_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("is not a URL ({e}); expected e.g. http://rm.example.org:8088"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "https is not supported yet (muster is built without TLS); use the http address"
                    .into(),
            );
        }
        other => return Err(format!("scheme {other:?}: expected http://")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials (set backend.user instead)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err("must be the ResourceManager's root address, without a path".into());
    }
    Ok(())
}

fn check_archive(archive: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(archive).map_err(|e| {
        format!("is not a URI ({e}); expected e.g. hdfs:///envs/dask.tar.gz or file:///shared/dask.tar.gz")
    })?;
    if parsed.path().is_empty() || parsed.path() == "/" {
        return Err("names no file".into());
    }
    if archive.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    let lower = parsed.path().to_ascii_lowercase();
    if ![".tar.gz", ".tgz", ".tar", ".zip"]
        .iter()
        .any(|ext| lower.ends_with(ext))
    {
        return Err("must be a .tar.gz, .tgz, .tar or .zip archive (YARN unpacks it)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec::from_yaml("name: demo\nworkers: 2\n", None).unwrap()
    }

    fn opts(yaml: &str) -> YarnOptions {
        serde_json::from_value(serde_yaml_value(yaml)).unwrap()
    }

    fn serde_yaml_value(yaml: &str) -> serde_json::Value {
        // The tests write options as JSON-compatible YAML flow maps.
        serde_json::from_str(yaml).unwrap()
    }

    #[test]
    fn one_or_many_resource_managers() {
        let one = opts(r#"{"resource_manager": "http://rm:8088"}"#);
        assert_eq!(one.resource_manager.urls(), vec!["http://rm:8088"]);
        let many = opts(r#"{"resource_manager": ["http://rm1:8088", "http://rm2:8088"]}"#);
        assert_eq!(many.resource_manager.urls().len(), 2);
        assert!(one.validate("backend", &spec()).is_empty());
        assert!(many.validate("backend", &spec()).is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let o = opts(
            r#"{"resource_manager": ["http://rm1:8088", "https://rm2:8090", "rm3", "http://rm4:8088/cluster?x=1"],
                "queue": "bad queue", "user": "-x", "archive": "file:///env.rpm",
                "env": {"1X": "a", "MUSTER_X": "b", "OK": "c\u0000"},
                "tags": ["", "fine"], "scheduler_cores": 0, "scheduler_memory": "1MiB"}"#,
        );
        let fields: Vec<String> = o
            .validate("backend", &spec())
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "backend.resource_manager[1]",
                "backend.resource_manager[2]",
                "backend.resource_manager[3]",
                "backend.queue",
                "backend.user",
                "backend.archive",
                "backend.env.1X",
                "backend.env.MUSTER_X",
                "backend.env.OK",
                "backend.tags[0]",
                "backend.scheduler_cores",
                "backend.scheduler_memory",
            ]
        );
    }

    #[test]
    fn missing_resource_manager_and_long_name() {
        let mut s = spec();
        s.name = "a".repeat(60);
        let errs = YarnOptions::default().validate("backend", &s);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["backend.resource_manager", "name"]);
        assert!(errs[1].reason.contains("at most 63"), "{}", errs[1].reason);
    }

    #[test]
    fn unknown_options_are_refused_all_at_once() {
        let opts =
            serde_json::json!({"resource_manager": "http://rm:8088", "bogus": 1, "quuee": "q"});
        let (_, errs) =
            muster_core::kinds::read_options::<YarnOptions>("backend", opts.as_object().unwrap());
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["backend.bogus", "backend.quuee"]);
        assert!(errs.iter().all(|e| e.reason == "unknown field"), "{errs:?}");
    }

    #[test]
    fn the_uid_names_the_local_user() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let expected = String::from_utf8(id.stdout).unwrap().trim().to_string();
        assert_eq!(user_of_uid().as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn port_clash_with_yarn_defaults() {
        let mut s = spec();
        s.scheduler.port = DEFAULT_DASHBOARD_PORT;
        let errs = opts(r#"{"resource_manager": "http://rm:8088"}"#).validate("backend", &s);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "scheduler.port");
    }
}
