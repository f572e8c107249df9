//! The command-line grammar (clap derive): every subcommand, flag and help
//! text, and nothing that runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use muster::{Memory, Seconds};

const EXAMPLES: &str = "\
Examples:
  muster up demo --workers 4 --python ~/venv/bin/python   # scheduler + 4 workers here
  muster up -f cluster.yaml -o json                       # from a spec file, for scripts
  muster get clusters                                     # what runs (READY 3/4: worker jobs ready/wanted)
  muster get clusters -w                                  # watch: print again on every change
  muster get workers demo -o wide
  muster get clusters -o name | xargs -n1 basename        # cluster/NAME lines for scripts
  muster scale demo 8                                     # grow (or shrink, retiring safely)
  muster adapt demo --min 0 --max 6                       # let the scheduler's load size it
  muster events demo                                      # every scaling decision and why
  muster logs demo --worker w0 --tail 50 -f               # follow a worker's log
  muster render -f cluster.yaml                           # what `up` would launch
  muster down demo                                        # stop everything, verify, forget

State lives in $MUSTER_HOME (default $XDG_STATE_HOME/muster, else ~/.local/state/muster).
Exit codes (every command): 0 success; 2 the command as typed cannot be carried out
(bad flag or spec, the error names the field; unknown cluster name); 1 any other failure
(a manager, a job, a timeout, a cluster that already exists); 130/143 stopped by
SIGINT/SIGTERM after cleaning up (`up` rolls back). `down` of a cluster that is not
there succeeds (0) and says where it looked.
Machine-readable output (-o json|yaml) is the muster/v1 contract (README).";

/// Deploy Dask on the cluster managers you already run, and scale it.
#[derive(Debug, Parser)]
#[command(name = "muster", version, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// Directory for muster's state (registry, logs)
    #[arg(long, global = true, env = "MUSTER_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Log more to stderr (-v: info, -vv: debug with every external command's argv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring a cluster up and wait until its workers are registered
    #[command(
        after_help = "Examples:\n  muster up demo --workers 4\n  muster up -f cluster.yaml --timeout 5m -o json\n  muster up demo --security none   # plain TCP, no authentication (warns)"
    )]
    Up(UpArgs),
    /// Stop everything of a cluster, verify nothing is left, and forget it
    #[command(after_help = "Examples:\n  muster down demo\n  muster down --all")]
    Down(DownArgs),
    /// Set the number of worker jobs and wait until the scheduler sees them
    #[command(after_help = "Examples:\n  muster scale demo 8\n  muster scale demo 0")]
    Scale(ScaleArgs),
    /// List clusters or a cluster's workers
    #[command(
        after_help = "Examples:\n  muster get clusters -o json\n  muster get clusters -w\n  muster get workers demo -o wide\n  muster get workers demo -o name"
    )]
    Get(GetArgs),
    /// Show everything about one cluster
    Describe(DescribeArgs),
    /// Print the scheduler's or a worker's log
    #[command(
        after_help = "Examples:\n  muster logs demo\n  muster logs demo -f\n  muster logs demo --worker w3 --tail 100\n  muster logs demo --all -o json"
    )]
    Logs(LogsArgs),
    /// Print what a Dask client needs to reach a cluster (address, TLS files) as shell exports
    #[command(
        after_help = "Examples:\n  eval \"$(muster env demo)\"; python -c 'import distributed; distributed.Client()'\n  muster env demo -o json"
    )]
    Env(EnvArgs),
    /// Print exactly what `up` would launch, without launching anything
    #[command(
        after_help = "Examples:\n  muster render demo --workers 2\n  muster render -f cluster.yaml -o yaml"
    )]
    Render(RenderArgs),
    /// Turn adaptive scaling on (with bounds) or off
    #[command(
        after_help = "Examples:\n  muster adapt demo --min 0 --max 6\n  muster adapt demo --max 20 --scale-down-wait 30s --idle-timeout 1h\n  muster adapt demo --off"
    )]
    Adapt(AdaptArgs),
    /// Show a cluster's timeline: every scaling decision and why
    #[command(after_help = "Examples:\n  muster events demo\n  muster events demo -o json")]
    Events(EventsArgs),
    /// Run a cluster's agent in the foreground (started by `up`; internal)
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Run the Kubernetes operator (in a pod, or anywhere with a kubeconfig), or print its CRDs
    #[command(
        after_help = "Examples:\n  KUBECONFIG=~/.kube/config muster operator --no-leader-election\n  muster operator crds --dir charts/muster-operator/crds"
    )]
    Operator(OperatorArgs),
    /// Forward loopback ports to a Kubernetes cluster's scheduler (comm and
    /// dashboard) through the API server, print the addresses, and keep
    /// them open until interrupted
    PortForward(PortForwardArgs),
}

/// `muster operator`: run the controllers, or `crds`.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Print the CustomResourceDefinitions instead of running
    #[command(subcommand)]
    pub action: Option<OperatorAction>,
    /// Address of the HTTP endpoint for /metrics, /healthz and /readyz
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Watch this namespace only (default: every namespace)
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: the kubeconfig's namespace)
    #[arg(long, value_name = "NS")]
    pub leader_election_namespace: Option<String>,
    /// Act without electing a leader (only one replica may run)
    #[arg(long)]
    pub no_leader_election: bool,
}

/// What `muster operator` can print.
#[derive(Debug, Clone, Subcommand)]
pub enum OperatorAction {
    /// Print the four kubernetes.dask.org/v1 CRDs as YAML (or write one file each)
    Crds {
        /// Write `<plural>.yaml` files into this directory instead of stdout
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people
    Table,
    /// Columns with more detail
    Wide,
    /// JSON for scripts
    Json,
    /// YAML for scripts
    Yaml,
    /// `cluster/NAME` or `worker/NAME` lines (get, up, scale, down, adapt, describe)
    Name,
}

/// Where a cluster spec comes from: a file, flags, or both (flags win).
#[derive(Debug, Clone, Default, Args)]
pub struct SpecArgs {
    /// Cluster name (overrides the spec file's `name`)
    pub name: Option<String>,
    /// YAML spec file
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Cluster manager to use
    #[arg(long, value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(muster::KINDS.names()))]
    pub backend: Option<String>,
    /// Number of worker jobs
    #[arg(long, value_name = "N")]
    pub workers: Option<u32>,
    /// Python interpreter with dask[distributed] installed
    #[arg(long, value_name = "PATH")]
    pub python: Option<String>,
    /// Threads per worker job
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Memory per worker job, e.g. 2GiB, 2GB, 2048MiB
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<Memory>,
    /// Dask worker processes per job
    #[arg(long, value_name = "N")]
    pub processes: Option<u32>,
    /// The scheduler's transport (overrides `scheduler.security`): tls, the
    /// default, with certificates made for this cluster; none for plain TCP
    /// that anyone who reaches the port can use
    #[arg(long, value_enum, value_name = "MODE")]
    pub security: Option<SecurityFlag>,
}

/// `--security`: the values of `scheduler.security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityFlag {
    /// Mutual TLS with this cluster's own certificates
    Tls,
    /// Plain TCP without authentication
    None,
}

impl From<SecurityFlag> for muster::spec::Security {
    fn from(f: SecurityFlag) -> Self {
        match f {
            SecurityFlag::Tls => muster::spec::Security::Tls,
            SecurityFlag::None => muster::spec::Security::None,
        }
    }
}

/// Adaptive-scaling settings given as flags (they override the spec's `adapt`).
#[derive(Debug, Clone, Default, Args)]
pub struct AdaptFlags {
    /// Fewest worker jobs to keep
    #[arg(long = "min", value_name = "N")]
    pub minimum: Option<u32>,
    /// Most worker jobs to run
    #[arg(long = "max", value_name = "N")]
    pub maximum: Option<u32>,
    /// How long the target must stay lower before workers are removed, e.g. 30s
    #[arg(long, value_name = "DURATION")]
    pub scale_down_wait: Option<Seconds>,
    /// After growing, how long before any removal
    #[arg(long, value_name = "DURATION")]
    pub cooldown: Option<Seconds>,
    /// How often the agent looks at the scheduler, e.g. 500ms
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<Seconds>,
    /// Bring the whole cluster down after it has been idle this long
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<Seconds>,
}

impl AdaptFlags {
    /// True when any setting was given.
    pub fn any(&self) -> bool {
        self.minimum.is_some()
            || self.maximum.is_some()
            || self.scale_down_wait.is_some()
            || self.cooldown.is_some()
            || self.interval.is_some()
            || self.idle_timeout.is_some()
    }
}

/// `muster adapt`.
#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// Cluster name
    pub name: String,
    #[command(flatten)]
    pub flags: AdaptFlags,
    /// Turn adaptive scaling off; the cluster keeps its current size
    #[arg(long, conflicts_with_all = ["minimum", "maximum", "scale_down_wait", "cooldown", "interval", "idle_timeout"])]
    pub off: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Cluster name
    pub name: String,
    /// Only the last N events
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster agent` (internal).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cluster name
    pub name: String,
}

/// `muster up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Scale adaptively between --min and --max worker jobs (starts --min, or --workers)
    #[arg(long)]
    pub adapt: bool,
    #[command(flatten)]
    pub adapt_flags: AdaptFlags,
    /// How long to wait for the scheduler and workers, e.g. 90s, 5m
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub timeout: Seconds,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Cluster to bring down
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Bring down every cluster in the registry and every one found running
    /// on this host from its processes' markers (even without a record)
    #[arg(long)]
    pub all: bool,
    /// Backend to search when the cluster is not in the registry (default:
    /// this host's processes and the SLURM/PBS queues whose commands are here)
    #[arg(long, value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(muster::KINDS.names()))]
    pub backend: Option<String>,
    /// Spec file whose backend section says where to search when the cluster
    /// is not in the registry (e.g. the SSH hosts)
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "all"
    )]
    pub file: Option<PathBuf>,
    /// Kubernetes, without registry record or -f: the namespace to search
    /// (default: the context's)
    #[arg(short = 'n', long, value_name = "NS", conflicts_with = "all")]
    pub namespace: Option<String>,
    /// Kubernetes, without registry record or -f: the kubeconfig context
    #[arg(long, value_name = "CONTEXT", conflicts_with = "all")]
    pub context: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster port-forward`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Cluster name (kubernetes)
    pub name: String,
}

/// `muster scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Cluster to resize
    pub name: String,
    /// Number of worker jobs wanted
    pub workers: u32,
    /// The worker group to resize (kubernetes; default: the cluster's own)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// How long to wait for the scheduler to see them
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub timeout: Seconds,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What `muster get` lists.
#[derive(Debug, Clone, Subcommand)]
pub enum GetWhat {
    /// Every cluster in the registry, and those found running on this host
    /// without a record
    #[command(alias = "cluster")]
    Clusters {
        /// Kubernetes: muster's DaskClusters in every namespace, not only
        /// the current context's
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Watch: print again whenever the listing changes (Ctrl-C stops)
        #[arg(short, long)]
        watch: bool,
    },
    /// The worker jobs of one cluster
    #[command(alias = "worker")]
    Workers {
        /// Cluster name
        name: String,
        /// Output format
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Watch: print again whenever the listing changes (Ctrl-C stops)
        #[arg(short, long)]
        watch: bool,
    },
}

/// `muster get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(subcommand)]
    pub what: GetWhat,
}

/// `muster describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Cluster name
    pub name: String,
    /// Output format (table prints a readable report)
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Cluster name
    pub name: String,
    /// Output format (table prints `export` lines)
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Cluster name
    pub name: String,
    /// A worker job (e.g. demo-w3, or just w3); the scheduler when absent
    #[arg(long, value_name = "ID")]
    pub worker: Option<String>,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Every job's log: the scheduler's and each worker job's (queued and
    /// failed ones included)
    #[arg(long, conflicts_with = "worker")]
    pub all: bool,
    /// Follow: keep printing what is appended to the log (Ctrl-C stops;
    /// kubernetes: follows the pod's log until the pod ends)
    #[arg(short, long, conflicts_with = "all")]
    pub follow: bool,
    /// Output format (table prints each log under a `# job` header)
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `muster render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Output format (table prints the commands as text)
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}
