"""Builds on a Dask cluster: the same bytes as a local build, and a worker killed mid-shard loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from storecheck import assert_store_consistent, tree_bytes
from typer.testing import CliRunner

from physiofm.cli import app
from physiofm.store.build import build
from physiofm.store.executors import WORKER_ENVIRON, local_worker_environment, open_executor, restored_environ
from physiofm.synth import ecg as synth

SHARD = 24  # 10 units of 24 records: long enough for a worker to be caught writing one


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return synth.synth_challenge(tmp_path_factory.mktemp("raw") / "challenge", n_records=240, seed=3)


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "store"
    build(str(archive), str(out), jobs=1, shard_size=SHARD)
    return out


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, each under a nanny that restarts it if it dies."""
    with (
        restored_environ(),
        local_worker_environment(),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        yield cluster, client


def test_dask_build_through_the_cli_matches_the_local_build(archive, reference, cluster, tmp_path):
    out = tmp_path / "store"
    result = CliRunner().invoke(
        app,
        [
            "build",
            "ecg",
            str(archive),
            str(out),
            "--shard-size",
            str(SHARD),
            "--executor",
            "dask",
            "--scheduler",
            cluster[0].scheduler_address,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "windows written" in result.output
    assert tree_bytes(out) == tree_bytes(reference)


def test_dask_local_cluster_matches_the_local_build(archive, reference, tmp_path):
    before = dict(os.environ)
    with open_executor("dask-local", jobs=2) as executor:
        build(str(archive), str(tmp_path / "store"), shard_size=SHARD, executor=executor)
        assert len(executor._client.scheduler_info()["workers"]) == 2
    assert tree_bytes(tmp_path / "store") == tree_bytes(reference)
    assert dict(os.environ) == before  # the nannies' variables did not leak into this process


def test_dask_local_workers_keep_arrays_on_the_heap():
    """Its workers get :data:`WORKER_ENVIRON` (checked in a fresh process: an earlier nanny in this one
    has put Dask's own value in ``os.environ``, which then wins, as a user's explicit setting would)."""
    code = (
        "import json, os; from physiofm.store.executors import WORKER_ENVIRON, open_executor\n"
        "with open_executor('dask-local', 2) as executor:\n"
        "    print(json.dumps(executor._client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENVIRON})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    environments = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(environments) == 2
    assert all(e == {k: str(v) for k, v in WORKER_ENVIRON.items()} for e in environments.values()), environments


def test_worker_killed_while_writing_a_shard_loses_nothing(archive, reference, cluster, tmp_path):
    _, client = cluster
    pids = set(client.run(os.getpid).values())
    out = tmp_path / "store"
    killed: list[str] = []

    def kill_a_writer() -> None:
        """SIGKILL the first worker seen with an unpublished shard open (its name carries its pid)."""
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(out / "wds"):
                    pid = int(entry.name.split(".tmp-")[1].split("-")[0]) if ".tmp-" in entry.name else None
                    if pid in pids:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(entry.name)
                        return
            time.sleep(0.0005)

    killer = threading.Thread(target=kill_a_writer)
    killer.start()
    with open_executor("dask", scheduler=cluster[0].scheduler_address) as executor:
        summary = build(str(archive), str(out), shard_size=SHARD, executor=executor)
    killer.join()
    assert killed, "no worker was caught writing a shard"
    assert summary["status"] == "built" and summary["shards"] == 10
    assert tree_bytes(out) == tree_bytes(reference)  # nothing lost, duplicated or left half-written
    assert not list((out / "wds").glob(".*"))
    assert_store_consistent(out)
    client.wait_for_workers(2, timeout=60)  # the nanny brought the worker back
    assert len(set(client.run(os.getpid).values()) - pids) == 1


def test_killed_dask_client_resumes_to_the_same_bytes(archive, reference, cluster, tmp_path):
    scheduler, client = cluster[0].scheduler_address, cluster[1]
    out = tmp_path / "store"
    code = (
        "import os, signal; from physiofm.store.build import build\n"
        "from physiofm.store.executors import WORKER_ENVIRON, local_worker_environment, open_executor, restored_environ\n"
        "def progress(stage, done, total):\n"
        "    if stage == 'units' and done == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"with open_executor('dask', scheduler={scheduler!r}) as executor:\n"
        f"    build({str(archive)!r}, {str(out)!r}, shard_size={SHARD}, executor=executor, progress=progress)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "build.json").exists()
    deadline = time.monotonic() + 60  # tasks already running when their client died run to their end
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 3 <= len(list((out / "_build").glob("unit-*.json"))) < 10
    with open_executor("dask", scheduler=scheduler) as executor:
        summary = build(str(archive), str(out), shard_size=SHARD, executor=executor)
    assert summary["status"] == "built"
    assert tree_bytes(out) == tree_bytes(reference)


def test_dask_workers_write_straight_to_s3(archive, reference, cluster, s3_bucket):
    import s3fs

    url, options = s3_bucket
    with open_executor("dask", scheduler=cluster[0].scheduler_address) as executor:
        build(str(archive), f"{url}/store", shard_size=SHARD, storage_options=options, executor=executor)
    fs = s3fs.S3FileSystem(**options)
    remote = {path.split("/store/", 1)[1]: fs.cat_file(path) for path in fs.find(f"{url}/store")}
    assert remote == tree_bytes(reference)


def test_executor_choices_are_checked():
    with pytest.raises(ValueError, match="needs --scheduler"), open_executor("dask"):
        pass
    with pytest.raises(ValueError, match="unknown executor"), open_executor("spark"):
        pass
    with pytest.raises(ValueError, match="goes with --executor dask"), open_executor("local", scheduler="tcp://x:1"):
        pass
