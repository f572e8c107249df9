//! What each subcommand does: build the spec, pick the backend, call the
//! library, print. The CLI is a thin client of the `muster` crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use muster::adaptive::{ProcessAgent, agent as adaptive_agent, events as timeline};
use muster::{
    AdaptSpec, Backend, BackendSpec, Cluster, ClusterSpec, Error, Home, ManagedCluster,
    SchedulerContact, Supervisor,
};

use crate::cli::*;
use crate::interrupt::{Interrupt, Interrupted, Signals};
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
    if let Some(s) = args.security {
        spec.scheduler.security = s.into();
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
pub(crate) fn open(home: &Home, name: &str) -> Result<ManagedCluster, Error> {
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
pub(crate) fn kube_record(home: &Home, name: &str) -> Result<Option<muster::ClusterRecord>, Error> {
    muster::spec::check_name(name)
        .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
    Ok(home.load(name)?.filter(|r| kube::is_kube(&r.spec)))
}

fn this_exe() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::io("finding the muster binary", e))
}

pub(crate) fn agent_control(home: &Home) -> Result<ProcessAgent, Error> {
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

/// What `up` and `scale` print: the workers connected are the scheduler's
/// count when the command stopped waiting, never inferred from the jobs.
fn print_summary(c: &ManagedCluster, verb: &str, out: Output) {
    let r = c.record();
    let link = c.dashboard_link();
    let item = output::UpItem {
        name: &r.name,
        backend: r.backend(),
        scheduler_address: r.scheduler_address.as_deref(),
        dashboard_url: link.as_deref(),
        workers: r.workers.len(),
        connected_workers: c.connected_workers(),
        tls: r.credentials.as_ref(),
    };
    print!("{}", output::up(&item, verb, out));
}

/// For a scheduler on this host (the local backend): a fixed port that is
/// already taken fails `up` before anything starts, naming the field and the
/// port (Dask would fail with a log tail, or move the dashboard elsewhere
/// without a word).
fn check_ports(spec: &ClusterSpec) -> Result<(), Error> {
    if spec.backend.kind() != "local" {
        return Ok(());
    }
    let host = spec.scheduler.host.as_deref().unwrap_or("127.0.0.1");
    let problems: Vec<String> = [
        ("scheduler.port", spec.scheduler.port),
        ("scheduler.dashboard_port", spec.scheduler.dashboard_port),
    ]
    .into_iter()
    .filter(|(_, port)| *port != 0)
    .filter_map(
        |(field, port)| match std::net::TcpListener::bind((host, port)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(format!(
                "{field}: port {port} on {host} is already in use (by another process); \
             pick another port, or 0 for any free one"
            )),
            // Anything else (an address not on this host...) is Dask's to report.
            _ => None,
        },
    )
    .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(problems.join("\n")))
    }
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
    check_ports(&spec)?;
    let backend = muster::backend_for_spec(&spec, home)?;
    let mut cluster = muster::wire(
        ManagedCluster::new(spec, backend, home.clone())?,
        home,
        this_exe()?,
    )
    .with_timeout(args.timeout.duration());
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    let name = cluster.name().to_string();
    let backend = cluster.backend().clone();
    let mut signals = Signals::install().context("catching SIGINT and SIGTERM")?;
    // `up` also starts the agent and records adaptive settings. A signal
    // drops it wherever it is (releasing the lock) and rolls back.
    let result = tokio::select! {
        r = cluster.up(&bar) => Ok(r),
        sig = signals.next() => Err(sig),
    };
    bar.finish();
    let result = match result {
        Ok(r) => r,
        Err(sig) => return Err(roll_back_up(home, &name, backend.as_ref(), sig, signals).await),
    };
    if let Err(Error::AlreadyExists(_)) = &result
        && let Some(hint) = half_started(home, &name)?
    {
        return Err(anyhow::anyhow!("cluster {name:?} already exists: {hint}"));
    }
    result.with_context(|| format!("bringing up cluster {name:?}"))?;
    // `up` returns once every launched worker is registered (a backend may
    // launch fewer than asked when hosts are unreachable, and says so).
    print_summary(&cluster, "up", args.output);
    Ok(())
}

/// Why a recorded cluster cannot be changed: it was left half-started by an
/// `up` that is gone (a live `up` would still hold the lock, and the library
/// checked under it), with exactly what to run.
fn half_started(home: &Home, name: &str) -> Result<Option<String>> {
    Ok(home
        .load(name)?
        .filter(|r| r.phase == muster::Phase::Starting)
        .map(|r| {
            format!(
                "it was left half-started ({} worker jobs recorded) by a `muster up` that was \
                 killed before it finished; run `muster down {name}` to remove what it launched, \
                 then `muster up` again",
                r.workers.len()
            )
        }))
}

/// After a signal during `up`: bring down whatever of the cluster the
/// backend finds (the record, the jobs launched so far, the agent), twice if
/// the first pass stopped something (a launch in flight when the signal came
/// may surface a moment later), and say so.
async fn roll_back_up(
    home: &Home,
    name: &str,
    backend: &dyn Backend,
    sig: Interrupt,
    signals: Signals,
) -> anyhow::Error {
    eprintln!(
        "{}: rolling back cluster {name} (a second signal leaves without it)",
        sig.name()
    );
    signals.leave_on_next(format!("muster down {name}"));
    let agent = match agent_control(home) {
        Ok(a) => a,
        Err(e) => return anyhow::Error::new(e),
    };
    let mut stopped = Vec::new();
    for pass in 0..2 {
        match ManagedCluster::down_named(name, backend, home, Some(&agent)).await {
            Ok(r) => {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                let found = !r.stopped.is_empty();
                stopped.extend(r.stopped);
                if !found || pass == 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                return anyhow::Error::new(e).context(format!(
                    "interrupted by {}: rolling back cluster {name:?} failed; run `muster down {name}`",
                    sig.name()
                ));
            }
        }
    }
    stopped.sort();
    stopped.dedup();
    let list = stopped
        .iter()
        .map(|j| j.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    anyhow::Error::new(Interrupted {
        signal: sig,
        message: format!(
            "`up` rolled back: cluster {name} stopped ({} jobs{}{list}{}) and forgotten; nothing of it runs",
            stopped.len(),
            if list.is_empty() { "" } else { ": " },
            ""
        ),
    })
}

/// Refuses to resize a cluster whose scheduler has ended: workers could not
/// join it, and the new size would be recorded for nothing.
async fn check_scheduler_alive(cluster: &ManagedCluster) -> Result<()> {
    let status = cluster.status().await?;
    if let Some((id, st)) = &status.scheduler
        && !st.is_active()
    {
        return Err(anyhow::anyhow!(
            "cluster {:?} cannot be scaled: its scheduler job {id} is {st}; nothing was changed \
             (`muster logs {}` shows why; `muster down {}` removes it)",
            status.name,
            status.name,
            status.name
        ));
    }
    Ok(())
}

/// The user's `scale` in the cluster's timeline (`muster events`), beside
/// the rounds' own launch and retire events. Best effort.
async fn record_scale(cluster: &ManagedCluster, before: u32, after: u32, how: &str) {
    let message = format!("muster scale: {before} -> {after} worker jobs ({how})");
    if let Err(e) = cluster.timeline().record("scale", &message).await {
        tracing::warn!("cannot record the scale in the timeline: {e}");
    }
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
    let name = args.name.clone();
    let mut cluster = open(home, &name)?.with_timeout(args.timeout.duration());
    {
        // Under the lock: a live `up` still holds it (this waits, saying
        // so); a record still Starting once it is free was left by a dead one.
        let _guard = home.lock(&name)?;
        if let Some(hint) = half_started(home, &name)? {
            return Err(anyhow::anyhow!("cluster {name:?} cannot be scaled: {hint}"));
        }
    }
    check_scheduler_alive(&cluster).await?;
    let before = cluster.record().spec.workers;
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    let mut signals = Signals::install().context("catching SIGINT and SIGTERM")?;
    let result = tokio::select! {
        r = cluster.scale(args.workers, &bar) => Ok(r),
        sig = signals.next() => Err(sig),
    };
    bar.finish();
    let result = match result {
        Ok(r) => r,
        Err(sig) => {
            // The new size was recorded (under the lock) before any job was
            // launched or retired, so the record is consistent: the agent
            // finishes the change and never undoes a retirement in flight.
            signals.leave_on_next(format!("muster describe {name}"));
            let restarted = cluster.ensure_agent();
            let wanted = home.load(&name)?.map(|r| r.spec.workers);
            let message = match wanted {
                Some(n) if n == args.workers => format!(
                    "cluster {name} keeps the new size, {n} worker jobs (recorded before any job \
                     was launched or retired); its agent{} finishes the change. \
                     `muster scale {name} {before}` goes back",
                    restarted.map(|p| format!(" (pid {p})")).unwrap_or_default()
                ),
                Some(n) => {
                    format!("nothing was changed: cluster {name} still wants {n} worker jobs")
                }
                None => format!("cluster {name} is no longer in the registry"),
            };
            record_scale(
                &cluster,
                before,
                args.workers,
                "interrupted; the agent finishes it",
            )
            .await;
            return Err(Interrupted {
                signal: sig,
                message,
            }
            .into());
        }
    };
    result.with_context(|| format!("scaling cluster {name:?} to {}", args.workers))?;
    record_scale(&cluster, before, args.workers, "done").await;
    print_summary(&cluster, "scaled", args.output);
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
    // Report the agent as found: a read-only command never restarts it
    // (`scale`, `adapt` and `up` do).
    let health = adaptive_agent::health(home, &args.name)?;
    let restarted = None;
    let status = cluster.status().await?;
    let dir = home.cluster_dir(&args.name).display().to_string();
    let events = timeline::read(home, &args.name)?;
    let view = output::AgentView::new(
        cluster.backend().capabilities().supervisor == Supervisor::Agent,
        &health,
        restarted,
        &events,
        timeline::unix_now(),
    )
    .current(cluster.record());
    print!(
        "{}",
        output::describe(&status, cluster.record(), &dir, Some(&view), args.output)
    );
    Ok(())
}

pub fn env(home: &Home, args: EnvArgs) -> Result<()> {
    muster::spec::check_name(&args.name)
        .map_err(|r| Error::Usage(format!("cluster name {:?}: {r}", args.name)))?;
    let record = home
        .load(&args.name)?
        .ok_or_else(|| Error::NotFound(args.name.clone()))?;
    print!("{}", crate::client_env::render(&record, args.output));
    Ok(())
}

/// The adaptive settings `adapt` asks for, over the cluster's `spec`:
/// none with `--off`; otherwise its flags over the settings it has (a
/// maximum is required to turn adaptation on).
fn wanted_adapt(spec: &ClusterSpec, args: &AdaptArgs) -> Result<Option<AdaptSpec>> {
    if args.off {
        return Ok(None);
    }
    let mut spec = spec.clone();
    if spec.adapt.is_none() && args.flags.maximum.is_none() {
        return Err(Error::Usage(format!(
            "adapt.maximum: required to turn adaptive scaling on (muster adapt {} --max N)",
            args.name
        ))
        .into());
    }
    apply_adapt(&mut spec, &args.flags, true)?;
    Ok(spec.adapt)
}

pub async fn adapt(home: &Home, args: AdaptArgs) -> Result<()> {
    let name = args.name.clone();
    if let Some(r) = kube_record(home, &name)? {
        let adapt = wanted_adapt(&r.spec, &args)?;
        return kube::adapt(home, &r, adapt, args.output).await;
    }
    let mut cluster = open(home, &name)?;
    let adapt = wanted_adapt(&cluster.record().spec, &args)?;
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
mod tests;
