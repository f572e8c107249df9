# distributed's SSHCluster documentation example (distributed/deploy/ssh.py,
# "Create a cluster with one worker per host"), pointed at the test SSH hosts
# h1..h3 (tests/services/sshhosts) instead of "localhost". The tests run this
# file with ONLY the SSHCluster import line changed to dask_muster.
import os
import sys

from dask.distributed import Client
from dask.distributed import SSHCluster

state = os.environ.get("MUSTER_SSH_STATE", "/tmp/muster-sshhosts")
cluster = SSHCluster(
    ["h1", "h2", "h3"],
    connect_options={"known_hosts": None, "config": [f"{state}/ssh_config"]},
    worker_options={"nthreads": 2},
    scheduler_options={"port": 0, "dashboard_address": ":8797"},
    remote_python=sys.executable,
)
client = Client(cluster)
client.wait_for_workers(2, timeout=60)
print("SCHEDULER", cluster.scheduler_address)
print("WORKERS", sorted(w["host"] for w in client.scheduler_info()["workers"].values()))
print("RESULT", sum(client.gather(client.map(lambda x: x * x, range(1000)))))
client.close()
cluster.close()
