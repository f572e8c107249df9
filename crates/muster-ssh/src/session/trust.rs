//! Whom a new SSH session trusts and how it proves who it is: the server's
//! host key checked against the target's known_hosts files (a new one
//! recorded only with `accept_new_host_keys`), then agent or key-file
//! authentication. Blocking ssh2 calls on an open session; it knows nothing
//! of pools, commands or muster's jobs.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ssh2::{CheckResult, KnownHostFileKind, Session};

use super::{SshError, SshTarget};

fn fingerprint(session: &Session) -> String {
    session
        .host_key_hash(ssh2::HashType::Sha256)
        .map(|h| format!("SHA256:{}", STANDARD_NO_PAD.encode(h)))
        .unwrap_or_else(|| "(no fingerprint)".into())
}

fn key_type_name(t: ssh2::HostKeyType) -> &'static str {
    use ssh2::HostKeyType::*;
    match t {
        Rsa => "ssh-rsa",
        Dss => "ssh-dss",
        Ecdsa256 => "ecdsa-sha2-nistp256",
        Ecdsa384 => "ecdsa-sha2-nistp384",
        Ecdsa521 => "ecdsa-sha2-nistp521",
        Ed25519 => "ssh-ed25519",
        Unknown => "unknown",
    }
}

/// Checks the session's host key against the target's known_hosts files.
pub(super) fn check_host_key(session: &Session, t: &SshTarget) -> Result<(), SshError> {
    let (key, key_type) = session
        .host_key()
        .ok_or_else(|| SshError::Protocol("the server sent no host key".into()))?;
    let mut known = session
        .known_hosts()
        .map_err(|e| SshError::Protocol(e.to_string()))?;
    let mut read_any = Vec::new();
    for file in &t.known_hosts {
        if file.exists() {
            known
                .read_file(file, KnownHostFileKind::OpenSSH)
                .map_err(|e| {
                    SshError::Protocol(format!("cannot read known_hosts {}: {e}", file.display()))
                })?;
            read_any.push(file.display().to_string());
        }
    }
    let files = if t.known_hosts.is_empty() {
        "~/.ssh/known_hosts".to_string()
    } else {
        t.known_hosts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match known.check_port(&t.hostname, t.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SshError::ChangedHostKey {
            key_type: key_type_name(key_type).into(),
            fingerprint: fingerprint(session),
            known_hosts: files,
        }),
        CheckResult::NotFound | CheckResult::Failure if t.accept_new_host_keys => {
            let file = t.known_hosts.first().ok_or_else(|| {
                SshError::Protocol("no known_hosts file to record the new key in".into())
            })?;
            let name = if t.port == 22 {
                t.hostname.clone()
            } else {
                format!("[{}]:{}", t.hostname, t.port)
            };
            let fmt = ssh2::KnownHostKeyFormat::from(key_type);
            known
                .add(&name, key, &t.alias, fmt)
                .map_err(|e| SshError::Protocol(e.to_string()))?;
            let line = known
                .hosts()
                .ok()
                .and_then(|hosts| {
                    hosts
                        .iter()
                        .rev()
                        .find(|h| h.name() == Some(name.as_str()))
                        .and_then(|h| known.write_string(h, KnownHostFileKind::OpenSSH).ok())
                })
                .ok_or_else(|| SshError::Protocol("cannot format the new host key".into()))?;
            append_line(file, &line).map_err(|e| {
                SshError::Protocol(format!(
                    "cannot record the host key in {}: {e}",
                    file.display()
                ))
            })?;
            tracing::warn!(
                host = %t.describe(),
                fingerprint = %fingerprint(session),
                file = %file.display(),
                "new host key accepted and recorded (accept_new_host_keys)"
            );
            Ok(())
        }
        CheckResult::NotFound | CheckResult::Failure => Err(SshError::UnknownHostKey {
            key_type: key_type_name(key_type).into(),
            fingerprint: fingerprint(session),
            known_hosts: files,
        }),
    }
}

fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    let line = if line.ends_with('\n') {
        line.to_string()
    } else {
        format!("{line}\n")
    };
    f.write_all(line.as_bytes())
}

pub(super) fn authenticate(session: &Session, t: &SshTarget) -> Result<(), SshError> {
    let mut tried = Vec::new();
    if t.use_agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        tried.push("agent".to_string());
        match session.userauth_agent(&t.user) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => {}
            Err(e) => tracing::debug!(host = %t.describe(), "agent authentication failed: {e}"),
        }
    }
    for key in &t.identities {
        if !key.exists() {
            continue;
        }
        tried.push(key.display().to_string());
        let public = key.with_extension(match key.extension() {
            Some(ext) => format!("{}.pub", ext.to_string_lossy()),
            None => "pub".into(),
        });
        let public = public.exists().then_some(public);
        match session.userauth_pubkey_file(&t.user, public.as_deref(), key, None) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(host = %t.describe(), key = %key.display(), "key refused: {e}")
            }
        }
    }
    Err(SshError::Auth {
        user: t.user.clone(),
        tried: if tried.is_empty() {
            "no agent and no key file found".into()
        } else {
            tried.join(", ")
        },
    })
}
