//! What each subcommand does: build the spec, pick the backend, call the
//! library, print. The CLI is a thin client of the `muster` crate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use muster::{
    Backend, BackendSpec, Cluster, ClusterSpec, Error, Home, JobId, ManagedCluster,
    SchedulerContact,
};

use crate::cli::*;
use crate::output;
use crate::progress::Bar;

/// Builds and validates a spec from a file and flags (flags win).
pub fn build_spec(args: &SpecArgs) -> Result<ClusterSpec, Error> {
    let mut spec = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!("cannot read spec file {}: {e}", path.display()))
            })?;
            ClusterSpec::from_yaml(&text, Some(&path.display().to_string()))?
        }
        None => ClusterSpec::from_yaml("{}", None)?,
    };
    if let Some(name) = &args.name {
        spec.name = name.clone();
    }
    if let Some(kind) = &args.backend
        && kind != spec.backend.kind()
    {
        spec.backend = BackendSpec::from_kind(kind)
            .ok_or_else(|| Error::Usage(format!("unknown backend {kind:?}")))?;
    }
    if let Some(n) = args.workers {
        spec.workers = n;
    }
    if let Some(p) = &args.python {
        spec.worker.python = p.clone();
    }
    if let Some(c) = args.cores {
        spec.worker.cores = c;
    }
    if let Some(m) = args.memory {
        spec.worker.memory = Some(m);
    }
    if let Some(p) = args.processes {
        spec.worker.processes = p;
    }
    spec.validate()?;
    Ok(spec)
}

/// The state directory: `--home`, else the environment's default.
pub fn home(flag: Option<&Path>) -> Result<Home, Error> {
    match flag {
        Some(p) if p.is_absolute() => Ok(Home::at(p)),
        Some(p) => Ok(Home::at(
            std::env::current_dir()
                .map_err(|e| Error::io("current directory", e))?
                .join(p),
        )),
        None => Home::from_env(),
    }
}

fn open(home: &Home, name: &str) -> Result<ManagedCluster, Error> {
    muster::spec::check_name(name)
        .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
    let record = home
        .load(name)?
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    let backend = muster::backend_for_spec(&record.spec, home);
    ManagedCluster::open(name, backend, home.clone())
}

fn summary<'a>(c: &'a ManagedCluster, connected: usize) -> output::UpItem<'a> {
    let r = c.record();
    output::UpItem {
        name: &r.name,
        backend: r.backend(),
        scheduler_address: r.scheduler_address.as_deref(),
        dashboard_url: None,
        workers: r.workers.len(),
        connected_workers: connected,
    }
}

fn print_summary(c: &ManagedCluster, connected: usize, verb: &str, out: Output) {
    let link = c.dashboard_link();
    let mut item = summary(c, connected);
    item.dashboard_url = link.as_deref();
    print!("{}", output::up(&item, verb, out));
}

pub async fn up(home: &Home, args: UpArgs) -> Result<()> {
    let spec = build_spec(&args.spec)?;
    let backend = muster::backend_for_spec(&spec, home);
    let mut cluster =
        ManagedCluster::new(spec, backend, home.clone())?.with_timeout(args.timeout.duration());
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    let result = cluster.up(&bar).await;
    bar.finish();
    result.with_context(|| format!("bringing up cluster {:?}", cluster.name()))?;
    // `up` returns once every launched worker is registered (a backend may
    // launch fewer than asked when hosts are unreachable, and says so).
    let connected =
        cluster.record().workers.len() * cluster.record().spec.worker.processes as usize;
    print_summary(&cluster, connected, "up", args.output);
    Ok(())
}

pub async fn scale(home: &Home, args: ScaleArgs) -> Result<()> {
    let mut cluster = open(home, &args.name)?.with_timeout(args.timeout.duration());
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    let result = cluster.scale(args.workers, &bar).await;
    bar.finish();
    result.with_context(|| format!("scaling cluster {:?} to {}", args.name, args.workers))?;
    let connected =
        cluster.record().workers.len() * cluster.record().spec.worker.processes as usize;
    print_summary(&cluster, connected, "scaled", args.output);
    Ok(())
}

pub async fn down(home: &Home, args: DownArgs) -> Result<()> {
    let targets: Vec<(String, Arc<dyn Backend>)> = if args.all {
        home.list()?
            .into_iter()
            .map(|r| {
                let b = muster::backend_for_spec(&r.spec, home);
                (r.name, b)
            })
            .collect()
    } else {
        let name = args
            .name
            .clone()
            .expect("clap requires a name without --all");
        muster::spec::check_name(&name)
            .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
        // The registry's spec, else the one given with -f, else just a kind.
        let backend = match (home.load(&name)?, &args.file) {
            (Some(r), _) => muster::backend_for_spec(&r.spec, home),
            (None, Some(file)) => {
                let spec = build_spec(&SpecArgs {
                    file: Some(file.clone()),
                    name: Some(name.clone()),
                    ..Default::default()
                })?;
                muster::backend_for_spec(&spec, home)
            }
            (None, None) => muster::backend_for(
                &BackendSpec::from_kind(&args.backend).expect("clap checked the kind"),
                home,
            ),
        };
        vec![(name, backend)]
    };
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (name, backend) in targets {
        let result = ManagedCluster::down_by_name(&name, backend.clone(), home.clone()).await;
        for note in backend.take_notes() {
            eprintln!("warning: {note}");
        }
        match result {
            Ok(r) => reports.push(r),
            Err(e) => failures
                .push(anyhow::Error::new(e).context(format!("bringing down cluster {name:?}"))),
        }
    }
    print!("{}", output::down(&reports, args.output));
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub async fn get(home: &Home, args: GetArgs) -> Result<()> {
    match args.what {
        GetWhat::Clusters { output: out } => {
            print!("{}", output::clusters(&home.list()?, out));
        }
        GetWhat::Workers { name, output: out } => {
            let status = open(home, &name)?.status().await?;
            print!("{}", output::workers(&status, out));
        }
    }
    Ok(())
}

pub async fn describe(home: &Home, args: DescribeArgs) -> Result<()> {
    let cluster = open(home, &args.name)?;
    let status = cluster.status().await?;
    let dir = home.cluster_dir(&args.name).display().to_string();
    print!(
        "{}",
        output::describe(&status, cluster.record(), &dir, args.output)
    );
    Ok(())
}

/// Finds a worker job from what a user typed: the full id, or the id without
/// the cluster prefix (`w3`), or just the index (`3`).
pub fn resolve_worker(cluster: &str, known: &[JobId], typed: &str) -> JobId {
    let candidates = [
        typed.to_string(),
        format!("{cluster}-{typed}"),
        format!("{cluster}-w{typed}"),
    ];
    candidates
        .iter()
        .find(|c| known.iter().any(|k| k.as_str() == c.as_str()))
        .map(|c| JobId(c.clone()))
        // Ids that name a host after a dot (`demo-w3.h2`) resolve from `w3`.
        .or_else(|| {
            candidates.iter().find_map(|c| {
                let prefix = format!("{c}.");
                let mut hits = known.iter().filter(|k| k.as_str().starts_with(&prefix));
                match (hits.next(), hits.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            })
        })
        .unwrap_or_else(|| JobId(typed.to_string()))
}

pub async fn logs(home: &Home, args: LogsArgs) -> Result<()> {
    let cluster = open(home, &args.name)?;
    let job = args
        .worker
        .as_deref()
        .map(|w| resolve_worker(&args.name, &cluster.record().workers, w));
    let text = cluster.logs(job.as_ref()).await?;
    match args.tail {
        Some(n) => println!("{}", muster::cluster_api::tail_lines(&text, n)),
        None => print!("{text}"),
    }
    Ok(())
}

pub async fn render(home: &Home, args: RenderArgs) -> Result<()> {
    let spec = build_spec(&args.spec)?;
    let backend = muster::backend_for(&spec.backend, home);
    let contact = backend
        .scheduler_file(&spec)
        .map(SchedulerContact::File)
        .unwrap_or_else(|| SchedulerContact::Address("tcp://<scheduler-address>".into()));
    let mut all = backend.render(&muster::LaunchRequest {
        spec: &spec,
        role: muster::Role::Scheduler,
    })?;
    let workers = backend.render(&muster::LaunchRequest {
        spec: &spec,
        role: muster::Role::Workers {
            first_index: 0,
            count: spec.workers,
            contact,
        },
    })?;
    all.items.extend(workers.items);
    print!("{}", output::rendered(&all, args.output));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_everything_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "name: fromfile\nworkers: 2\nworker: {cores: 4, memory: 4GiB}\n",
        )
        .unwrap();
        let args = SpecArgs {
            file: Some(file.clone()),
            workers: Some(5),
            ..Default::default()
        };
        let spec = build_spec(&args).unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.workers, spec.worker.cores),
            ("fromfile", 5, 4)
        );

        let bad = SpecArgs {
            file: Some(file),
            name: Some("Bad Name".into()),
            processes: Some(9),
            ..Default::default()
        };
        let err = build_spec(&bad).unwrap_err();
        assert!(err.is_usage());
        let msg = err.to_string();
        assert!(
            msg.contains("name: \"Bad Name\"") && msg.contains("worker.processes: \"9\""),
            "{msg}"
        );

        let missing = SpecArgs {
            file: Some(dir.path().join("nope.yaml")),
            ..Default::default()
        };
        let err = build_spec(&missing).unwrap_err();
        assert!(
            err.is_usage() && err.to_string().contains("nope.yaml"),
            "{err}"
        );
        assert!(
            build_spec(&SpecArgs::default())
                .unwrap_err()
                .to_string()
                .contains("name")
        );
    }

    #[test]
    fn workers_resolve_from_short_forms() {
        let known = vec![JobId::from("demo-w3"), JobId::from("demo-w10")];
        assert_eq!(
            resolve_worker("demo", &known, "demo-w3").as_str(),
            "demo-w3"
        );
        assert_eq!(resolve_worker("demo", &known, "w10").as_str(), "demo-w10");
        assert_eq!(resolve_worker("demo", &known, "3").as_str(), "demo-w3");
        assert_eq!(
            resolve_worker("demo", &known, "demo-w99").as_str(),
            "demo-w99"
        );
        let ssh = vec![JobId::from("demo-w3.h2"), JobId::from("demo-w13.h3")];
        assert_eq!(resolve_worker("demo", &ssh, "w3").as_str(), "demo-w3.h2");
        assert_eq!(resolve_worker("demo", &ssh, "13").as_str(), "demo-w13.h3");
    }
}
