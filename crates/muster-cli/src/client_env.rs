//! `muster env NAME`: what a Python (or any Dask) client needs to reach a
//! cluster — its address and, for a TLS cluster, Dask's configuration
//! variables naming the cluster's CA and client certificate — as shell
//! `export` lines (`eval "$(muster env demo)"`) or a muster/v1 document. It
//! prints paths, never the files' contents. Pure: built from the record.

use std::collections::BTreeMap;

use muster::ClusterRecord;
use muster::tls::PartyFiles;
use serde::Serialize;

use crate::cli::Output;
use crate::contract::{self, Kind};

/// The `ClientEnv` document.
#[derive(Debug, Serialize)]
pub struct ClientEnv<'a> {
    /// The cluster's name.
    pub name: &'a str,
    /// The scheduler's comm address (`tls://…` for a TLS cluster).
    pub scheduler_address: Option<&'a str>,
    /// The dashboard link.
    pub dashboard_url: Option<String>,
    /// The client's credential files, or null for `security: none`.
    pub tls: Option<&'a PartyFiles>,
    /// The environment variables a Dask client reads.
    pub env: BTreeMap<String, String>,
}

/// The variables: Dask's config for the client's TLS (read by
/// `distributed.Security()` and every `Client`) and the address.
pub fn variables(record: &ClusterRecord) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some(addr) = &record.scheduler_address {
        env.insert("DASK_SCHEDULER_ADDRESS".to_string(), addr.clone());
    }
    if let Some(files) = &record.credentials {
        let path = |p: &std::path::Path| p.display().to_string();
        env.insert(
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE".into(),
            path(&files.ca_file),
        );
        env.insert(
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT".into(),
            path(&files.cert_file),
        );
        env.insert(
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY".into(),
            path(&files.key_file),
        );
        env.insert(
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION".into(),
            "True".into(),
        );
    }
    env
}

/// What `muster env` prints.
pub fn render(record: &ClusterRecord, output: Output) -> String {
    let doc = ClientEnv {
        name: &record.name,
        scheduler_address: record.scheduler_address.as_deref(),
        dashboard_url: record.dashboard_link(),
        tls: record.credentials.as_ref(),
        env: variables(record),
    };
    if let Some(s) = contract::object(Kind::ClientEnv, &doc, output) {
        return s;
    }
    let mut out = String::new();
    if record.credentials.is_none() {
        out.push_str("# this cluster speaks plain TCP (scheduler.security: none)\n");
    }
    for (k, v) in &doc.env {
        out.push_str(&format!("export {k}={}\n", shell_words::quote(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tls: bool) -> ClusterRecord {
        let spec = muster::ClusterSpec::from_yaml("name: demo", None).unwrap();
        let mut r = ClusterRecord::new(spec);
        r.scheduler_address = Some("tls://127.0.0.1:40001".into());
        r.http_url = Some("https://127.0.0.1:40002".into());
        if tls {
            r.credentials = Some(PartyFiles::in_dir(
                std::path::Path::new("/home/u/.local/state/muster/clusters/demo/tls"),
                muster::tls::Party::Client,
            ));
        } else {
            r.scheduler_address = Some("tcp://127.0.0.1:40001".into());
        }
        r
    }

    #[test]
    fn snapshots() {
        insta::assert_snapshot!("env_shell", render(&record(true), Output::Table));
        insta::assert_snapshot!("env_json", render(&record(true), Output::Json));
        insta::assert_snapshot!("env_plain", render(&record(false), Output::Table));
    }
}
