//! Per-cluster TLS credentials: a certificate authority of the cluster's own
//! and a certificate each for its scheduler, its workers and its clients
//! (made with rcgen, never by shelling out), written owner-only (directory
//! 0700, files 0600) in the cluster's state directory, where `down` removes
//! them with the rest. The CA's private key is never written: once the
//! three certificates are signed nobody can make another one, so only
//! holders of these files can talk to the cluster. Dask checks that a peer's
//! certificate chains to the CA (mutual TLS, no host names); muster's own
//! HTTP client also checks the scheduler's name, [`SCHEDULER_NAME`].
//!
//! This module owns the files and their names. How a process is told to use
//! them is [`crate::dask::tls_args`]; how they reach another machine is each
//! backend's business (they never go on a command line or into an
//! environment, only their paths do).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::Home;

/// The DNS name in the scheduler's certificate that muster's HTTP client
/// verifies (it connects to whatever address the scheduler has, tunnels
/// included, and checks this name there).
pub const SCHEDULER_NAME: &str = "muster-scheduler";

/// The CA certificate's file name (every party has it).
pub const CA_FILE: &str = "ca.pem";

/// The name of the directory holding the credentials, in the cluster's state
/// directory (and on remote hosts, in the cluster's remote directory).
pub const DIR_NAME: &str = "tls";

/// Who a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The Dask scheduler (also serves its HTTP API with it).
    Scheduler,
    /// Every Dask worker of the cluster.
    Worker,
    /// Clients: muster itself and the owner's Python.
    Client,
}

impl Party {
    /// Every party.
    pub const ALL: [Party; 3] = [Party::Scheduler, Party::Worker, Party::Client];

    /// `scheduler`, `worker` or `client`.
    pub fn word(self) -> &'static str {
        match self {
            Party::Scheduler => "scheduler",
            Party::Worker => "worker",
            Party::Client => "client",
        }
    }

    /// The file name of its certificate.
    pub fn cert_file(self) -> String {
        format!("{}.pem", self.word())
    }

    /// The file name of its private key.
    pub fn key_file(self) -> String {
        format!("{}-key.pem", self.word())
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct KeyCert {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

impl std::fmt::Debug for KeyCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCert")
            .field("cert", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A cluster's freshly made credentials, in memory.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The CA's certificate (its key is dropped once the others are signed).
    pub ca: String,
    /// The scheduler's.
    pub scheduler: KeyCert,
    /// The workers'.
    pub worker: KeyCert,
    /// The clients'.
    pub client: KeyCert,
}

fn tls_error(what: &str, e: rcgen::Error) -> Error {
    Error::io(
        format!("making the cluster's TLS credentials ({what})"),
        std::io::Error::other(e),
    )
}

fn leaf(
    cluster: &str,
    party: Party,
    issuer: &Issuer<'_, KeyPair>,
    now: time::OffsetDateTime,
) -> Result<KeyCert> {
    let key = KeyPair::generate().map_err(|e| tls_error("key", e))?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster} {}", party.word()));
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Dask connects both ways (the scheduler also dials workers), so every
    // party may be a TLS server and a TLS client.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if party == Party::Scheduler {
        let dns = |n: &str| {
            n.to_string()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| tls_error("name", e))
        };
        params.subject_alt_names = vec![
            dns(SCHEDULER_NAME)?,
            dns("localhost")?,
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
        ];
    }
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| tls_error(party.word(), e))?;
    Ok(KeyCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

impl Credentials {
    /// Makes a new CA for `cluster` and signs the three certificates with it
    /// (ECDSA P-256, valid from an hour ago for ten years; the files live
    /// only as long as the cluster).
    pub fn generate(cluster: &str) -> Result<Self> {
        let now = time::OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("muster cluster {cluster} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let ca = params
            .self_signed(&ca_key)
            .map_err(|e| tls_error("CA", e))?;
        let issuer = Issuer::new(params, ca_key);
        Ok(Credentials {
            ca: ca.pem(),
            scheduler: leaf(cluster, Party::Scheduler, &issuer, now)?,
            worker: leaf(cluster, Party::Worker, &issuer, now)?,
            client: leaf(cluster, Party::Client, &issuer, now)?,
        })
    }

    /// A party's certificate and key.
    pub fn of(&self, party: Party) -> &KeyCert {
        match party {
            Party::Scheduler => &self.scheduler,
            Party::Worker => &self.worker,
            Party::Client => &self.client,
        }
    }

    /// The files `parties` need: `(file name, contents)`, the CA first.
    pub fn files_for(&self, parties: &[Party]) -> Vec<(String, &str)> {
        let mut files = vec![(CA_FILE.to_string(), self.ca.as_str())];
        for p in parties {
            let kc = self.of(*p);
            files.push((p.cert_file(), kc.cert.as_str()));
            files.push((p.key_file(), kc.key.as_str()));
        }
        files
    }

    /// Writes the files of `parties` into `dir`, owner-only: the directory
    /// is created 0700 (and made so if it exists), every file 0600 from its
    /// creation (never readable by others, even for an instant).
    pub fn write(&self, dir: &Path, parties: &[Party]) -> Result<()> {
        create_private_dir(dir)?;
        for (name, text) in self.files_for(parties) {
            write_private(&dir.join(name), text.as_bytes())?;
        }
        Ok(())
    }
}

/// A `reqwest` client builder for any HTTP client muster makes. reqwest is
/// built with rustls but without a crypto provider of its own (to avoid a
/// second one, aws-lc, beside the ring that kube and rcgen use): this
/// installs ring as the process's provider first, once. Plain `http://`
/// clients never use it; HTTPS to a scheduler goes through
/// [`crate::dask::SchedulerClient::with_ca`].
pub fn http_builder() -> reqwest::ClientBuilder {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Someone (kube) may have installed one already: that is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// Creates `dir` (and its parents) with mode 0700 for the last component,
/// and sets 0700 when it already exists.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("making {} owner-only", dir.display()), e))
        }
        Err(e) => Err(Error::io(format!("creating {}", dir.display()), e)),
    }
}

/// Writes `bytes` to `path`, replacing it, with mode 0600 from creation.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Where a cluster's credentials live on this machine.
pub fn local_dir(home: &Home, cluster: &str) -> PathBuf {
    home.cluster_dir(cluster).join(DIR_NAME)
}

/// The files a party uses, by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyFiles {
    /// The cluster's CA certificate.
    pub ca_file: PathBuf,
    /// The party's certificate.
    pub cert_file: PathBuf,
    /// The party's private key.
    pub key_file: PathBuf,
}

impl PartyFiles {
    /// The files of `party` in `dir`.
    pub fn in_dir(dir: &Path, party: Party) -> Self {
        PartyFiles {
            ca_file: dir.join(CA_FILE),
            cert_file: dir.join(party.cert_file()),
            key_file: dir.join(party.key_file()),
        }
    }
}

/// Makes a cluster's credentials and writes all of them into its local
/// directory ([`local_dir`]). Returns them (backends copy parts elsewhere)
/// and the client's files.
pub fn create(home: &Home, cluster: &str) -> Result<(Credentials, PartyFiles)> {
    let creds = Credentials::generate(cluster)?;
    let dir = local_dir(home, cluster);
    creds.write(&dir, &Party::ALL)?;
    Ok((creds, PartyFiles::in_dir(&dir, Party::Client)))
}

/// Reads the credentials back from a cluster's local directory (a backend
/// that copies them to other machines at launch).
pub fn load(home: &Home, cluster: &str) -> Result<Credentials> {
    let dir = local_dir(home, cluster);
    let read = |name: String| {
        let p = dir.join(&name);
        fs::read_to_string(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let pair = |p: Party| -> Result<KeyCert> {
        Ok(KeyCert {
            cert: read(p.cert_file())?,
            key: read(p.key_file())?,
        })
    };
    Ok(Credentials {
        ca: read(CA_FILE.to_string())?,
        scheduler: pair(Party::Scheduler)?,
        worker: pair(Party::Worker)?,
        client: pair(Party::Client)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path());
        let (creds, client) = create(&home, "c1").unwrap();
        let dir = local_dir(&home, "c1");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names.len(), 7, "{names:?}");
        for p in &names {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        assert_eq!(client.ca_file, dir.join("ca.pem"));
        assert!(creds.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(creds.client.key.contains("PRIVATE KEY"));
        assert!(!format!("{creds:?}").contains("PRIVATE KEY"));
        let back = load(&home, "c1").unwrap();
        assert_eq!(back.worker.cert, creds.worker.cert);
    }

    #[test]
    fn two_clusters_get_different_authorities() {
        let a = Credentials::generate("a").unwrap();
        let b = Credentials::generate("a").unwrap();
        assert_ne!(a.ca, b.ca);
    }
}
