//! From what the user wrote to where to connect: destinations, the ssh client
//! config (`~/.ssh/config` or an explicit file, parsed with `ssh2-config`),
//! hostfiles, and the backend's layout of hosts (which one runs the
//! scheduler, which take workers). Problems are spec errors naming the field.

use std::path::PathBuf;
use std::time::Duration;

use crate::ssh_spec::{
    Destination, SshConnectSpec, SshHost, SshHostMap, SshSpec, host_label, parse_destination,
};
use muster_core::spec::{FieldError, SpecError};
use muster_core::{Error, Result};
use ssh2_config::{ParseRule, SshConfig};

use crate::session::SshTarget;

/// How to reach hosts, for [`SshRunner::connect_to`](crate::SshRunner::connect_to)
/// and the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// The ssh client config; `~/.ssh/config` (if it exists) when `None`.
    pub ssh_config: Option<PathBuf>,
    /// Login name when neither the destination nor the ssh config gives one.
    pub user: Option<String>,
    /// Port when neither the destination nor the ssh config gives one.
    pub port: Option<u16>,
    /// Private key to use (before the ssh config's).
    pub identity: Option<PathBuf>,
    /// known_hosts file (before the ssh config's `UserKnownHostsFile`).
    pub known_hosts: Option<PathBuf>,
    /// Trust and record keys of hosts not yet known.
    pub accept_new_host_keys: bool,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Default limit on each command.
    pub command_timeout: Duration,
    /// Most connections at once.
    pub parallelism: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            ssh_config: None,
            user: None,
            port: None,
            identity: None,
            known_hosts: None,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            parallelism: 32,
        }
    }
}

impl SshOptions {
    /// The options an SSH backend section asks for.
    pub fn from_spec(s: &SshSpec) -> Self {
        SshOptions {
            user: s.user.clone(),
            port: s.port,
            command_timeout: s.command_timeout().duration(),
            parallelism: s.parallelism as usize,
            ..SshOptions::connecting(&s.connect)
        }
    }

    /// What the connection settings say, the rest left at the defaults.
    fn connecting(c: &SshConnectSpec) -> Self {
        let d = SshOptions::default();
        SshOptions {
            ssh_config: c.ssh_config.as_deref().map(expand_tilde),
            identity: c.identity.as_deref().map(expand_tilde),
            known_hosts: c.known_hosts.as_deref().map(expand_tilde),
            accept_new_host_keys: c.accept_new_host_keys,
            connect_timeout: c
                .connect_timeout
                .map_or(d.connect_timeout, |t| t.duration()),
            command_timeout: c
                .command_timeout
                .map_or(d.command_timeout, |t| t.duration()),
            ..d
        }
    }
}

impl SshOptions {
    /// The options for one login node (`backend.ssh` of a batch backend with
    /// `submit_host`); unset fields keep [`SshOptions::default`]'s values,
    /// except that commands may take 120 s (a busy batch server is slow).
    pub fn for_login_node(c: Option<&SshConnectSpec>) -> Self {
        let c = c.cloned().unwrap_or_default();
        SshOptions {
            command_timeout: c
                .command_timeout
                .map_or(Duration::from_secs(120), |t| t.duration()),
            parallelism: 4,
            ..SshOptions::connecting(&c)
        }
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `~/x` → `$HOME/x`; other paths unchanged.
pub fn expand_tilde(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None if path == "~" => home_dir(),
        None => PathBuf::from(path),
    }
}

fn invalid(field: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::Spec(SpecError::Invalid(vec![FieldError {
        field: field.into(),
        value: value.into(),
        reason: reason.into(),
    }]))
}

/// Reads the ssh client config the options name (or `~/.ssh/config` when it
/// exists). `None` when there is none.
pub fn load_ssh_config(options: &SshOptions) -> Result<Option<SshConfig>> {
    let (path, explicit) = match &options.ssh_config {
        Some(p) => (p.clone(), true),
        None => (home_dir().join(".ssh/config"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(invalid(
                "backend.ssh_config",
                &path.display().to_string(),
                format!("cannot read it: {e}"),
            ));
        }
    };
    SshConfig::default()
        .parse(
            &mut text.as_bytes(),
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
        .map(Some)
        .map_err(|e| {
            invalid(
                "backend.ssh_config",
                &path.display().to_string(),
                format!("cannot parse it: {e}"),
            )
        })
}

fn config_value<'a>(params: &'a ssh2_config::HostParams, key: &str) -> Option<&'a [String]> {
    params
        .unsupported_fields
        .get(key)
        .or_else(|| params.ignored_fields.get(key))
        .map(Vec::as_slice)
}

fn is_yes(v: Option<&[String]>) -> bool {
    v.and_then(|v| v.first())
        .is_some_and(|s| s.eq_ignore_ascii_case("yes"))
}

/// Where to connect for one host: the entry's own settings, then the
/// options', then the ssh config's, then ssh's defaults.
pub fn resolve_target(
    dest: &Destination,
    entry: &SshHostMap,
    options: &SshOptions,
    config: Option<&SshConfig>,
) -> SshTarget {
    let params = config.map(|c| c.query(&dest.host));
    let user = entry
        .user
        .clone()
        .or_else(|| dest.user.clone())
        .or_else(|| options.user.clone())
        .or_else(|| params.as_ref().and_then(|p| p.user.clone()))
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "root".into());
    let port = entry
        .port
        .or(dest.port)
        .or(options.port)
        .or_else(|| params.as_ref().and_then(|p| p.port))
        .unwrap_or(22);
    let hostname = params
        .as_ref()
        .and_then(|p| p.host_name.clone())
        .unwrap_or_else(|| dest.host.clone());
    let mut identities: Vec<PathBuf> = Vec::new();
    if let Some(i) = &entry.identity {
        identities.push(expand_tilde(i));
    }
    if let Some(i) = &options.identity {
        identities.push(i.clone());
    }
    if let Some(files) = params.as_ref().and_then(|p| p.identity_file.clone()) {
        identities.extend(files);
    }
    if identities.is_empty() {
        let ssh = home_dir().join(".ssh");
        identities.extend(["id_ed25519", "id_ecdsa", "id_rsa"].map(|k| ssh.join(k)));
    }
    let identities_only = is_yes(
        params
            .as_ref()
            .and_then(|p| config_value(p, "identitiesonly")),
    );
    let mut known_hosts: Vec<PathBuf> = Vec::new();
    if let Some(k) = &options.known_hosts {
        known_hosts.push(k.clone());
    } else if let Some(files) = params
        .as_ref()
        .and_then(|p| config_value(p, "userknownhostsfile"))
    {
        known_hosts.extend(files.iter().map(|f| expand_tilde(f)));
    } else {
        known_hosts.push(home_dir().join(".ssh/known_hosts"));
    }
    match params
        .as_ref()
        .and_then(|p| config_value(p, "globalknownhostsfile"))
    {
        Some(files) => known_hosts.extend(files.iter().map(|f| expand_tilde(f))),
        None if options.known_hosts.is_none() => {
            known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"))
        }
        None => {}
    }
    let accept_new = options.accept_new_host_keys
        || params
            .as_ref()
            .and_then(|p| config_value(p, "stricthostkeychecking"))
            .and_then(|v| v.first())
            .is_some_and(|v| v.eq_ignore_ascii_case("accept-new"));
    SshTarget {
        alias: dest.host.clone(),
        hostname,
        port,
        user,
        identities,
        use_agent: !identities_only,
        known_hosts,
        accept_new_host_keys: accept_new,
        connect_timeout: options.connect_timeout,
    }
}

/// Resolves one `user@host:port` destination like `ssh` would.
pub fn resolve_destination(destination: &str, options: &SshOptions) -> Result<SshTarget> {
    let dest = parse_destination(destination)
        .map_err(|reason| invalid("backend.submit_host", destination, reason))?;
    let config = load_ssh_config(options)?;
    Ok(resolve_target(
        &dest,
        &SshHostMap::default(),
        options,
        config.as_ref(),
    ))
}

/// Reads a hostfile: one `user@host:port` per line; blank lines and `#`
/// comments are skipped.
pub fn parse_hostfile(text: &str) -> std::result::Result<Vec<SshHost>, (usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        parse_destination(line).map_err(|reason| (n + 1, reason))?;
        out.push(SshHost::from(line));
    }
    Ok(out)
}

/// One host of a cluster, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// Short name in job ids, markers and paths (DNS- and shell-safe).
    pub label: String,
    /// How to reach it.
    pub target: SshTarget,
    /// The Python given for this host in the spec, if any (else the
    /// spec's `worker.python`).
    pub explicit_python: Option<String>,
}

/// The hosts of a cluster and their roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Every host, in spec order (hostfile hosts after the listed ones).
    pub hosts: Vec<HostPlan>,
    /// Index of the scheduler's host.
    pub scheduler: usize,
    /// Indices of the hosts that take workers.
    pub worker_hosts: Vec<usize>,
}

impl Layout {
    /// The host with this label.
    pub fn by_label(&self, label: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.label == label)
    }
}

/// Resolves a cluster's hosts: reads the hostfile and the ssh config, picks
/// the scheduler's host and the worker hosts. Fails (as a spec error naming
/// the field) before anything connects.
pub fn layout(ssh: &SshSpec) -> Result<Layout> {
    let options = SshOptions::from_spec(ssh);
    let mut entries = ssh.hosts.clone();
    if let Some(file) = &ssh.hostfile {
        let path = expand_tilde(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid("backend.hostfile", file, format!("cannot read it: {e}")))?;
        let more = parse_hostfile(&text).map_err(|(line, reason)| {
            invalid("backend.hostfile", file, format!("line {line}: {reason}"))
        })?;
        entries.extend(more);
    }
    if entries.is_empty() {
        return Err(invalid(
            "backend.hosts",
            "[]",
            "no hosts (the hostfile is empty)",
        ));
    }
    let config = load_ssh_config(&options)?;
    let mut hosts: Vec<HostPlan> = Vec::new();
    for (i, SshHost(entry)) in entries.iter().enumerate() {
        let dest = parse_destination(&entry.host)
            .map_err(|reason| invalid(&format!("backend.hosts[{i}].host"), &entry.host, reason))?;
        let label = host_label(entry.name.as_deref().unwrap_or(&dest.host));
        if let Some(other) = hosts.iter().find(|h| h.label == label) {
            return Err(invalid(
                &format!("backend.hosts[{i}]"),
                &entry.host,
                format!(
                    "has the same name {label:?} as host {}: give one a distinct `name`",
                    other.target.alias
                ),
            ));
        }
        let target = resolve_target(&dest, entry, &options, config.as_ref());
        hosts.push(HostPlan {
            label,
            target,
            explicit_python: entry.python.clone(),
        });
    }
    let scheduler = match &ssh.scheduler_host {
        None => 0,
        Some(s) => entries
            .iter()
            .position(|SshHost(e)| {
                e.name.as_deref() == Some(s.as_str())
                    || e.host == *s
                    || parse_destination(&e.host).is_ok_and(|d| d.host == *s)
            })
            .ok_or_else(|| invalid("backend.scheduler_host", s, "is none of the hosts"))?,
    };
    let worker_hosts = (0..hosts.len())
        .filter(|&i| i != scheduler || ssh.workers_on_scheduler_host || hosts.len() == 1)
        .collect();
    Ok(Layout {
        hosts,
        scheduler,
        worker_hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
Host h2
    HostName 10.200.0.12
    Port 2222
Host *
    User alice
    IdentityFile /keys/id_test
    IdentitiesOnly yes
    UserKnownHostsFile /keys/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
";

    fn config() -> SshConfig {
        SshConfig::default()
            .parse(
                &mut CONFIG.as_bytes(),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .unwrap()
    }

    #[test]
    fn the_ssh_config_is_honoured_and_explicit_settings_win() {
        let c = config();
        let o = SshOptions::default();
        let t = resolve_target(
            &parse_destination("h2").unwrap(),
            &SshHostMap::default(),
            &o,
            Some(&c),
        );
        assert_eq!(
            (t.hostname.as_str(), t.port, t.user.as_str()),
            ("10.200.0.12", 2222, "alice")
        );
        assert_eq!(t.identities, [PathBuf::from("/keys/id_test")]);
        assert!(!t.use_agent);
        assert_eq!(
            t.known_hosts,
            [
                PathBuf::from("/keys/known_hosts"),
                PathBuf::from("/dev/null")
            ]
        );
        assert!(!t.accept_new_host_keys);

        let t = resolve_target(
            &parse_destination("bob@h2:22").unwrap(),
            &SshHostMap {
                identity: Some("/mine".into()),
                ..Default::default()
            },
            &o,
            Some(&c),
        );
        assert_eq!((t.port, t.user.as_str()), (22, "bob"));
        assert_eq!(t.identities[0], PathBuf::from("/mine"));
    }

    #[test]
    fn hostfiles_parse_with_line_numbers_in_errors() {
        let hosts = parse_hostfile("# hosts\nh1\n\nroot@h2:22  # the second\n").unwrap();
        assert_eq!(
            hosts,
            vec![SshHost::from("h1"), SshHost::from("root@h2:22")]
        );
        assert_eq!(parse_hostfile("h1\nbad host\n").unwrap_err().0, 2);
    }

    #[test]
    fn layouts_put_the_scheduler_first_and_workers_elsewhere() {
        let spec = muster_core::ClusterSpec::from_yaml(
            "name: c\nbackend: {kind: ssh, hosts: [a, b, {host: c, python: /py}]}",
            None,
        )
        .unwrap();
        spec.validate().unwrap();
        let mut ssh = SshSpec::read(&spec.backend.options).0.unwrap();
        ssh.connect.ssh_config = Some("/dev/null".into());
        let l = layout(&ssh).unwrap();
        assert_eq!((l.scheduler, l.worker_hosts.clone()), (0, vec![1, 2]));
        assert_eq!(l.hosts[2].explicit_python.as_deref(), Some("/py"));
        assert_eq!(l.hosts[0].explicit_python, None);
        ssh.scheduler_host = Some("b".into());
        ssh.workers_on_scheduler_host = true;
        let l = layout(&ssh).unwrap();
        assert_eq!((l.scheduler, l.worker_hosts), (1, vec![0, 1, 2]));
        ssh.scheduler_host = Some("zz".into());
        let e = layout(&ssh).unwrap_err().to_string();
        assert!(e.contains("backend.scheduler_host"), "{e}");
    }
}
