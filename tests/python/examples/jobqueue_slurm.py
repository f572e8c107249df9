# dask-jobqueue's SLURMCluster example (its docs: "Example Deployments" and
# the README), with values for the test SLURM (partition debug, a small node).
# The tests run this file with ONLY the import line changed to dask_muster.
from dask_jobqueue import SLURMCluster

cluster = SLURMCluster(
    queue="debug",
    cores=2,
    processes=2,
    memory="1GB",
    walltime="00:10:00",
    death_timeout=30,
    job_extra_directives=["--nice=0"],
)
print(cluster.job_script())
cluster.scale(jobs=2)  # ask for 2 jobs: 4 Dask workers

from dask.distributed import Client

client = Client(cluster)
client.wait_for_workers(4, timeout=120)

futures = client.map(lambda x: x * x, range(2000))
print("RESULT", client.submit(sum, futures).result())
client.close()
cluster.close()
