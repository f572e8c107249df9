"""dask-muster's MusterCluster on the local backend with real Dask: a client
computes, scale keeps held data, muster's agent adapts, a second process
connects by name and through the discovery entry point, close() leaves no
process (checked in /proc), async use, logs, bad parameters, crashes."""

import asyncio
import json
import signal
import time

import pytest
from distributed import Client

from conftest import refused, sum_of_squares, unique, wait_until
from dask_muster import MusterCluster

N = 2000
EXPECTED = sum(x * x for x in range(N))


def test_with_cluster_and_client_computes_and_close_leaves_nothing(home):
    name = unique()
    with MusterCluster(name=name, backend="local", n_workers=2, worker={"cores": 1}) as c, Client(c) as client:
        assert c.status.name == "running"
        assert home.processes(name), "no process carries the cluster's marker"
        assert sum_of_squares(client, N) == EXPECTED
        assert len(c.scheduler_info["workers"]) == 2  # live, from the scheduler
        assert c.dashboard_link.startswith("https://127.0.0.1:") and c.dashboard_link.endswith("/status")
        assert name in c._repr_html_() and "MusterCluster" in repr(c)
        assert client.dashboard_link == c.dashboard_link
    assert home.processes(name) == []
    assert home.clusters() == []


def test_scale_down_keeps_data_held_on_workers(home):
    name = unique()
    with MusterCluster(name=name, workers=4) as c, Client(c) as client:
        client.wait_for_workers(4, timeout=60)
        futures = client.map(lambda i: list(range(i * 1000, i * 1000 + 1000)), range(16), pure=False)
        client.wait_for_workers(4)
        held = client.gather(futures)
        assert len({w for ws in client.who_has(futures).values() for w in ws}) > 1
        c.scale(1)
        wait_until(lambda: len(c.scheduler_info["workers"]) == 1, timeout=30, message="1 worker")
        assert client.gather(futures) == held  # retired workers handed their data over
        assert len(json.loads(home.muster("get", "workers", name, "-o", "json").stdout)["items"]) == 1


def test_adapt_grows_under_a_burst_and_shrinks_back(home):
    name = unique()
    with MusterCluster(name=name, workers=0) as c, Client(c) as client:
        c.adapt(minimum=0, maximum=3, interval="200ms", scale_down_wait="1s", cooldown="1s")
        assert c._adaptive is None  # never distributed's client-side loop
        assert "muster agent" in c._scaling_status()
        futures = client.map(lambda i: time.sleep(1.5) or i, range(40), pure=False)
        wait_until(lambda: len(c.scheduler_info["workers"]) >= 2, timeout=60, message="growth")
        assert sum(client.gather(futures)) == sum(range(40))
        del futures
        wait_until(lambda: len(c.scheduler_info["workers"]) == 0, timeout=60, message="shrinking to 0")
        events = json.loads(home.muster("events", name, "-o", "json").stdout)["items"]
        kinds = {e["kind"] for e in events}
        assert {"scale-up", "scale-down"} <= kinds, kinds
        c.scale(1)  # scale turns adaptation off first
        desc = json.loads(home.muster("describe", name, "-o", "json").stdout)
        assert desc["spec"].get("adapt") is None and desc["desired_workers"] == 1


def test_from_name_and_discovery_from_a_second_process(home):
    name = unique()
    with MusterCluster(name=name, workers=1) as c:
        p = home.python(f"""
            import asyncio, json
            from importlib.metadata import entry_points
            from dask_muster import MusterCluster
            (ep,) = [e for e in entry_points(group="dask_cluster_discovery") if e.name == "muster"]
            async def names():
                return [(n, cls.__name__) async for n, cls in ep.load()()]
            found = asyncio.run(names())
            other = MusterCluster.from_name({name!r})
            print(json.dumps({{"found": found, "address": other.scheduler_address,
                               "workers": len(other.scheduler_info["workers"]),
                               "shutdown": other.shutdown_on_close}}))
            other.close()
        """)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        seen = json.loads(out.strip().splitlines()[-1])
        assert [name, "MusterCluster"] in seen["found"]
        assert seen["address"] == c.scheduler_address and seen["workers"] == 1
        assert seen["shutdown"] is False
        # The other process only disconnected.
        assert home.clusters() == [name] and len(c.scheduler_info["workers"]) == 1
    assert home.clusters() == [] and home.processes(name) == []
    with pytest.raises(ValueError, match="no muster cluster named"):
        MusterCluster.from_name("not-there")


def test_async_use_starts_and_stops_it(home):
    name = unique()

    async def main():
        async with MusterCluster(name=name, workers=1, asynchronous=True) as c:
            assert c.status.name == "running"
            async with Client(c, asynchronous=True) as client:
                assert await client.submit(lambda x: x * 2, 21) == 42
                await c.scale(2)
                await client.wait_for_workers(2)
            running = home.processes(name)
        return running

    assert asyncio.run(main())
    assert home.processes(name) == [] and home.clusters() == []

    async def awaited():
        c = await MusterCluster(name=name, workers=0, asynchronous=True)
        assert home.clusters() == [name]
        await c.close()

    asyncio.run(awaited())
    assert home.clusters() == []


def test_get_logs_adds_muster_job_logs(home):
    name = unique()
    with MusterCluster(name=name, workers=1) as c, Client(c) as client:
        client.wait_for_workers(1)
        logs = c.get_logs()
        assert "Scheduler" in logs and "Cluster" in logs
        assert f"{name}-scheduler" in logs and f"{name}-w0" in logs
        assert "Scheduler at" in logs[f"{name}-scheduler"]
        assert "Registered to" in logs[f"{name}-w0"]
        assert "up" in logs["Cluster"]


def test_bad_parameters_raise_naming_them_and_launch_nothing(home):
    with pytest.raises(TypeError, match="'wrokers'"):
        MusterCluster(name=unique(), wrokers=2)
    with pytest.raises(ValueError, match="worker.*memroy"):
        MusterCluster(name=unique(), worker={"memroy": "1GB"})
    with pytest.raises(ValueError, match="name"):
        MusterCluster(name="Not A Label")
    with pytest.raises(TypeError, match="both 'workers'"):
        MusterCluster(workers=1, n_workers=2)
    with MusterCluster(name=unique(), workers=0) as c:
        with pytest.raises(TypeError, match="'target_duration'"):
            c.adapt(maximum=2, target_duration="5s")
        with pytest.raises(TypeError, match="'colldown'"):
            c.adapt(maximum=2, colldown=1)
    assert home.clusters() == [] and home.processes() == []


def test_spec_from_a_yaml_file_with_keywords_over_it(home, tmp_path):
    name = unique()
    path = tmp_path / "c.yaml"
    path.write_text(f"name: {name}\nbackend: {{kind: local}}\nworkers: 3\nworker: {{cores: 2}}\n")
    with MusterCluster(path, workers=1) as c, Client(c) as client:
        info = client.scheduler_info()["workers"]
        assert len(info) == 1 and [w["nthreads"] for w in info.values()] == [2]
        assert c.name == name


def test_widget_buttons_scale_and_adapt(home):
    import ipywidgets  # noqa: F401 - tests/python/requirements.txt installs it; missing = a failure
    name = unique()
    with MusterCluster(name=name, workers=1) as c:
        tab = c._widget()
        accordion = tab.children[1].children[1]
        request, scale = accordion.children[0].children
        minimum, maximum, adapt = accordion.children[1].children
        request.value = 2
        scale.click()
        wait_until(lambda: len(c.scheduler_info["workers"]) == 2, timeout=60, message="2 workers")
        minimum.value, maximum.value = 1, 3
        adapt.click()
        desc = json.loads(home.muster("describe", name, "-o", "json").stdout)
        assert desc["spec"]["adapt"]["minimum"] == 1 and desc["spec"]["adapt"]["maximum"] == 3


def test_sigkill_leaves_a_cluster_muster_lists_and_removes(home):
    name = unique()
    p = home.python(f"""
        import time
        from dask_muster import MusterCluster
        c = MusterCluster(name={name!r}, workers=1)
        print("up", flush=True)
        time.sleep(600)
    """)
    assert p.stdout.readline().strip() == "up", p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert home.clusters() == [name] and home.processes(name)
    home.muster("down", name)
    assert home.clusters() == [] and home.processes(name) == []


def test_idle_timeout_reaps_a_cluster_whose_python_was_killed(home):
    name = unique()
    p = home.python(f"""
        import time
        from dask_muster import MusterCluster
        c = MusterCluster(name={name!r}, workers=1,
                          adapt={{"minimum": 1, "maximum": 2, "interval": "200ms", "idle_timeout": "3s"}})
        print("up", flush=True)
        time.sleep(600)
    """)
    assert p.stdout.readline().strip() == "up", p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    wait_until(lambda: home.clusters() == [] and not home.processes(name), timeout=60,
               message="the idle cluster to bring itself down")


def test_atexit_brings_down_clusters_left_open(home):
    name, kept = unique(), unique()
    p = home.python(f"""
        from dask_muster import MusterCluster
        a = MusterCluster(name={name!r}, workers=1)
        b = MusterCluster(name={kept!r}, workers=0, shutdown_on_close=False)
        print("up", flush=True)
    """)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0 and "up" in out, err
    assert home.clusters() == [kept] and home.processes(name) == []
    home.muster("down", kept)


def test_a_tls_cluster_gives_its_clients_its_credentials(home):
    # TLS is the default: Client(cluster) works because the cluster carries a
    # distributed Security with the cluster's CA and client certificate.
    name = unique()
    with MusterCluster(name=name, workers=1) as c:
        assert c.scheduler_address.startswith("tls://"), c.scheduler_address
        sec = c.security
        assert sec.require_encryption
        assert sec.tls_ca_file.endswith(f"/clusters/{name}/tls/ca.pem"), sec.tls_ca_file
        assert sec.tls_client_cert.endswith("/client.pem") and sec.tls_client_key.endswith("/client-key.pem")
        with Client(c) as client:
            assert client.submit(sum, [40, 2]).result(timeout=60) == 42
        assert refused(c.scheduler_address), "a client without the credentials got in"
        # Another handle found by name carries them too.
        other = MusterCluster.from_name(name)
        try:
            assert other.security.tls_client_cert == sec.tls_client_cert
            with Client(other) as client:
                assert client.submit(sum, [1, 2]).result(timeout=60) == 3
        finally:
            other.close()
