"""Where a build's work runs: the local process pool, or a Dask cluster.

:func:`physiofm.store.build.build` takes any :class:`concurrent.futures.Executor`; this
module opens the ones the CLI offers (``--executor``):

* ``local`` (default): a process pool of ``--jobs`` workers on this machine (``None`` here:
  the build makes it).
* ``dask``: the Dask cluster whose scheduler is at ``--scheduler tcp://HOST:PORT``.  Its
  workers must reach the source and the output at the same paths (a shared file system, or
  ``s3://`` URLs; storage options travel with each task).
* ``dask-local``: a Dask ``LocalCluster`` of ``--jobs`` single-threaded worker processes,
  for trying the above on one machine.

On Dask, each task is submitted with ``pure=False`` (a resumed build never reuses a result
held by the scheduler), and a task lost with its worker is rerun elsewhere by Dask (up to
``distributed.scheduler.allowed-failures`` times); the build's tasks are idempotent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

EXECUTORS = ("local", "dask", "dask-local")


def _distributed():
    try:
        import distributed
    except ImportError as error:  # pragma: no cover - distributed is a test dependency
        raise RuntimeError("Dask executors need dask.distributed: pip install 'physiofm[dask]'") from error
    return distributed


@contextmanager
def open_executor(
    name: str = "local", jobs: int | None = None, scheduler: str | None = None
) -> Iterator[Executor | None]:
    """The executor called ``name``, closed (with its client and any local cluster) on exit."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if name == "local":
        if scheduler:
            raise ValueError("--scheduler goes with --executor dask")
        yield None
        return
    distributed = _distributed()
    if name == "dask":
        if not scheduler:
            raise ValueError("--executor dask needs --scheduler tcp://HOST:PORT (the Dask scheduler's address)")
        with distributed.Client(scheduler) as client:
            yield client.get_executor(pure=False)
        return
    if scheduler:
        raise ValueError("--executor dask-local starts its own cluster; --scheduler goes with --executor dask")
    workers = jobs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with (
        restored_environ(),
        local_worker_environment(),
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client.get_executor(pure=False)


@contextmanager
def restored_environ() -> Iterator[None]:
    """Put ``os.environ`` back as it was on leaving.

    Dask's nannies write their workers' variables (``OMP_NUM_THREADS=1``, ``MALLOC_…``,
    ``PYTHONHASHSEED``) into the environment of the process that starts them; left there, they
    would reach every later child process (a training run's DataLoader workers, for instance).
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# glibc settings for build workers: keep arrays under 32 MiB on the heap and the heap from being trimmed
# at every free (Dask's nanny default is MALLOC_TRIM_THRESHOLD_=65536, which also freezes the mmap
# threshold at 128 KiB: every record-sized array is then mapped and unmapped afresh, and a worker built
# at about 0.55 of a local process's rate; with these, at 0.9-1.0 (bench/build_dask.py)).
WORKER_ENVIRON = {"MALLOC_TRIM_THRESHOLD_": 128 * 2**20, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


def local_worker_environment():
    """Dask's worker environment with :data:`WORKER_ENVIRON` (for the ``LocalCluster`` made here).

    Workers started elsewhere get the same from the environment of ``dask worker``:
    ``DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{'MALLOC_TRIM_THRESHOLD_': 134217728, 'MALLOC_MMAP_THRESHOLD_': 33554432}"``.
    """
    import dask

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    return dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
