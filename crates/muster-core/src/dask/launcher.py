# muster worker launcher: runs `dask worker` with the arguments after `-c`,
# importing distributed ONCE per job. Before any thread runs it forks a
# warm copy of itself that serves as multiprocessing's forkserver, so the
# nanny's worker process is a fork of an interpreter that has distributed
# imported instead of a fresh interpreter importing it again (Dask's
# default "spawn"). The nanny, its restarts on death or over-memory, the
# scheduler's retire and restart all stay Dask's own. A python whose
# multiprocessing lacks the expected forkserver internals, a worker.env
# that picks a method, or --no-nanny run `dask worker` unchanged.
import os
import sys


def warm_forkserver():
    import socket
    from multiprocessing import connection, forkserver, util

    server = forkserver._forkserver
    names = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid", "_lock")
    if not all(hasattr(server, n) for n in names) or hasattr(server, "_forkserver_authkey"):
        return False
    listener = socket.socket(socket.AF_UNIX)
    address = connection.arbitrary_address("AF_UNIX")
    listener.bind(address)
    if not util.is_abstract_socket_namespace(address):
        os.chmod(address, 0o600)
    listener.listen()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        try:
            forkserver.main(listener.fileno(), alive_r, [])
        finally:
            os._exit(0)
    os.close(alive_r)
    listener.close()
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    return True


def main():
    args = sys.argv[1:]
    from distributed.cli import dask_worker

    import dask
    import distributed.utils

    method_env = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"
    if "--no-nanny" not in args and os.environ.get(method_env, "forkserver") == "forkserver":
        # What the nanny would set in its own environment just before it
        # spawns; a forked worker only sees what is set before the fork.
        from distributed.nanny import _get_env_variables

        os.environ.update(_get_env_variables("distributed.nanny.pre-spawn-environ"))
        if warm_forkserver():
            dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
            # distributed would import numpy/pandas/lz4 here to preload them
            # into a fresh forkserver; ours is already running.
            distributed.utils._forkserver_preload_set = True
    sys.argv = ["dask worker", *args]
    dask_worker.main()


main()
