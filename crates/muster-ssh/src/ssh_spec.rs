//! The `ssh` backend's section of a cluster spec (`backend: {kind: ssh, ...}`)
//! and its validation. Only data and pure checks live here; connecting,
//! reading `~/.ssh/config` and hostfiles is muster-ssh's business.
//!
//! The connection settings (key, ssh config, known_hosts, timeouts) are
//! declared once, in [`SshConnectSpec`]: a batch backend's login node
//! (`backend.ssh`) takes them as a section, and the `ssh` backend takes the
//! same keys beside its own in `backend:` ([`SshSpec::read`] splits them).

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use muster_core::kinds::read_options;
use muster_core::spec::{FieldError, UNKNOWN_FIELD};
use muster_core::units::Seconds;

/// Options of the SSH backend: which hosts, how to reach them, where to put
/// the scheduler and how many workers each host takes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SshSpec {
    /// The hosts, each `user@host:port` (user and port optional; `host` may be
    /// an alias from the ssh config) or a map with `host`, `user`, `port`,
    /// `identity`, `python`, `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<SshHost>,
    /// A file with more hosts, one `user@host:port` per line (`#` comments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostfile: Option<String>,
    /// The host that runs the scheduler (its `name`, or its host as written);
    /// the first host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_host: Option<String>,
    /// Most worker jobs per host; no limit when absent (workers are spread
    /// evenly either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_per_host: Option<u32>,
    /// Also place workers on the scheduler's host. With one host this is
    /// always the case.
    #[serde(default)]
    pub workers_on_scheduler_host: bool,
    /// Login name for hosts that name none (else the ssh config's, else the
    /// local user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Port for hosts that name none (else the ssh config's, else 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How to connect to every host (the same keys in `backend:`): key,
    /// ssh config, known_hosts, timeouts. Hosts that name no key use its
    /// `identity`; commands time out after 60 s unless it says otherwise.
    #[serde(skip)]
    pub connect: SshConnectSpec,
    /// Most SSH connections open at the same time.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Directory on each host for muster's logs, pid files and scheduler
    /// file (relative paths are under the remote home).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
}

/// How long the `ssh` backend's commands may take unless
/// `command_timeout` says otherwise.
pub const COMMAND_TIMEOUT: Seconds = Seconds::from_secs(60);

fn default_parallelism() -> u32 {
    32
}
fn default_state_dir() -> String {
    ".local/state/muster".into()
}

impl Default for SshSpec {
    fn default() -> Self {
        SshSpec {
            hosts: Vec::new(),
            hostfile: None,
            scheduler_host: None,
            workers_per_host: None,
            workers_on_scheduler_host: false,
            user: None,
            port: None,
            connect: SshConnectSpec::default(),
            parallelism: default_parallelism(),
            state_dir: default_state_dir(),
        }
    }
}

/// How to connect over SSH: the one declaration of these settings. The
/// login node of a batch cluster (`backend.ssh` beside `submit_host` of
/// `slurm`/`pbs`) takes them as a section; the `ssh` backend takes them in
/// `backend:` for all its hosts. User and port are part of a destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SshConnectSpec {
    /// Private key file (else the ssh config's `IdentityFile`, else
    /// `~/.ssh/id_*`); the ssh agent is tried first unless the ssh config
    /// says `IdentitiesOnly yes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The ssh client config to honour; `~/.ssh/config` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_config: Option<String>,
    /// The known_hosts file the host key is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// Trust and record the host's key if it is not known yet (a *changed*
    /// key is always refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_new_host_keys: bool,
    /// Give up connecting after this long (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Seconds>,
    /// Give up on any one remote command after this long (default 120 s on
    /// a login node, 60 s on the `ssh` backend's hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Seconds>,
}

impl SshConnectSpec {
    /// Checks the paths and limits; problems are pushed under `prefix`
    /// (e.g. `backend.ssh`).
    pub fn validate(&self, prefix: &str, errs: &mut Vec<FieldError>) {
        for (name, value) in [
            ("identity", &self.identity),
            ("ssh_config", &self.ssh_config),
            ("known_hosts", &self.known_hosts),
        ] {
            if let Some(v) = value
                && (v.trim().is_empty() || v.contains(['\0', '\n', '\r']))
            {
                errs.push(FieldError {
                    field: format!("{prefix}.{name}"),
                    value: v.clone(),
                    reason: "must be the path of a file".into(),
                });
            }
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if let Some(t) = value
                && t.duration().is_zero()
            {
                errs.push(FieldError {
                    field: format!("{prefix}.{name}"),
                    value: t.to_string(),
                    reason: "must be more than 0s".into(),
                });
            }
        }
    }
}

/// One host of an SSH cluster. Written either as a string
/// (`user@host:port`) or as a map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SshHostMap {
    /// `host`, `user@host`, `host:port` or `user@host:port`; `host` is a name,
    /// an address or an ssh config alias.
    pub host: String,
    /// Login name (overrides one written in `host`'s absence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SSH port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Private key file for this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Python with `distributed` on this host (else `worker.python`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// The host's short name in job ids and markers (else derived from `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One host entry: the map form, also produced from the string form.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct SshHost(pub SshHostMap);

impl<'de> Deserialize<'de> for SshHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SshHost;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a host as \"user@host:port\" or a map with host, user, port, identity, python, name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SshHost, E> {
                Ok(SshHost(SshHostMap {
                    host: s.to_string(),
                    ..Default::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SshHost, A::Error> {
                SshHostMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(SshHost)
            }
        }
        d.deserialize_any(V)
    }
}

impl From<&str> for SshHost {
    fn from(s: &str) -> Self {
        SshHost(SshHostMap {
            host: s.to_string(),
            ..Default::default()
        })
    }
}

/// A destination split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Login name, if written.
    pub user: Option<String>,
    /// Host name, address or alias (IPv6 without brackets).
    pub host: String,
    /// Port, if written.
    pub port: Option<u16>,
}

/// Parses `[user@]host[:port]` (IPv6 as `[addr]:port` or a bare address).
pub fn parse_destination(text: &str) -> Result<Destination, String> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, text),
    };
    if let Some(u) = &user
        && let Err(reason) = check_user(u)
    {
        return Err(reason);
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| "an IPv6 address in brackets needs a closing ']'".to_string())?;
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after ']'"))?,
            )?),
        };
        (addr.to_string(), port)
    } else if rest.matches(':').count() > 1 {
        (rest.to_string(), None) // a bare IPv6 address
    } else if let Some((h, p)) = rest.split_once(':') {
        (h.to_string(), Some(parse_port(p)?))
    } else {
        (rest.to_string(), None)
    };
    check_host(&host)?;
    Ok(Destination { user, host, port })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {p:?} must be a number from 1 to 65535")),
        Ok(n) => Ok(n),
    }
}

/// A login name: letters, digits, `.`, `_`, `-`, not starting with `-`.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty()
        || user.len() > 64
        || user.starts_with('-')
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Err(format!(
            "user {user:?} must be letters, digits, '.', '_' or '-' (not starting with '-')"
        ))
    } else {
        Ok(())
    }
}

/// A host: a name, an ssh config alias or an address; no spaces, shell or
/// option characters.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty()
        || host.len() > 253
        || host.starts_with(['-', '.'])
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "host {host:?} must be a host name, an ssh config alias or an IP address"
        ));
    }
    Ok(())
}

/// The short name of a host in job ids, markers and remote paths: lower-case
/// letters, digits, `.` and `-` only.
pub fn host_label(host: &str) -> String {
    let label: String = host
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    label.trim_matches(['-', '.']).to_string()
}

fn check_text(field: &str, value: &str, errs: &mut Vec<FieldError>) {
    let reason = if value.trim().is_empty() {
        "must not be empty"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return;
    };
    errs.push(FieldError {
        field: field.into(),
        value: value.into(),
        reason: reason.into(),
    });
}

impl SshSpec {
    /// Reads the `ssh` backend's options: the connection settings into
    /// [`SshConnectSpec`], every other key into the backend's own fields.
    /// Returns the options (unless one of the backend's own values could not
    /// be read; a bad connection setting is left out) and every problem found
    /// while reading, each named by its full path
    /// (`backend.connect_timeout`, `backend.hosts[0].prot`, `backend.bogus`).
    pub fn read(options: &Map<String, Value>) -> (Option<SshSpec>, Vec<FieldError>) {
        // A key is a connection setting when SshConnectSpec takes it alone;
        // reading each alone also names every bad one, not only the first.
        let (mut connect, mut own, mut errs) = (Map::new(), Map::new(), Vec::new());
        for (key, value) in options {
            let one = Map::from_iter([(key.clone(), value.clone())]);
            let (_, problems) = read_options::<SshConnectSpec>("backend", &one);
            if problems.iter().any(|e| e.reason == UNKNOWN_FIELD) {
                own.insert(key.clone(), value.clone());
            } else if problems.is_empty() {
                connect.insert(key.clone(), value.clone());
            } else {
                errs.extend(problems);
            }
        }
        // Every key in `connect` was read alone without a problem.
        let (connection, _) = read_options::<SshConnectSpec>("backend", &connect);
        let (spec, own_errs) = read_options::<SshSpec>("backend", &own);
        errs.extend(own_errs);
        // The settings read are checked too, even beside a bad one.
        let spec = spec.map(|mut spec| {
            spec.connect = connection.unwrap_or_default();
            spec
        });
        (spec, errs)
    }

    /// The command timeout on the hosts.
    pub fn command_timeout(&self) -> Seconds {
        self.connect.command_timeout.unwrap_or(COMMAND_TIMEOUT)
    }

    /// Checks the section; `errs` collects problems with `backend.`-prefixed
    /// field names.
    pub fn validate(&self, errs: &mut Vec<FieldError>) {
        let mut bad = |field: String, value: &dyn fmt::Display, reason: String| {
            errs.push(FieldError {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.hosts.is_empty() && self.hostfile.is_none() {
            bad(
                "backend.hosts".into(),
                &"[]",
                "list at least one host (or set backend.hostfile)".into(),
            );
        }
        let mut labels = std::collections::BTreeMap::new();
        for (i, SshHost(h)) in self.hosts.iter().enumerate() {
            let field = format!("backend.hosts[{i}]");
            match parse_destination(&h.host) {
                Err(reason) => bad(format!("{field}.host"), &h.host, reason),
                Ok(d) => {
                    if d.user.is_some() && h.user.is_some() {
                        bad(
                            format!("{field}.user"),
                            &h.host,
                            "the user is given twice (in host and in user)".into(),
                        );
                    }
                    if d.port.is_some() && h.port.is_some() {
                        bad(
                            format!("{field}.port"),
                            &h.host,
                            "the port is given twice (in host and in port)".into(),
                        );
                    }
                    let label = host_label(h.name.as_deref().unwrap_or(&d.host));
                    if label.is_empty() {
                        bad(
                            format!("{field}.name"),
                            &h.name.clone().unwrap_or_default(),
                            "needs at least one letter or digit".into(),
                        );
                    } else if let Some(j) = labels.insert(label.clone(), i) {
                        bad(
                            format!("{field}.name"),
                            &label,
                            format!(
                                "hosts[{j}] has the same name: give one of them a distinct `name`"
                            ),
                        );
                    }
                }
            }
            if let Some(u) = &h.user
                && let Err(reason) = check_user(u)
            {
                bad(format!("{field}.user"), u, reason);
            }
            if h.port == Some(0) {
                bad(
                    format!("{field}.port"),
                    &0,
                    "must be from 1 to 65535".into(),
                );
            }
            if let Some(name) = &h.name
                && (name.len() > 63 || host_label(name) != *name)
            {
                bad(
                    format!("{field}.name"),
                    name,
                    "must be lower-case letters, digits, '.' and '-' (at most 63)".into(),
                );
            }
        }
        if let Some(user) = &self.user
            && let Err(reason) = check_user(user)
        {
            bad("backend.user".into(), user, reason);
        }
        if self.port == Some(0) {
            bad("backend.port".into(), &0, "must be from 1 to 65535".into());
        }
        if let Some(s) = &self.scheduler_host
            && self.hostfile.is_none()
            && !self.hosts.iter().any(|SshHost(h)| {
                h.name.as_deref() == Some(s.as_str())
                    || h.host == *s
                    || parse_destination(&h.host).is_ok_and(|d| d.host == *s)
            })
        {
            bad(
                "backend.scheduler_host".into(),
                s,
                "is none of backend.hosts".into(),
            );
        }
        if self.workers_per_host == Some(0) {
            bad(
                "backend.workers_per_host".into(),
                &0,
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if self.parallelism == 0 || self.parallelism > 1024 {
            bad(
                "backend.parallelism".into(),
                &self.parallelism,
                "must be between 1 and 1024".into(),
            );
        }
        for (i, SshHost(h)) in self.hosts.iter().enumerate() {
            if let Some(p) = &h.identity {
                check_text(&format!("backend.hosts[{i}].identity"), p, errs);
            }
            if let Some(p) = &h.python {
                check_text(&format!("backend.hosts[{i}].python"), p, errs);
            }
        }
        if let Some(v) = &self.hostfile {
            check_text("backend.hostfile", v, errs);
        }
        check_text("backend.state_dir", &self.state_dir, errs);
        self.connect.validate("backend", errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let d = |s| parse_destination(s).unwrap();
        assert_eq!(
            d("root@h1:2222"),
            Destination {
                user: Some("root".into()),
                host: "h1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(d("10.0.0.1").host, "10.0.0.1");
        assert_eq!(d("[::1]:22").host, "::1");
        assert_eq!(d("[::1]:22").port, Some(22));
        assert_eq!(d("fe80::1").port, None);
        for bad in [
            "",
            "h1:0",
            "h1:99999",
            "h1:x",
            "-oProxyCommand=x",
            "a b",
            "h;id",
            "$(id)@h",
            "u@",
            "[::1",
            "h1\n",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_dns_and_shell_safe() {
        assert_eq!(host_label("H1"), "h1");
        assert_eq!(host_label("10.200.0.12"), "10.200.0.12");
        assert_eq!(host_label("::1"), "1");
        assert_eq!(host_label("node_7"), "node-7");
    }
}

#[cfg(test)]
mod spec_tests;
