"""Shared fixtures.

``shared_data`` points at the small real recordings in ``../shared/data`` (or ``$PHYSIOFM_SHARED_DATA``).
Outside CI a missing folder skips the tests that need it; in CI (``CI`` set) it fails them,
so a missing dataset can never hide behind a skip.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path:
    env = os.environ.get("PHYSIOFM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not (path / "README.md").is_file():
        message = f"real sample data not found at {path} (set PHYSIOFM_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback for the whole session; yields its endpoint URL."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh bucket on the loopback server; yields ``(url, storage_options)``."""
    import s3fs

    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    name = ("t-" + re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()))[:50].strip("-")
    fs.mkdir(name)
    yield f"s3://{name}", options
    fs.rm(name, recursive=True)


@pytest.fixture(scope="session")
def ecg_store(tmp_path_factory):
    """A small ECG store (40 generated Challenge records, shards of 10), built once for every test that reads one."""
    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_challenge

    root = tmp_path_factory.mktemp("ecg")
    src = synth_challenge(root / "raw", n_records=40, seed=2, subsets=("georgia",))
    build(str(src), str(root / "store"), jobs=1, shard_size=10)
    return root / "store"


@pytest.fixture(scope="session")
def emotion_store(tmp_path_factory):
    """A small paired EEG+ECG store (3 generated DREAMER subjects), built once for every test that reads one."""
    from physiofm.store.build import build
    from physiofm.synth.emotion import synth_dreamer

    root = tmp_path_factory.mktemp("emotion")
    src = synth_dreamer(root / "raw", subjects=3, seed=4, clip_seconds=(20.0, 24.0))
    build(str(src), str(root / "store"), kind="emotion", jobs=1)
    return root / "store"
