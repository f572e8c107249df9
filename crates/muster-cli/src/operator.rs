//! `muster operator`: prints the CRDs, or runs muster-kube's operator until
//! a signal. Only argument plumbing lives here.

use anyhow::Context;

use crate::cli::{OperatorAction, OperatorArgs};

/// Run the subcommand.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.action {
        Some(OperatorAction::Crds { dir: None }) => {
            print!("{}", muster_kube::crds::all_yaml()?);
            Ok(())
        }
        Some(OperatorAction::Crds { dir: Some(dir) }) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in muster_kube::crds::all() {
                let path = dir.join(muster_kube::crds::file_name(&crd));
                std::fs::write(&path, muster_kube::crds::to_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        None => {
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
            let leader_election = if args.no_leader_election {
                None
            } else {
                Some(
                    args.leader_election_namespace
                        .clone()
                        .or_else(|| args.namespace.clone())
                        .unwrap_or_else(|| "default".into()),
                )
            };
            let config = muster_kube::operator::Config {
                listen: args.listen,
                namespace: args.namespace,
                leader_election,
                identity,
            };
            muster_kube::operator::run(config).await?;
            Ok(())
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "muster".into())
}
