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
        None => anyhow::bail!("the operator itself is not built yet"),
    }
}
