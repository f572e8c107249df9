//! SshRunner and the `ssh` backend against the real sshd test hosts
//! (tests/services/sshhosts). Each test is `#[ignore]`d, because it needs
//! those hosts: scripts/test.sh starts them and then runs these with
//! `cargo test -p muster-ssh -- --ignored`. Run that way without the hosts,
//! they fail: a test never passes for want of its service.

use std::path::PathBuf;
use std::time::Duration;

use muster_core::Error;
use muster_core::runner::{CommandRunner, CommandSpec};
use muster_ssh::{SshOptions, SshRunner};

fn state() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("MUSTER_SSH_STATE").unwrap_or_else(|_| "/tmp/muster-sshhosts".into()),
    );
    assert!(
        dir.join("ssh_config").exists(),
        "SSH test hosts missing: run tests/services/sshhosts/start.sh 3"
    );
    Some(dir)
}

fn options(dir: &std::path::Path) -> SshOptions {
    SshOptions {
        ssh_config: Some(dir.join("ssh_config")),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

const HOSTILE: &[&str] = &[
    "two words",
    "it's",
    "$(touch /tmp/muster-ssh-pwned)",
    "`id`",
    "a;b|c&d>e<f",
    "$HOME",
    "\\",
    "new\nline",
    "*",
    "~",
    "",
    "-n",
    "ünï",
];

#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn hostile_arguments_arrive_unchanged_on_a_real_host() {
    let Some(dir) = state() else { return };
    let runner = SshRunner::connect_to("h2", &options(&dir)).unwrap();
    assert_eq!(runner.target().hostname, "10.200.0.12");
    let mut argv = vec!["printf".to_string(), "[%s]\\n".to_string()];
    argv.extend(HOSTILE.iter().map(|s| s.to_string()));
    let mut cmd = CommandSpec::new(argv);
    cmd.env = vec![("MUSTER_TEST".into(), "x'$(id)".into())];
    let out = runner.run(&cmd).await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let expected: String = HOSTILE.iter().map(|s| format!("[{s}]\n")).collect();
    assert_eq!(out.stdout, expected);
    assert!(!std::path::Path::new("/tmp/muster-ssh-pwned").exists());

    // stdin, exit codes, the environment and the host itself.
    let mut cmd = CommandSpec::new([
        "sh",
        "-c",
        "cat; printf '%s' \"$MUSTER_TEST\"; hostname >&2; exit 7",
    ]);
    cmd.env = vec![("MUSTER_TEST".into(), "x'$(id)".into())];
    cmd.stdin = Some(b"in|".to_vec());
    let out = runner.run(&cmd).await.unwrap();
    assert_eq!((out.code, out.stdout.as_str()), (7, "in|x'$(id)"));
    assert!(out.stderr.lines().any(|l| l == "h2"), "{}", out.stderr);

    let err = runner
        .run(&CommandSpec::new(["/nonexistent/program"]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CommandNotFound { .. }), "{err}");

    let mut slow = CommandSpec::new(["sleep", "30"]);
    slow.timeout = Some(Duration::from_secs(1));
    let err = runner.run(&slow).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn unknown_host_keys_are_refused_unless_accepted_explicitly() {
    let Some(dir) = state() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let mut opts = options(&dir);
    opts.known_hosts = Some(known.clone());
    let runner = SshRunner::connect_to("h3", &opts).unwrap();
    let err = runner.run(&CommandSpec::new(["true"])).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("h3") && msg.contains("host key not known"),
        "{msg}"
    );
    assert!(
        matches!(
            err,
            Error::Host {
                transient: false,
                ..
            }
        ),
        "{err:?}"
    );

    opts.accept_new_host_keys = true;
    let runner = SshRunner::connect_to("h3", &opts).unwrap();
    assert_eq!(
        runner.run(&CommandSpec::new(["true"])).await.unwrap().code,
        0
    );
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.starts_with("10.200.0.13 ssh-ed25519 "),
        "{recorded}"
    );

    // Now known: accepted without the opt-in.
    opts.accept_new_host_keys = false;
    let runner = SshRunner::connect_to("h3", &opts).unwrap();
    assert_eq!(
        runner.run(&CommandSpec::new(["true"])).await.unwrap().code,
        0
    );
}

#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn an_unreachable_host_fails_fast_with_its_name() {
    let Some(dir) = state() else { return };
    let mut opts = options(&dir);
    opts.connect_timeout = Duration::from_secs(2);
    // 10.200.0.99 is on the test bridge but no host answers there.
    let runner = SshRunner::connect_to("root@10.200.0.99", &opts).unwrap();
    let start = std::time::Instant::now();
    let err = runner.run(&CommandSpec::new(["true"])).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("10.200.0.99"), "{err}");
    assert!(err.is_transient(), "{err:?}");
}

/// A tunnel through h1 reaches a server that listens on the bridge address
/// (as a scheduler inside a cluster would), carries several connections at
/// once, and moves more than its buffers hold, both ways, byte for byte.
#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn a_tunnel_through_a_host_carries_concurrent_connections_byte_for_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(dir) = state() else { return };
    // An echo server on this machine's bridge address, which h1 can reach.
    let server = tokio::net::TcpListener::bind("10.200.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = server.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
            });
        }
    });
    let runner = SshRunner::connect_to("h1", &options(&dir)).unwrap();
    let (host, local) = runner.reach("10.200.0.1", port).await.unwrap();
    assert_eq!(host, "127.0.0.1");
    assert_ne!(local, port);
    // The same remote address reuses the open tunnel.
    assert_eq!(runner.reach("10.200.0.1", port).await.unwrap().1, local);

    let clients = (0..4u8).map(|k| {
        let host = host.clone();
        tokio::spawn(async move {
            let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8 ^ k).collect();
            let mut s = tokio::net::TcpStream::connect((host.as_str(), local))
                .await
                .unwrap();
            let (mut r, mut w) = s.split();
            let send = async {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let recv = r.read_to_end(&mut back);
            let ((), got) = tokio::join!(send, recv);
            got.unwrap();
            assert!(
                back == payload,
                "connection {k}: {} bytes came back",
                back.len()
            );
        })
    });
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("the tunnel moved 4 x 300 kB within 60 s")
            .unwrap();
    }
}

#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn a_conversation_answers_many_requests_from_one_remote_process() {
    let Some(dir) = state() else { return };
    let target = muster_ssh::config::resolve_destination("h3", &options(&dir)).unwrap();
    let pool = muster_ssh::SshPool::new(4);
    // A remote program that reads its preamble, then answers each line with
    // its own pid and the line, among noise that is not an answer.
    let program = "read p; while IFS= read -r l; do echo noise; printf 'ANS %s %s %s\\n' \"$p\" $$ \"$l\"; done; exit 5";
    let ask = |request: &str| {
        pool.ask(
            &target,
            program.to_string(),
            b"pre\n".to_vec(),
            request.to_string(),
            "ANS ",
            Duration::from_secs(10),
        )
    };
    let mut pids = Vec::new();
    for hostile in ["$(touch /tmp/muster-ssh-pwned)", "it's `id`", "ünï"] {
        match ask(hostile).await.unwrap() {
            muster_ssh::session::Reply::Line(l) => {
                let (pre, rest) = l.split_once(' ').unwrap();
                let (pid, echoed) = rest.split_once(' ').unwrap();
                assert_eq!((pre, echoed), ("pre", hostile));
                pids.push(pid.to_string());
            }
            muster_ssh::session::Reply::Ended(e) => panic!("ended: {e:?}"),
        }
    }
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "one remote process: {pids:?}"
    );
    assert!(!std::path::Path::new("/tmp/muster-ssh-pwned").exists());

    // A program that ends without answering reports how, like a command.
    let out = pool
        .ask(
            &target,
            "read p; read l; echo oops >&2; exit 3".into(),
            b"pre\n".to_vec(),
            "x".into(),
            "ANS ",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    match out {
        muster_ssh::session::Reply::Ended(e) => {
            assert_eq!(e.code, 3);
            assert_eq!(String::from_utf8_lossy(&e.stderr).trim(), "oops");
        }
        muster_ssh::session::Reply::Line(l) => panic!("answered {l}"),
    }
}

#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn a_long_conversation_is_not_stalled_by_what_the_program_writes_to_stderr() {
    let Some(dir) = state() else { return };
    let target = muster_ssh::config::resolve_destination("h2", &options(&dir)).unwrap();
    let pool = muster_ssh::SshPool::new(4);
    // 64 kB of stderr per answer: 48 answers are 3 MB, more than the
    // channel's 2 MB window, which unread stderr would use up.
    let program = "read p; while IFS= read -r l; do head -c 65536 /dev/zero | tr '\\0' x >&2; printf 'ANS %s\\n' \"$l\"; done";
    for i in 0..48 {
        let reply = pool
            .ask(
                &target,
                program.to_string(),
                b"pre\n".to_vec(),
                format!("r{i}"),
                "ANS ",
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        match reply {
            muster_ssh::session::Reply::Line(l) => assert_eq!(l, format!("r{i}")),
            muster_ssh::session::Reply::Ended(e) => panic!("ended at {i}: {e:?}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs the SSH test hosts (tests/services/sshhosts/start.sh 3); scripts/test.sh runs it with --ignored"]
async fn the_ssh_backend_keeps_the_backend_contract() {
    // Real Dask workers on h1 and h2 (the contract needs no scheduler: they
    // keep trying to reach one until their death timeout).
    let dir = state().unwrap();
    let python = std::env::var("MUSTER_PYTHON").unwrap_or_else(|_| "python3".into());
    let yaml = format!(
        "name: ctr\nbackend: {{kind: ssh, hosts: [h1, h2], workers_on_scheduler_host: true, \
         ssh_config: {}, connect_timeout: 5s}}\nworker: {{python: {python}, death_timeout: 60s}}\n",
        dir.join("ssh_config").display()
    );
    let spec = muster_core::ClusterSpec::from_yaml(&yaml, None).unwrap();
    let mut errs = spec.problems();
    errs.extend(muster_core::BackendKind::validate(
        &muster_ssh::SshKind,
        &spec,
    ));
    assert_eq!(errs, [], "the contract's spec is valid");
    let backend = muster_ssh::SshBackend::new(&spec).unwrap();
    muster_core::testkit::contract::run(&backend, "ctr").await;
}
