//! `muster down`: bring down clusters by name or all of them, with or
//! without a registry record. Without one, it searches every manager it can
//! search from here (this host's processes; the SLURM and PBS queues when
//! their commands are on PATH) and says which it searched; `--all` also
//! stops the clusters found there without a record ([`crate::unrecorded`]); `--backend` or
//! `-f SPEC` narrows (or widens, for SSH hosts, Kubernetes, YARN) the search.
//! Kubernetes clusters go to the API server (through [`crate::kubernetes`]):
//! from their record or spec, else from `--backend kubernetes` / `-n` /
//! `--context` and the kubeconfig.

use std::sync::Arc;

use anyhow::Context;
use anyhow::Result;
use muster::{Backend, BackendSpec, ClusterSpec, DownReport, Error, Home, JobId, ManagedCluster};

use crate::cli::*;
use crate::commands::{agent_control, build_spec};
use crate::kubernetes as kube;
use crate::output;

/// One place to search: what to call it, the backend, and whether failing
/// to search it fails the command (an explicit choice) or is a warning (a
/// search muster chose to add).
type Search = (String, Arc<dyn Backend>, bool);

/// Where to look for one cluster.
struct Target {
    name: String,
    searches: Vec<Search>,
}

/// The searches for a cluster without a record and without a spec: the
/// local backend always, the batch queues whose commands are here.
fn unrecorded_searches(name: &str, home: &Home) -> Result<Vec<Search>> {
    let mut out = vec![(
        "this host's processes".to_string(),
        muster::backend_for_down("local", name, home)?,
        true,
    )];
    for (kind, program) in crate::unrecorded::QUEUES {
        if crate::unrecorded::on_path(program) {
            out.push((
                format!("the {kind} queue ({program})"),
                muster::backend_for_down(kind, name, home)?,
                false,
            ));
        }
    }
    Ok(out)
}

/// What `down NAME` brings down when it is a kubernetes cluster: the spec
/// (the registry's, else `-f`'s, else one made of `-n`/`--context`, else
/// none: the kubeconfig's current context and namespace). `None` when the
/// cluster is not a kubernetes one.
fn kube_target(home: &Home, args: &DownArgs, name: &str) -> Result<Option<Option<ClusterSpec>>> {
    let given = match &args.file {
        Some(file) => Some(build_spec(&SpecArgs {
            file: Some(file.clone()),
            name: Some(name.to_string()),
            ..Default::default()
        })?),
        None => None,
    };
    let spec = home.load(name)?.map(|r| r.spec).or(given);
    let located = args.namespace.is_some() || args.context.is_some();
    let is_kube = match &spec {
        Some(s) => kube::is_kube(s),
        None => match args.backend.as_deref() {
            Some(kind) => kind == kube::KIND,
            None => located,
        },
    };
    if !is_kube {
        if located {
            return Err(Error::Usage(format!(
                "-n/--context: only for kubernetes clusters (cluster {name:?} is not one)"
            ))
            .into());
        }
        return Ok(None);
    }
    if spec.is_some() || !located {
        return Ok(Some(spec));
    }
    let mut s = ClusterSpec::from_yaml("{}", None)?;
    s.name = name.to_string();
    s.backend = BackendSpec::of_kind(kube::KIND);
    for (k, v) in [("namespace", &args.namespace), ("context", &args.context)] {
        if let Some(v) = v {
            s.backend
                .options
                .insert(k.into(), serde_json::Value::String(v.clone()));
        }
    }
    muster::validate(&s)?;
    Ok(Some(Some(s)))
}

async fn targets(home: &Home, args: &DownArgs) -> Result<(Vec<Target>, Option<String>)> {
    if args.all {
        let records = home.list()?;
        let mut t: Vec<Target> = records
            .iter()
            // Kubernetes clusters are brought down by `down` itself.
            .filter(|r| !kube::is_kube(&r.spec))
            .map(|r| {
                Ok(Target {
                    name: r.name.clone(),
                    searches: vec![(
                        r.backend().to_string(),
                        muster::backend_for_spec(&r.spec, home)?,
                        true,
                    )],
                })
            })
            .collect::<Result<_>>()?;
        // Clusters running without a record: their processes' markers on
        // this host and their jobs' names in the queues name them (every
        // place is searched for each: a batch cluster's submit-host
        // scheduler runs here, its jobs in the queue).
        let names: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
        let (found, warnings) = crate::unrecorded::find(home, &names).await;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        for u in found {
            eprintln!(
                "found cluster {} without a registry record ({}: {})",
                u.name,
                u.whereabouts(),
                u.jobs().join(", ")
            );
            t.push(Target {
                searches: unrecorded_searches(&u.name, home)?,
                name: u.name,
            });
        }
        return Ok((t, None));
    }
    let name = args
        .name
        .clone()
        .expect("clap requires a name without --all");
    muster::spec::check_name(&name)
        .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
    // The registry's spec, else the one given with -f, else a kind, else
    // every manager searchable from here.
    let searches = match (home.load(&name)?, &args.file, &args.backend) {
        (Some(r), _, _) => vec![(
            r.backend().to_string(),
            muster::backend_for_spec(&r.spec, home)?,
            true,
        )],
        (None, Some(file), _) => {
            let spec = build_spec(&SpecArgs {
                file: Some(file.clone()),
                name: Some(name.clone()),
                ..Default::default()
            })?;
            vec![(
                format!("the {} backend of {}", spec.backend.kind(), file.display()),
                muster::backend_for_spec(&spec, home)?,
                true,
            )]
        }
        (None, None, Some(kind)) => vec![(
            format!("the {kind} backend"),
            muster::backend_for_down(kind, &name, home)?,
            true,
        )],
        (None, None, None) => unrecorded_searches(&name, home)?,
    };
    let searched = home.load(&name)?.is_none().then(|| {
        let mut w: Vec<&str> = searches.iter().map(|(what, _, _)| what.as_str()).collect();
        w.dedup();
        let mut text = w.join(", ");
        if args.file.is_none() && args.backend.is_none() {
            text.push_str(
                "; SSH hosts, Kubernetes and YARN need `-f SPEC` (or --backend KIND; Kubernetes also -n NS or --context) to be searched",
            );
        }
        text
    });
    Ok((vec![Target { name, searches }], searched))
}

pub async fn down(home: &Home, args: DownArgs) -> Result<()> {
    if let Some(name) = args.name.as_deref().filter(|_| !args.all) {
        muster::spec::check_name(name)
            .map_err(|r| Error::Usage(format!("cluster name {name:?}: {r}")))?;
        if let Some(spec) = kube_target(home, &args, name)? {
            let recorded = home.load(name)?.is_some();
            let r = kube::down(home, name, spec.as_ref())
                .await
                .with_context(|| format!("bringing down cluster {name:?}"))?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let searched = (!recorded).then_some("the kubernetes backend");
            print!("{}", output::down(&[r], searched, args.output));
            return Ok(());
        }
    }
    let (targets, searched) = targets(home, &args).await?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    if args.all {
        for r in home.list()?.into_iter().filter(|r| kube::is_kube(&r.spec)) {
            match kube::down(home, &r.name, Some(&r.spec)).await {
                Ok(rep) => {
                    for w in &rep.warnings {
                        eprintln!("warning: {w}");
                    }
                    reports.push(rep)
                }
                Err(e) => failures.push(
                    anyhow::Error::new(e).context(format!("bringing down cluster {:?}", r.name)),
                ),
            }
        }
    }
    let agent = agent_control(home)?;
    for t in targets {
        let mut merged = DownReport {
            name: t.name.clone(),
            stopped: Vec::<JobId>::new(),
            existed: false,
            warnings: Vec::new(),
        };
        let mut failed = false;
        for (what, backend, required) in &t.searches {
            // The library stops the agent first (so it cannot relaunch
            // workers) and again after; rounds also re-read the record under
            // the cluster lock, and finish once `down` has marked it
            // Stopping or removed it.
            match ManagedCluster::down_named(&t.name, backend.as_ref(), home, Some(&agent)).await {
                Ok(r) => {
                    merged.existed |= r.existed;
                    merged.stopped.extend(r.stopped);
                    merged.warnings.extend(r.warnings);
                }
                Err(e) if !required => merged.warnings.push(format!(
                    "could not search {what} for cluster {}: {e}",
                    t.name
                )),
                Err(e) => {
                    failed = true;
                    failures.push(
                        anyhow::Error::new(e)
                            .context(format!("bringing down cluster {:?}", t.name)),
                    );
                }
            }
        }
        for w in &merged.warnings {
            eprintln!("warning: {w}");
        }
        merged.stopped.sort();
        merged.stopped.dedup();
        if !failed {
            reports.push(merged);
        }
    }
    print!(
        "{}",
        output::down(&reports, searched.as_deref(), args.output)
    );
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
