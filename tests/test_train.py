"""Pretraining (resume after a kill) and fine-tuning (protocols, metrics, outputs), end to end on tiny stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch.overrides import TorchFunctionMode

from physiofm.models import CheckpointError, load_pretrained
from physiofm.train.finetune import FinetuneConfig, finetune
from physiofm.train.pretrain import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parent.parent


def config(store, out, **kw) -> PretrainConfig:
    return PretrainConfig(
        str(store), str(out), max_steps=8, batch_size=4, checkpoint_every=2, model={"n_layer": 1}, seed=3, **kw
    )


def test_pretraining_learns_and_writes_its_run(ecg_store, tmp_path):
    summary = pretrain(config(ecg_store, tmp_path / "run"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(records) == 8
    assert records[-1]["loss"] < records[0]["loss"]
    assert all(r["masked"] > 0 for r in records)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    encoder = load_pretrained(tmp_path / "run" / "encoder.pt", n_layer=1)  # loadable as a CBraMod checkpoint
    assert encoder(torch.zeros(1, 12, 10, 200)).shape == (1, 12, 10, 200)
    # the run folder alone is enough: the encoder's size is saved with its weights
    assert len(load_pretrained(tmp_path / "run").encoder.layers) == 1
    # a bare state_dict (what older runs wrote) loads when told the size
    torch.save(dict(torch.load(tmp_path / "run" / "encoder.pt")), tmp_path / "old.pt")
    assert len(load_pretrained(tmp_path / "old.pt", n_layer=1).encoder.layers) == 1
    with pytest.raises(CheckpointError, match="missing keys"):
        load_pretrained(tmp_path / "old.pt")


def test_a_killed_pretraining_run_resumes_to_the_same_weights(ecg_store, tmp_path):
    pretrain(config(ecg_store, tmp_path / "whole"))
    out = tmp_path / "killed"
    code = (
        "from physiofm.train.pretrain import PretrainConfig, pretrain; "
        f"pretrain(PretrainConfig({str(ecg_store)!r}, {str(out)!r}, max_steps=8, batch_size=4, "
        "checkpoint_every=2, model={'n_layer': 1}, seed=3))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(out / "last.pt", weights_only=False)["step"]
    assert step < 8 and not (out / "encoder.pt").exists(), "the run finished before it could be killed"
    pretrain(config(ecg_store, out, resume=True))
    whole = torch.load(tmp_path / "whole" / "encoder.pt")
    resumed = torch.load(out / "encoder.pt")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    losses = lambda run: [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(out) == losses(tmp_path / "whole")


class _HostReads(TorchFunctionMode):
    """Records every torch call, and which of them read a tensor's values into Python (on a GPU,
    each such read waits for the device to finish what was queued)."""

    READS = {"tolist", "item", "__float__", "__int__", "__bool__", "__index__", "nonzero", "numpy"}

    def __init__(self, ignore: set[int]) -> None:
        super().__init__()
        self.ignore, self.calls, self.reads = ignore, [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        target = args[0] if args and isinstance(args[0], torch.Tensor) else None
        boolean_index = name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in (args[1:2] if len(args) > 1 else ())
        )  # its result's size is known only once the mask is computed: a read too
        if (name in self.READS or boolean_index) and (target is None or id(target) not in self.ignore):
            self.reads.append((len(self.calls), name))
        self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_a_pretraining_step_reads_the_device_once_after_the_optimiser(ecg_store):
    """The command's own step on a batch on the device (forward → masked error → backward, clipping,
    AdamW, schedule) leaves the host free to queue the whole step: its one read of device values (loss,
    count, gradient norm for the log) comes after the optimiser has stepped.  Not recorded: the loader
    and the masks, which are drawn on the CPU generator (the same masks on any device); and AdamW's step
    counters, CPU tensors by PyTorch's design (not capturable), whose reads wait for nothing."""
    from physiofm.models import CBraMod, DualMasking, masked_squared_error
    from physiofm.train.data.stream import StreamingDataset
    from physiofm.train.loop import cosine_with_warmup
    from physiofm.train.pretrain import _inputs
    from physiofm.train.step import optimisation_step

    torch.manual_seed(0)
    model, masking = CBraMod(n_layer=1), DualMasking()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    scheduler = cosine_with_warmup(optimizer, 2, 10)
    batches = iter(StreamingDataset(str(ecg_store), batch_size=4, modalities=["ecg"]).loader())

    def inputs():
        x, present, valid = _inputs(next(batches), "ecg", torch.device("cpu"))
        _, mask = masking(x, lead_mask=present, patch_mask=valid, generator=torch.Generator().manual_seed(1))
        return x, mask

    def step(x, mask):
        error, patches = masked_squared_error(model(x, mask=mask), x, mask)
        return optimisation_step(error, patches, model, optimizer, scheduler, 1.0, per_count=x.shape[-1])

    step(*inputs())  # AdamW creates its state in the first step
    counters = {id(state["step"]) for state in optimizer.state.values()}
    x, mask = inputs()
    with _HostReads(counters) as record:
        loss, masked, norm = step(x, mask)
    assert "backward" in record.calls and loss > 0 and masked > 0 and norm > 0
    assert record.reads == [(len(record.calls) - 1, "tolist")], [
        (name, record.calls[max(0, i - 3) : i]) for i, name in record.reads
    ]


def test_the_metrics_log_is_made_durable_before_each_checkpoint_not_at_every_step(ecg_store, tmp_path, monkeypatch):
    """One fsync of metrics.jsonl per checkpoint, each before that checkpoint is written (a crash then
    loses only lines a resumed run drops), instead of one per step."""
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    pretrain(config(ecg_store, tmp_path / "run"))  # 8 steps, a checkpoint every 2
    log = [i for i, name in enumerate(synced) if name == "metrics.jsonl"]
    checkpoints = [i for i, name in enumerate(synced) if name.startswith(".last.pt.tmp-")]
    assert len(log) == len(checkpoints) == 4, synced
    assert all(a < b for a, b in zip(log, checkpoints)) and all(b < a for b, a in zip(checkpoints, log[1:])), synced
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 8


def test_finetuning_under_a_subject_wise_protocol(emotion_store, ecg_store, tmp_path):
    pretrain(config(ecg_store, tmp_path / "pre"))
    # the ECG encoder is built at its pretrained size (1 layer) without being told
    results = finetune(
        FinetuneConfig(
            str(emotion_store),
            str(tmp_path / "ft"),
            protocol="loso",
            max_steps=2,
            batch_size=8,
            ecg_weights=str(tmp_path / "pre"),
            eeg_model={"n_layer": 1},
        )
    )
    manifest = pl.read_parquet(emotion_store / "manifest.parquet")
    assert set(results["folds"]) == {"subject-01", "subject-02", "subject-03"}
    for name, fold in results["folds"].items():
        assert fold["subjects_test"] == [name.split("-")[1]]
        per_fold = json.loads((tmp_path / "ft" / "folds" / f"{name}.json").read_text())
        tested = manifest[per_fold["rows"]]
        assert set(tested["subject_id"]) == {name.split("-")[1]}
        assert len(per_fold["rows"]) == manifest.filter(pl.col("subject_id") == name.split("-")[1]).height
        for target in ("valence", "arousal", "dominance"):
            assert set(fold["metrics"][target]) >= {"roc_auc", "f1", "accuracy", "balanced_accuracy"}
    assert results["summary"]["arousal"]["roc_auc"]["folds"] == 3
    assert all((tmp_path / "ft" / f"roc_{t}.png").exists() for t in ("valence", "arousal", "dominance"))
    # a resumed run reuses finished folds
    before = (tmp_path / "ft" / "folds" / "subject-01.json").stat().st_mtime_ns
    finetune(
        FinetuneConfig(
            str(emotion_store),
            str(tmp_path / "ft"),
            protocol="loso",
            max_steps=2,
            batch_size=8,
            resume=True,
            ecg_weights=str(tmp_path / "pre"),
            eeg_model={"n_layer": 1},
            ecg_model={"n_layer": 1},
        )
    )
    assert (tmp_path / "ft" / "folds" / "subject-01.json").stat().st_mtime_ns == before
    # a size that contradicts the pretrained one is an error, not a silent rebuild
    with pytest.raises(CheckpointError, match=r"n_layer=2 \(saved 1\)"):
        finetune(
            FinetuneConfig(
                str(emotion_store),
                str(tmp_path / "conflict"),
                protocol="loso",
                max_steps=1,
                batch_size=8,
                modalities=("ecg",),
                ecg_weights=str(tmp_path / "pre"),
                ecg_model={"n_layer": 2},
            )
        )


def test_training_commands(emotion_store, tmp_path):
    env = {**os.environ, "COLUMNS": "250"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "physiofm", *args], capture_output=True, text=True, env=env)

    for modalities in ("eeg", "eeg,ecg"):
        result = run(
            "finetune",
            str(emotion_store),
            "--out",
            str(tmp_path / modalities),
            "--modalities",
            modalities,
            "--protocol",
            "kfold-trial",
            "--folds",
            "2",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--eeg-layers",
            "1",
            "--ecg-layers",
            "1",
        )
        assert result.returncode == 0, result.stderr
    result = run("report", str(tmp_path / "eeg"), str(tmp_path / "eeg,ecg"))
    assert result.returncode == 0 and "mean AUC" in result.stdout and "eeg+ecg" in result.stdout
    result = run("validate", str(emotion_store))
    assert result.returncode == 0 and "clean" in result.stdout


def test_fusion_matches_each_modality_on_the_planted_relation(ecg_store, tmp_path):
    """The demo's three runs (docs/planted-relation.md: heart rate ↔ arousal in the ECG, alpha ↔ valence in the
    EEG, dominance split across both): fusion scores at least what each single modality scores on every target
    (within 0.03 of the per-fold mean AUC), and beats both on the mean."""
    from physiofm.store.build import build
    from physiofm.synth.emotion import synth_dreamer

    src = synth_dreamer(tmp_path / "raw", subjects=8, seed=0)
    build(str(src), str(tmp_path / "dreamer"), kind="emotion", jobs=1)
    pretrain(PretrainConfig(str(ecg_store), str(tmp_path / "pre"), max_steps=60, batch_size=16, model={"n_layer": 1},
                            checkpoint_every=60))  # fmt: skip
    auc = {}
    for modalities in (("eeg",), ("ecg",), ("eeg", "ecg")):
        results = finetune(
            FinetuneConfig(
                str(tmp_path / "dreamer"),
                str(tmp_path / "+".join(modalities)),
                modalities=modalities,
                protocol="kfold-subject",
                folds=4,
                max_steps=40,
                batch_size=16,
                lr=1e-3,
                baselines=(),
                ecg_weights=str(tmp_path / "pre") if "ecg" in modalities else None,
                eeg_model={"n_layer": 1},
                ecg_model={"n_layer": 1},
                bootstrap=0,
            )  # fmt: skip
        )
        auc[modalities] = {t: results["summary"][t]["roc_auc"]["mean"] for t in ("valence", "arousal", "dominance")}
    fusion, eeg, ecg = auc[("eeg", "ecg")], auc[("eeg",)], auc[("ecg",)]
    assert eeg["valence"] > 0.9 and ecg["arousal"] > 0.7  # each modality finds what was planted in it
    for target in ("valence", "arousal", "dominance"):
        assert fusion[target] >= max(eeg[target], ecg[target]) - 0.03, (target, auc)
    mean = {k: np.mean(list(v.values())) for k, v in auc.items()}
    assert mean[("eeg", "ecg")] > max(mean[("eeg",)], mean[("ecg",)]), auc
