//! What each subcommand does: build the spec, pick the backend, call the
//! library, print. The CLI is a thin client of the `muster` crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use muster::adaptive::{ProcessAgent, agent as adaptive_agent, events as timeline};
use muster::{
    AdaptSpec, Backend, BackendSpec, Cluster, ClusterSpec, Error, Home, JobId, ManagedCluster,
    SchedulerContact, Supervisor,
};

use crate::cli::*;
use crate::kubernetes as kube;
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
        spec.backend = BackendSpec::of_kind(kind);
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
    muster::apply_site_defaults(&mut spec);
    muster::validate(&spec)?;
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

/// Opens a cluster of the registry, wired with its timeline and agent.
/// Opening starts nothing: read-only commands (`get`, `logs`, `events`)
/// never restart an agent; commands that change the cluster do.
fn open(home: &Home, name: &str) -> Result<ManagedCluster, Error> {
    muster::spec::check_name(name)
        .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
    let record = home
        .load(name)?
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    let backend = muster::backend_for_spec(&record.spec, home)?;
    Ok(muster::wire(
        ManagedCluster::open(name, backend, home.clone())?,
        home,
        this_exe()?,
    ))
}

/// The registry's record of `name` when it is a kubernetes cluster.
fn kube_record(home: &Home, name: &str) -> Result<Option<muster::ClusterRecord>, Error> {
    muster::spec::check_name(name)
        .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
    Ok(home.load(name)?.filter(|r| kube::is_kube(&r.spec)))
}

fn this_exe() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::io("finding the muster binary", e))
}

fn agent_control(home: &Home) -> Result<ProcessAgent, Error> {
    Ok(ProcessAgent::new(this_exe()?, home.clone()))
}

/// Applies adaptive-scaling flags to a spec's `adapt` section (creating it
/// when `enable`), then validates the spec.
pub fn apply_adapt(spec: &mut ClusterSpec, flags: &AdaptFlags, enable: bool) -> Result<(), Error> {
    if !(enable || flags.any() || spec.adapt.is_some()) {
        return Ok(());
    }
    let mut a = spec.adapt.clone().unwrap_or_else(|| {
        let max = flags.maximum.unwrap_or(0);
        AdaptSpec::new(0, max)
    });
    if let Some(v) = flags.minimum {
        a.minimum = v;
    }
    if let Some(v) = flags.maximum {
        a.maximum = v;
    }
    if let Some(v) = flags.scale_down_wait {
        a.scale_down_wait = v;
    }
    if let Some(v) = flags.cooldown {
        a.cooldown = v;
    }
    if let Some(v) = flags.interval {
        a.interval = v;
    }
    if let Some(v) = flags.idle_timeout {
        a.idle_timeout = Some(v);
    }
    spec.adapt = Some(a);
    spec.validate()?;
    Ok(())
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
    let mut spec = build_spec(&args.spec)?;
    apply_adapt(&mut spec, &args.adapt_flags, args.adapt)?;
    if let Some(a) = &spec.adapt {
        // Start at the minimum (or at --workers, within the bounds); the
        // agent takes it from there.
        spec.workers = args
            .spec
            .workers
            .unwrap_or(a.minimum)
            .clamp(a.minimum, a.maximum);
    }
    if kube::is_kube(&spec) {
        return kube::up(home, spec, &args).await;
    }
    let backend = muster::backend_for_spec(&spec, home)?;
    let mut cluster = muster::wire(
        ManagedCluster::new(spec, backend, home.clone())?,
        home,
        this_exe()?,
    )
    .with_timeout(args.timeout.duration());
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    // `up` also starts the agent and records adaptive settings.
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
    if let Some(r) = kube_record(home, &args.name)? {
        return kube::scale(home, &r, &args).await;
    }
    if args.group.is_some() {
        return Err(
            Error::Usage("--group: only kubernetes clusters have worker groups".into()).into(),
        );
    }
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
            .filter(|r| !kube::is_kube(&r.spec))
            .map(|r| Ok((r.name.clone(), muster::backend_for_spec(&r.spec, home)?)))
            .collect::<Result<_>>()?
    } else {
        let name = args
            .name
            .clone()
            .expect("clap requires a name without --all");
        muster::spec::check_name(&name)
            .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
        // The registry's spec, else the one given with -f, else just a kind.
        let given = match &args.file {
            Some(file) => Some(build_spec(&SpecArgs {
                file: Some(file.clone()),
                name: Some(name.clone()),
                ..Default::default()
            })?),
            None => None,
        };
        let recorded = home.load(&name)?.map(|r| r.spec);
        let spec = recorded.or(given);
        if spec
            .as_ref()
            .map_or(args.backend == "kubernetes", kube::is_kube)
        {
            let spec = match spec {
                Some(s) => Some(s),
                None if args.namespace.is_some() || args.context.is_some() => {
                    let mut s = ClusterSpec::from_yaml("{}", None)?;
                    s.name = name.clone();
                    s.backend = BackendSpec::of_kind("kubernetes");
                    for (k, v) in [("namespace", &args.namespace), ("context", &args.context)] {
                        if let Some(v) = v {
                            s.backend
                                .options
                                .insert(k.into(), serde_json::Value::String(v.clone()));
                        }
                    }
                    muster::validate(&s)?;
                    Some(s)
                }
                None => None,
            };
            let r = kube::down(home, &name, spec.as_ref())
                .await
                .with_context(|| format!("bringing down cluster {name:?}"))?;
            print!("{}", output::down(&[r], args.output));
            return Ok(());
        }
        let backend = match (home.load(&name)?, &args.file) {
            (Some(r), _) => muster::backend_for_spec(&r.spec, home)?,
            (None, Some(file)) => {
                let spec = build_spec(&SpecArgs {
                    file: Some(file.clone()),
                    name: Some(name.clone()),
                    ..Default::default()
                })?;
                muster::backend_for_spec(&spec, home)?
            }
            (None, None) => muster::backend_for_down(&args.backend, &name, home)?,
        };
        vec![(name, backend)]
    };
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    if args.all {
        for r in home.list()?.into_iter().filter(|r| kube::is_kube(&r.spec)) {
            match kube::down(home, &r.name, Some(&r.spec)).await {
                Ok(rep) => reports.push(rep),
                Err(e) => failures.push(
                    anyhow::Error::new(e).context(format!("bringing down cluster {:?}", r.name)),
                ),
            }
        }
    }
    let agent = agent_control(home)?;
    for (name, backend) in targets {
        // The library stops the agent first (so it cannot relaunch workers)
        // and again after; rounds also re-read the record under the cluster
        // lock, and finish once `down` has marked it Stopping or removed it.
        let result = ManagedCluster::down_named(&name, backend.as_ref(), home, Some(&agent)).await;
        match result {
            Ok(r) => {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                reports.push(r)
            }
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
        GetWhat::Clusters {
            all_namespaces,
            output: out,
        } => {
            let mut records = home.list()?;
            // Muster's DaskClusters come from the API server, the truth;
            // the registry's copies are shown only when it cannot be asked.
            match kube::list(all_namespaces, &records).await {
                Some(Ok(found)) => {
                    records.retain(|r| !kube::is_kube(&r.spec));
                    records.extend(found);
                }
                Some(Err(e)) => eprintln!("warning: cannot list DaskClusters: {e}"),
                None => {}
            }
            print!(
                "{}",
                output::clusters(&records, muster::registry::unix_now(), out)
            );
        }
        GetWhat::Workers { name, output: out } => {
            if let Some(r) = kube_record(home, &name)? {
                print!("{}", output::workers(&kube::status(home, &r).await?, out));
                return Ok(());
            }
            let status = open(home, &name)?.status().await?;
            print!("{}", output::workers(&status, out));
        }
    }
    Ok(())
}

pub async fn describe(home: &Home, args: DescribeArgs) -> Result<()> {
    if let Some(r) = kube_record(home, &args.name)? {
        let status = kube::status(home, &r).await?;
        let dir = home.cluster_dir(&args.name).display().to_string();
        print!("{}", output::describe(&status, &r, &dir, None, args.output));
        return Ok(());
    }
    let cluster = open(home, &args.name)?;
    // Report the agent as found, then restart it if it died.
    let health = adaptive_agent::health(home, &args.name)?;
    let restarted = cluster.ensure_agent();
    let status = cluster.status().await?;
    let dir = home.cluster_dir(&args.name).display().to_string();
    let events = timeline::read(home, &args.name)?;
    let view = output::AgentView::new(
        cluster.backend().capabilities().supervisor == Supervisor::Agent,
        &health,
        restarted,
        &events,
        timeline::unix_now(),
    );
    print!(
        "{}",
        output::describe(&status, cluster.record(), &dir, Some(&view), args.output)
    );
    Ok(())
}

pub async fn adapt(home: &Home, args: AdaptArgs) -> Result<()> {
    let name = args.name.clone();
    if let Some(r) = kube_record(home, &name)? {
        let adapt = if args.off {
            None
        } else {
            let mut spec = r.spec.clone();
            if spec.adapt.is_none() && args.flags.maximum.is_none() {
                return Err(Error::Usage(format!(
                    "adapt.maximum: required to turn adaptive scaling on (muster adapt {name} --max N)"
                ))
                .into());
            }
            apply_adapt(&mut spec, &args.flags, true)?;
            spec.adapt
        };
        return kube::adapt(home, &r, adapt, args.output).await;
    }
    let mut cluster = open(home, &name)?;
    let adapt = if args.off {
        None
    } else {
        let mut spec = cluster.record().spec.clone();
        if spec.adapt.is_none() && args.flags.maximum.is_none() {
            return Err(Error::Usage(format!(
                "adapt.maximum: required to turn adaptive scaling on (muster adapt {name} --max N)"
            ))
            .into());
        }
        apply_adapt(&mut spec, &args.flags, true)?;
        spec.adapt
    };
    // The library saves the settings (resuming a paused policy), records
    // them in the timeline and makes sure the agent runs.
    cluster.adapt(adapt).await?;
    let agent_pid = adaptive_agent::read_state(home, &name).map(|s| s.pid);
    print!(
        "{}",
        output::adapted(
            &name,
            cluster.record().spec.adapt.as_ref(),
            cluster.record().spec.workers,
            agent_pid,
            args.output
        )
    );
    Ok(())
}

pub async fn events(home: &Home, args: EventsArgs) -> Result<()> {
    if let Some(r) = kube_record(home, &args.name)? {
        return kube::events(home, &r, &args).await;
    }
    let cluster = open(home, &args.name)?;
    let mut evs = timeline::read(home, cluster.name())?;
    if let Some(n) = args.tail {
        evs.drain(..evs.len().saturating_sub(n));
    }
    print!("{}", output::events(&evs, args.output));
    Ok(())
}

pub async fn port_forward(home: &Home, args: PortForwardArgs) -> Result<()> {
    let Some(r) = kube_record(home, &args.name)? else {
        return Err(Error::Usage(format!(
            "{:?}: port-forward is for kubernetes clusters in the registry",
            args.name
        ))
        .into());
    };
    kube::port_forward(home, &r).await
}

pub async fn agent(home: &Home, args: AgentArgs) -> Result<()> {
    let record = home
        .load(&args.name)?
        .ok_or_else(|| Error::NotFound(args.name.clone()))?;
    let backend = muster::backend_for_spec(&record.spec, home)?;
    adaptive_agent::run(home.clone(), &args.name, backend)
        .await
        .with_context(|| format!("agent of cluster {:?}", args.name))
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
    if let Some(r) = kube_record(home, &args.name)? {
        return kube::logs(home, &r, &args).await;
    }
    if args.follow {
        return Err(Error::Usage(
            "--follow: only kubernetes clusters' logs can be followed".into(),
        )
        .into());
    }
    let cluster = open(home, &args.name)?;
    if args.all {
        return all_logs(&cluster, args.tail, args.output).await;
    }
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

/// `logs --all`: the scheduler's log and every worker job's, each with the
/// job's state; a log that cannot be read is reported in place of its text.
async fn all_logs(cluster: &ManagedCluster, tail: Option<usize>, out: Output) -> Result<()> {
    let status = cluster.status().await?;
    let mut jobs: Vec<(&'static str, JobId, muster::JobStatus)> = Vec::new();
    if let Some((id, st)) = &status.scheduler {
        jobs.push(("scheduler", id.clone(), st.clone()));
    }
    for w in &status.workers {
        jobs.push(("worker", JobId(w.name.clone()), w.status.clone()));
    }
    let mut items = Vec::new();
    for (role, job, st) in jobs {
        let (text, error) = match cluster.logs(Some(&job)).await {
            Ok(t) => (
                match tail {
                    Some(n) => muster::cluster_api::tail_lines(&t, n),
                    None => t,
                },
                None,
            ),
            Err(e) => (String::new(), Some(e.to_string())),
        };
        items.push(output::LogItem {
            job: job.as_str().to_string(),
            role,
            status: st,
            text,
            error,
        });
    }
    print!("{}", output::logs(&items, out));
    Ok(())
}

pub async fn render(home: &Home, args: RenderArgs) -> Result<()> {
    let spec = build_spec(&args.spec)?;
    let backend = muster::backend_for_spec(&spec, home)?;
    let mut all = backend.render(&muster::Role::Scheduler)?;
    // Workers get what the scheduler's launch would hand them.
    let contact = all
        .contact
        .clone()
        .unwrap_or_else(|| SchedulerContact::Address("tcp://<scheduler-address>".into()));
    let workers = backend.render(&muster::Role::Workers {
        first_index: 0,
        count: spec.workers,
        contact,
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
