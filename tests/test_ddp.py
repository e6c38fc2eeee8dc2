"""Data-parallel training for real: ``torchrun`` (torch.distributed.run) with 2 CPU processes over gloo.

Each run is the command line a user types, ``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m physiofm …``, on tiny stores and one-layer encoders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import torch

from physiofm.models import CBraMod, DualMasking, load_pretrained, masked_squared_error
from physiofm.train.data.stream import StreamingDataset
from physiofm.train.distributed import LAUNCH_ENV, DistributedError
from physiofm.train.finetune import FinetuneConfig, _manifest, finetune
from physiofm.train.loop import seed_step
from physiofm.train.metrics import binary_metrics
from physiofm.train.pretrain import PretrainConfig, _inputs, pretrain
from physiofm.train.protocols import make_folds

REPO = Path(__file__).resolve().parent.parent
ENV = {
    **{k: v for k, v in os.environ.items() if k not in LAUNCH_ENV},
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    "COLUMNS": "250",
}
STEPS = 5  # 40 samples over 2 ranks, 4 per batch: ceil(20 / 4) steps per epoch


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "physiofm",
        *args,
    ]


def pretrain_args(store: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        str(store),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--layers",
        "1",
        "--seed",
        "3",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
        *extra,
    ]


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def kill_all(pid: int) -> None:
    """SIGKILL the launcher and its ranks at once (a lost machine); torchrun puts each rank in its own session."""
    launcher = psutil.Process(pid)
    processes = [launcher, *launcher.children(recursive=True)]
    assert len(processes) >= 3, "the ranks were not started yet"
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=60)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def first_step_loss(store: Path) -> float:
    """What step 1 of the 2-rank run computes, in one process: both ranks' first batches, from the same weights."""
    torch.manual_seed(3)
    model = CBraMod(n_layer=1).train()
    error, patches = 0.0, 0
    for rank in range(2):
        data = StreamingDataset(str(store), batch_size=4, modalities=["ecg"], seed=3, rank=rank, world_size=2)
        batch = next(iter(data.loader()))
        generator = seed_step(3, 0, rank)
        x, present, valid = _inputs(batch, "ecg", torch.device("cpu"))
        _, mask = DualMasking()(x, lead_mask=present, patch_mask=valid, generator=generator)
        with torch.no_grad():
            e, n = masked_squared_error(model(x, mask=mask), x, mask)
        error, patches = error + float(e), patches + int(n)
    return error / (patches * 200)


@pytest.fixture(scope="module")
def ddp_run(ecg_store, tmp_path_factory):
    """One uninterrupted 2-process pretraining epoch, with --ddp; yields (run folder, its output)."""
    out = tmp_path_factory.mktemp("ddp") / "whole"
    result = run(torchrun(*pretrain_args(ecg_store, out, "--ddp")))
    return out, result.stdout + result.stderr


def test_two_process_pretraining_splits_the_data_and_writes_once(ddp_run, ecg_store, tmp_path):
    out, output = ddp_run
    assert output.count("pretrained 5 steps") == 1  # printed by rank 0 alone
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "last.pt",
        "encoder.pt",
        "metrics.jsonl",
        "loss.png",
        "summary.json",
    }
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # one writer: no line twice
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == STEPS
    # each rank took its own half of the epoch (the slots' disjointness and coverage are tested in
    # test_stream.py; fine-tuning below checks it again through gathered predictions) ...
    samples = pl.read_parquet(ecg_store / "manifest.parquet").height
    assert summary["samples_per_rank"] == [samples // 2, samples // 2]
    # ... and the first step's loss is the masked MSE over rank 0's first batch (slot 0) and rank 1's (slot 1)
    assert records[0]["loss"] == pytest.approx(first_step_loss(ecg_store), rel=1e-5)
    assert summary["weights_in_sync"] is True  # every rank hashed its final weights: all identical
    assert torch.load(out / "last.pt", weights_only=False)["data"]["world_size"] == 2
    # the checkpoints hold the unwrapped model: the keys of a one-process run, loadable as a CBraMod
    pretrain(
        PretrainConfig(
            str(ecg_store), str(tmp_path / "single"), max_steps=1, batch_size=4, model={"n_layer": 1}, seed=3
        )
    )
    single = torch.load(tmp_path / "single" / "encoder.pt")
    ddp = torch.load(out / "encoder.pt")
    assert list(ddp) == list(single) and all(ddp[k].shape == single[k].shape for k in single)
    assert list(torch.load(out / "last.pt", weights_only=False)["model"]) == list(single)
    load_pretrained(out / "encoder.pt", n_layer=1)


def test_a_killed_two_process_run_resumes_to_the_same_weights(ddp_run, ecg_store, tmp_path):
    whole, _ = ddp_run
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        torchrun(*pretrain_args(ecg_store, out)),
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    kill_all(proc.pid)
    proc.wait()
    step = torch.load(out / "last.pt", weights_only=False)["step"]
    assert step < STEPS and not (out / "encoder.pt").exists(), "the run finished before it could be killed"
    # the data position depends on the number of processes: one process refuses to resume it
    shutil.copytree(out, tmp_path / "copy")
    with pytest.raises(ValueError, match="2 process"):
        pretrain(
            PretrainConfig(
                str(ecg_store),
                str(tmp_path / "copy"),
                batch_size=4,
                model={"n_layer": 1},
                seed=3,
                checkpoint_every=2,
                resume=True,
                device="cpu",
            )
        )
    run(torchrun(*pretrain_args(ecg_store, out, "--resume")))
    expected, resumed = torch.load(whole / "encoder.pt"), torch.load(out / "encoder.pt")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert losses(out) == losses(whole)
    assert json.loads((out / "summary.json").read_text())["weights_in_sync"] is True


def test_two_process_finetuning_evaluates_every_test_sample_once(ddp_run, emotion_store, tmp_path):
    pretrained, _ = ddp_run
    out = tmp_path / "ft"
    result = run(
        torchrun(
            "finetune",
            str(emotion_store),
            "--out",
            str(out),
            "--protocol",
            "kfold-subject",
            "--folds",
            "2",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--eeg-layers",
            "1",
            "--ecg-layers",
            "1",
            "--ecg-weights",
            str(pretrained),
            "--device",
            "cpu",
        )
    )
    assert result.stdout.count("mean AUC") == 1  # rank 0 alone prints the table
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and set(results["folds"]) == {"fold-0", "fold-1"}
    config = FinetuneConfig(str(emotion_store), str(out))
    manifest = _manifest(config)
    store_rows = manifest["row"].to_numpy()
    for fold in make_folds(manifest, "kfold-subject", k=2, seed=0):
        saved = json.loads((out / "folds" / f"{fold.name}.json").read_text())
        # both ranks' predictions were gathered: every test row exactly once
        assert sorted(saved["rows"]) == sorted(store_rows[fold.test].tolist())
        true, prob = np.array(saved["true"]), np.array(saved["prob"])
        for i, target in enumerate(("valence", "arousal", "dominance")):
            assert results["folds"][fold.name]["metrics"][target] == pytest.approx(
                binary_metrics(true[:, i], prob[:, i]), nan_ok=True
            )
    assert all((out / f"roc_{t}.png").exists() for t in ("valence", "arousal", "dominance"))


def test_ddp_without_a_launch_fails_clearly(ecg_store, emotion_store, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "physiofm", *pretrain_args(ecg_store, tmp_path / "run", "--ddp")],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 1
    assert "--ddp needs a distributed launch" in result.stderr and "torchrun" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
    with pytest.raises(DistributedError, match="RANK, WORLD_SIZE"):
        finetune(FinetuneConfig(str(emotion_store), str(tmp_path / "ft"), ddp=True))
