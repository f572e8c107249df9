//! A `kind: kubernetes` cluster's TLS credentials inside Kubernetes: the
//! Secret `<cluster>-tls` that carries the CA certificate and the
//! scheduler's and the workers' certificates and keys (never the CA's key:
//! core never keeps it; never the client's: it stays on the owner's
//! machine), and the read-only volume that puts one party's three files
//! into its pods at [`MOUNT`]. Pods name the files by path on Dask's
//! command line (`muster_core::dask::secure`); no key goes on a command
//! line or into an environment.
//!
//! What `render` prints is the submitted Secret with every value replaced
//! by [`REDACTED`]: the credentials are made afresh by `up` (a dry run has
//! none, and keys must not reach a terminal, a log or a snapshot), while
//! the keys, type, labels and the pods' mounts are exactly what is applied.
//! Pure functions; the API calls are in [`super::client`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use muster_core::tls::{CA_FILE, Credentials, Party};

/// Where a pod finds its party's files.
pub const MOUNT: &str = "/etc/muster/tls";
/// The pod volume's name.
pub const VOLUME: &str = "muster-tls";
/// What `render` shows instead of each PEM.
pub const REDACTED: &str = "<redacted: made by `muster up`, never printed>";
/// The files' mode in the pods: owner-read only (the Dask image runs as
/// root, the files' owner).
pub const MODE: i32 = 0o400;

/// The Secret's name for cluster `cluster`.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The parties whose certificates go into the cluster (the client's stays
/// on the owner's machine).
const IN_CLUSTER: [Party; 2] = [Party::Scheduler, Party::Worker];

/// The Secret's keys: file names, so a volume item's key is its path.
pub fn keys() -> Vec<String> {
    let mut k = vec![CA_FILE.to_string()];
    for p in IN_CLUSTER {
        k.push(p.cert_file());
        k.push(p.key_file());
    }
    k
}

/// The Secret with every value [`REDACTED`] (what `render` prints); `meta`
/// is the cluster's metadata for it (name, namespace, labels).
pub fn redacted_secret(meta: ObjectMeta) -> Secret {
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        immutable: Some(true),
        string_data: Some(keys().into_iter().map(|k| (k, REDACTED.into())).collect()),
        ..Secret::default()
    }
}

/// `secret` (from [`redacted_secret`]) holding `creds`' CA certificate
/// and the scheduler's and workers' files: what `up` submits.
pub fn with_credentials(mut secret: Secret, creds: &Credentials) -> Secret {
    let data: BTreeMap<String, String> = creds
        .files_for(&IN_CLUSTER)
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    secret.string_data = Some(data);
    secret
}

/// The volume of `party`'s three files from cluster `cluster`'s Secret,
/// read-only at mode [`MODE`]. The Secret must exist (`optional: false`):
/// a pod does not start without its credentials.
pub fn volume(cluster: &str, party: Party) -> Volume {
    let item = |name: String| KeyToPath {
        key: name.clone(),
        path: name,
        mode: None,
    };
    Volume {
        name: VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name(cluster)),
            default_mode: Some(MODE),
            optional: Some(false),
            items: Some(vec![
                item(CA_FILE.to_string()),
                item(party.cert_file()),
                item(party.key_file()),
            ]),
        }),
        ..Volume::default()
    }
}

/// The container's read-only mount of [`volume`].
pub fn mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.into(),
        mount_path: MOUNT.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_submitted_secret_differs_only_in_its_values() {
        let creds = Credentials::generate("demo").unwrap();
        let shown = redacted_secret(ObjectMeta {
            name: Some(secret_name("demo")),
            ..ObjectMeta::default()
        });
        let sent = with_credentials(shown.clone(), &creds);
        let (a, b) = (
            shown.string_data.as_ref().unwrap(),
            sent.string_data.as_ref().unwrap(),
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        assert!(a.values().all(|v| v == REDACTED));
        assert_eq!(b["ca.pem"], creds.ca);
        assert_eq!(b["worker-key.pem"], creds.worker.key);
        // Never the client's files, never a CA key.
        assert!(!b.contains_key("client-key.pem") && !b.contains_key("client.pem"));
        assert_eq!(b.values().filter(|v| v.contains("PRIVATE KEY")).count(), 2);
        let mut back = sent.clone();
        back.string_data = shown.string_data.clone();
        assert_eq!(back, shown);
        let yaml = serde_yaml_ng::to_string(&shown).unwrap();
        assert!(!yaml.contains("PRIVATE KEY") && !yaml.contains("BEGIN"));
    }

    #[test]
    fn a_worker_volume_holds_only_the_workers_files() {
        let v = volume("demo", Party::Worker);
        let s = v.secret.unwrap();
        let paths: Vec<_> = s.items.unwrap().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["ca.pem", "worker.pem", "worker-key.pem"]);
        assert_eq!(s.default_mode, Some(0o400));
        assert_eq!(s.secret_name.as_deref(), Some("demo-tls"));
    }
}
