# muster-ssh's remote helper, run on one host by the host's own Python as a
# server that muster keeps for the rest of its run (`PYTHON -c SERVE`, see
# lib.rs): this file's text as one JSON string on the first line of stdin,
# then one request per line, one answer line each; it exits at the end of
# stdin. Each host so pays for one login shell and one interpreter however
# many requests follow. It starts detached jobs,
# finds them again through /proc markers, reports and stops them, and reads
# logs.
# Job argv and environment arrive as JSON: nothing here goes through a shell
# except the fixed wrapper below, which only expands "$@".
# Layout on the host: <state_dir>/ssh/<cluster>/<host>/{scheduler.json,
# logs/<job>.log, jobs/<job>.pid, jobs/<job>.exit, tls/ (owner-only)}. Every process carries
# MUSTER_HOME=<state_dir>, MUSTER_CLUSTER, MUSTER_JOB and MUSTER_HOST, and only
# processes whose MUSTER_HOST is this host are ever touched: hosts may share
# a pid space or a filesystem.
import json
import os
import signal
import sys
import time

WRAPPER = '"$@"; echo $? > "$MUSTER_EXIT_FILE"'
REQ = BASE = CLUSTER = HOST = DIR = MARK = None


def configure(req):
    """Sets the globals every operation reads from one request."""
    global REQ, BASE, CLUSTER, HOST, DIR, MARK
    REQ = req
    BASE = os.path.abspath(os.path.expanduser(req["state_dir"]))
    CLUSTER = req["cluster"]
    HOST = req["host"]
    DIR = os.path.join(BASE, "ssh", CLUSTER, HOST)
    MARK = {"MUSTER_HOME": BASE, "MUSTER_CLUSTER": CLUSTER, "MUSTER_HOST": HOST}


def path(kind, job, ext):
    return os.path.join(DIR, kind, job + ext)


def read(p):
    try:
        with open(p, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def defunct(pid):
    s = read("/proc/%d/stat" % pid)
    if s is None:
        return True
    parts = s.rsplit(")", 1)
    return len(parts) < 2 or parts[1].split()[:1] in (["Z"], ["X"], [])


def marker(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k.startswith(b"MUSTER_"):
            env[k.decode()] = v.decode("utf-8", "replace")
    if all(env.get(k) == v for k, v in MARK.items()) and "MUSTER_JOB" in env:
        return env["MUSTER_JOB"]
    return None


def scan():
    """Live processes of this cluster on this host: {job: [pid, ...]}."""
    me = os.getpid()
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        job = marker(pid)
        if job is not None and not defunct(pid):
            out.setdefault(job, []).append(pid)
    return out


def distributed_version(spec):
    """distributed's version from its dist-info directory beside the package
    (importlib.metadata would cost this short-lived helper ~70 ms of imports)."""
    for loc in spec.submodule_search_locations or []:
        site = os.path.dirname(loc)
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for name in names:
            if name.startswith("distributed-") and name.endswith((".dist-info", ".egg-info")):
                return name[len("distributed-"):].rsplit(".", 1)[0]
    return "unknown"


def op_probe():
    import importlib.util

    res = {"jobs": sorted(scan()), "python": sys.executable}
    spec = importlib.util.find_spec("distributed")
    if spec is None:
        res["error"] = "No module named distributed"
    else:
        res["distributed"] = distributed_version(spec)
    res["setsid"] = hasattr(os, "setsid")
    # A port free here now, for a scheduler whose address muster gives its
    # workers before it starts (the kernel rarely hands it out again soon).
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            res["free_port"] = s.getsockname()[1]
    except OSError:
        pass
    others = []
    for py in REQ.get("other_pythons", []):
        import subprocess

        try:
            p = subprocess.run(
                [py, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('distributed') is None)"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
            )
            if p.returncode != 0:
                others.append([py, "No module named distributed"])
        except OSError as e:
            others.append([py, str(e)])
    res["other_errors"] = others
    return res


def op_launch():
    import subprocess

    for sub in ("logs", "jobs"):
        os.makedirs(os.path.join(DIR, sub), exist_ok=True)
    write_tls_files(REQ.get("tls_files") or {})
    started, failed = [], []
    sched = os.path.join(DIR, "scheduler.json")
    if REQ.get("wait_scheduler_file"):
        try:
            os.unlink(sched)
        except FileNotFoundError:
            pass
    text = REQ.get("scheduler_file_text")
    if text is not None:
        write_scheduler_file(text)
    elif REQ.get("remove_stale_scheduler_file"):
        try:
            os.unlink(sched)
        except FileNotFoundError:
            pass
    procs = {}
    for job in REQ["jobs"]:
        jid = job["id"]
        env = dict(os.environ)
        env.update(job["env"])
        env.update(MARK)
        env["MUSTER_JOB"] = jid
        env["MUSTER_EXIT_FILE"] = path("jobs", jid, ".exit")
        for p in (env["MUSTER_EXIT_FILE"],):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        try:
            with open(path("logs", jid, ".log"), "wb") as log:
                proc = subprocess.Popen(
                    ["sh", "-c", WRAPPER, "muster-job"] + job["argv"],
                    cwd=DIR, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
        except OSError as e:
            failed.append([jid, str(e)])
            continue
        with open(path("jobs", jid, ".pid"), "w") as f:
            f.write(str(proc.pid))
        procs[jid] = proc
        started.append(jid)
    if REQ.get("record_python"):
        # status and down, run without the spec, find this python again here.
        with open(os.path.join(DIR, "python"), "w") as f:
            f.write(sys.executable)
    res = {"started": started, "failed": failed, "dir": DIR}
    if REQ.get("wait_scheduler_file") and started:
        proc = procs[started[0]]
        deadline = time.time() + REQ.get("wait_seconds", 60)
        while time.time() < deadline:
            text = read(sched)
            if text:
                try:
                    data = json.loads(text)
                    if data.get("address") and "dashboard" in data.get("services", {}):
                        res["scheduler_file"] = text
                        break
                except ValueError:
                    pass
            if proc.poll() is not None:
                res["exited"] = proc.returncode
                break
            time.sleep(0.02)
    return res


def write_tls_files(files):
    """The cluster's credentials for this host's jobs (they came in the
    request, over the SSH session): <DIR>/tls made 0700, each file created
    0600 (never readable by others, even for an instant)."""
    if not files:
        return
    d = os.path.join(DIR, "tls")
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    for name, text in files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad credential file name {name!r}")
        # A job starting beside this launch may be reading the file: write
        # a new one and rename it over, so it always finds a whole file.
        tmp = os.path.join(d, f".{name}.{os.getpid()}.tmp")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(d, name))


def write_scheduler_file(text):
    os.makedirs(DIR, exist_ok=True)
    tmp = os.path.join(DIR, ".scheduler.json.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(DIR, "scheduler.json"))


def op_put_scheduler():
    write_scheduler_file(REQ["text"])
    return {}


def op_read_scheduler():
    return {"text": read(os.path.join(DIR, "scheduler.json"))}


def job_status(jid, live):
    pid_text = read(path("jobs", jid, ".pid"))
    log = path("logs", jid, ".log")
    if pid_text is None:
        return {"state": "unknown"}
    if jid in live:
        return {"state": "running"}
    code = (read(path("jobs", jid, ".exit")) or "").strip()
    if code in ("0", "cancelled"):
        return {"state": "finished"}
    if code:
        try:
            c = int(code)
            what = "killed by signal %d" % (c - 128) if 128 < c < 160 else "exited with code %d" % c
        except ValueError:
            what = "ended with status %r" % code
        return {"state": "failed", "reason": "%s; log on %s: %s" % (what, HOST, log)}
    return {"state": "failed", "reason": "the process vanished without an exit status (killed?); log on %s: %s" % (HOST, log)}


def op_status():
    live = scan()
    return {"jobs": {jid: job_status(jid, live) for jid in REQ["jobs"]}}


def signal_all(pids, sig):
    for pid in pids:
        for target in (-pid, pid):
            try:
                os.kill(target, sig)
            except OSError:
                pass


def op_cancel():
    wanted = REQ.get("jobs")
    grace, kill_wait = REQ.get("grace", 3.0), REQ.get("kill_wait", 5.0)

    def live():
        return {j: p for j, p in scan().items() if wanted is None or j in wanted}

    found = live()
    stopped = sorted(found)
    signal_all([p for ps in found.values() for p in ps], signal.SIGTERM)
    start = time.time()
    killed = False
    while found:
        time.sleep(0.05)
        found = live()
        if not found:
            break
        elapsed = time.time() - start
        if elapsed >= grace and not killed:
            signal_all([p for ps in found.values() for p in ps], signal.SIGKILL)
            killed = True
        elif killed and elapsed >= grace + kill_wait:
            break
    for jid in stopped + list(wanted or []):
        if os.path.exists(path("jobs", jid, ".pid")) and not os.path.exists(path("jobs", jid, ".exit")):
            try:
                with open(path("jobs", jid, ".exit"), "w") as f:
                    f.write("cancelled")
            except OSError:
                pass
    return {"stopped": stopped, "left": {j: p for j, p in found.items()}}


def op_logs():
    p = path("logs", REQ["job"], ".log")
    text = read(p)
    if text is None:
        return {"missing": p}
    limit = REQ.get("max_bytes", 4 << 20)
    return {"text": text[-limit:]}


def op_forget():
    import shutil

    shutil.rmtree(DIR, ignore_errors=True)
    for d in (os.path.dirname(DIR),):
        try:
            os.rmdir(d)
        except OSError:
            pass
    return {}


OPS = {"probe": op_probe, "launch": op_launch, "status": op_status, "cancel": op_cancel,
       "logs": op_logs, "forget": op_forget, "put_scheduler": op_put_scheduler,
       "read_scheduler": op_read_scheduler, "scan": lambda: {"jobs": sorted(scan())}}


def reap():
    """Collects jobs started by earlier requests that have exited: this
    helper outlives them, and unreaped they would stay zombies until it
    ends (status and cancel already treat zombies as gone)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def answer(req):
    reap()
    configure(req)
    sys.stdout.write("MUSTER-HELPER " + json.dumps(OPS[req["op"]]()) + "\n")
    sys.stdout.flush()


for line in sys.stdin.buffer:
    if line.strip():
        answer(json.loads(line.decode("utf-8")))
