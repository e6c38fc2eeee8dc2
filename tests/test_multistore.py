"""Several stores streamed as one (``pretrain STORE STORE … --mix``): exact mixed epochs over ranks × workers,
quotas, determinism, resuming mid-epoch, clear errors, per-source logs; and the limb-group inter-lead masking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import torch
from storecheck import assert_same_batches

from physiofm.models import DualMasking
from physiofm.store.build import build
from physiofm.synth.ecg import synth_challenge
from physiofm.train import pretrain as pretrain_module
from physiofm.train.data.index import Mixture, parse_mix, quotas
from physiofm.train.data.stream import StreamingDataset
from physiofm.train.distributed import LAUNCH_ENV
from physiofm.train.pretrain import PretrainConfig, pretrain


@pytest.fixture(scope="module")
def raw_b(tmp_path_factory):
    return synth_challenge(tmp_path_factory.mktemp("raw") / "b", n_records=23, seed=5, subsets=("cpsc_2018",))


@pytest.fixture(scope="module")
def store_b(raw_b, tmp_path_factory):
    """23 ECG samples in shards of 6 (the shared ``ecg_store`` has 40 in shards of 10)."""
    out = tmp_path_factory.mktemp("store") / "b"
    build(str(raw_b), str(out), jobs=1, shard_size=6)
    return out


def taken(batches: list[dict]) -> list[tuple[int, str]]:
    """(source, key) of every real sample, in order."""
    return [(int(s), k) for b in batches for s, k, pad in zip(b["source"], b["key"], b["pad"].tolist()) if not pad]


def epoch_of(stores, rank: int, **kw) -> list[dict]:
    kw = {"batch_size": 4, "num_workers": 2, "world_size": 2, "seed": 7, **kw}
    return list(StreamingDataset([str(s) for s in stores], rank=rank, **kw).loader())


def test_two_stores_in_proportion_give_every_sample_once_over_ranks_and_workers(ecg_store, store_b):
    manifests = [pl.read_parquet(s / "manifest.parquet") for s in (ecg_store, store_b)]
    per_rank = [epoch_of([ecg_store, store_b], rank, labels=["age"]) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 8  # 63 samples over 4 slots of 16: 4 batches of 4 per worker
    got = taken(per_rank[0]) + taken(per_rank[1])
    expected = [(s, k) for s, m in enumerate(manifests) for k in m["key"]]
    assert len(got) == len(set(got)) == 63 and set(got) == set(expected)
    for batch in per_rank[0] + per_rank[1]:
        assert batch["ecg"].shape[1:] == (12, 10, 200) and batch["source"].dtype == torch.int64
        for i, (source, key, pad) in enumerate(zip(batch["source"].tolist(), batch["key"], batch["pad"].tolist())):
            if pad:
                assert source == -1 and key == "" and not batch["ecg"][i].any()
            else:  # row is the row of that sample's own store
                manifest = manifests[source]
                assert manifest["key"][int(batch["row"][i])] == key
                age = manifest["age"][int(batch["row"][i])]
                assert batch["labels"][i, 0].isnan() if age is None else batch["labels"][i, 0] == age
    # the samples read are those of each store's own shards, in store order without shuffling
    one = StreamingDataset([str(ecg_store), str(store_b)], batch_size=63, shuffle=False)
    batch = next(iter(one.loader()))
    for s, store in enumerate((ecg_store, store_b)):
        alone = next(iter(StreamingDataset(str(store), batch_size=63, shuffle=False).loader()))
        picked = batch["source"] == s
        assert [k for k, p in zip(batch["key"], picked.tolist()) if p] == alone["key"]
        torch.testing.assert_close(batch["ecg"][picked], alone["ecg"], rtol=0, atol=0)
    # two batches of one process: the stores' samples are shuffled together, not store after store
    sources = [int(s) for b in per_rank[0][:4] for s in b["source"] if s >= 0]
    assert set(sources) == {0, 1}


def test_mix_quotas_are_exact_per_epoch_and_balanced_over_epochs(ecg_store, store_b):
    assert quotas([40, 23], parse_mix("0.2,0.8", 2)).tolist() == [13, 50]  # 12.6, 50.4 by largest remainder
    assert parse_mix("1,3", 2) == (0.25, 0.75) and parse_mix(None, 2) is None
    for epoch in (0, 3):
        got = Counter(
            taken(epoch_of([ecg_store, store_b], 0, mix="0.2,0.8", epoch=epoch))
            + taken(epoch_of([ecg_store, store_b], 1, mix="0.2,0.8", epoch=epoch))
        )
        a = {k: n for (s, k), n in got.items() if s == 0}
        b = {k: n for (s, k), n in got.items() if s == 1}
        assert sum(a.values()) == 13 and set(a.values()) == {1}  # under-sampled: 13 distinct samples
        assert sum(b.values()) == 50 and len(b) == 23 and Counter(b.values()) == {2: 19, 3: 4}  # 2 × 23 + 4
        mixture = Mixture.load([str(ecg_store), str(store_b)], mix="0.2,0.8", seed=7)
        keys = pl.read_parquet(ecg_store / "manifest.parquet").sort("shard", "shard_pos")["key"].to_list()
        chosen = mixture.multiplicity(0, epoch)
        assert a == {keys[j]: 1 for j in np.flatnonzero(chosen)}  # what was streamed is the epoch's choice
    # the under-sampled store goes round all its samples before repeating one: 40 epochs of 13 = 13 rounds of 40
    mixture = Mixture.load([str(ecg_store), str(store_b)], mix=[0.2, 0.8], seed=7)
    counts = np.stack([mixture.multiplicity(0, e) for e in range(40)])
    assert (counts.sum(axis=0) == 13).all() and (np.ptp(np.cumsum(counts, axis=0), axis=1) <= 1).all()
    assert not np.array_equal(mixture.multiplicity(0, 0), mixture.multiplicity(0, 1))
    other_seed = Mixture.load([str(ecg_store), str(store_b)], mix=[0.2, 0.8], seed=8)
    assert not np.array_equal(other_seed.multiplicity(0, 0), mixture.multiplicity(0, 0))


def test_a_mixed_epoch_is_deterministic_and_resumes_to_the_identical_sequence(ecg_store, store_b):
    def dataset(rank: int, **kw) -> StreamingDataset:
        kw = {"mix": "0.3,0.7", "epoch": 2, "shuffle_buffer": 6, "seed": 4, **kw}
        return StreamingDataset(
            [str(ecg_store), str(store_b)], batch_size=3, num_workers=2, rank=rank, world_size=2, **kw
        )

    for rank in range(2):
        full = list(dataset(rank).loader())
        assert_same_batches(list(dataset(rank).loader()), full)
        for consumed in (1, 5, len(full) - 1):
            resumed = dataset(rank)
            resumed.set_epoch(0)  # a fresh process starts elsewhere; the state puts it back
            resumed.load_state_dict(dataset(rank).state_dict(consumed))
            assert len(resumed) == len(full) - consumed
            assert_same_batches(list(resumed.loader()), full[consumed:])
    assert taken(list(dataset(0, seed=5).loader())) != taken(list(dataset(0).loader()))
    with pytest.raises(ValueError, match="source_quotas"):
        dataset(0, mix="0.5,0.5").load_state_dict(dataset(0).state_dict(2))


def test_loader_workers_follow_the_mixed_epoch_that_is_set(ecg_store, store_b):
    """The loader's workers outlive an epoch: set_epoch must give them that epoch's choice of samples."""

    def dataset(**kw) -> StreamingDataset:
        return StreamingDataset(
            [str(ecg_store), str(store_b)], batch_size=4, num_workers=2, mix="0.2,0.8", seed=7, **kw
        )

    data = dataset()
    first = list(data.loader())
    data.set_epoch(1)
    second = list(data.loader())
    assert_same_batches(second, list(dataset(epoch=1).loader()))
    assert {k for s, k in taken(first) if s == 0} != {k for s, k in taken(second) if s == 0}
    data.load_state_dict(dataset(epoch=0).state_dict(3))
    assert_same_batches(list(data.loader()), first[3:])


def test_stores_that_disagree_fail_clearly(ecg_store, store_b, raw_b, tmp_path):
    short = tmp_path / "short"
    build(str(raw_b), str(short), jobs=1, recipe_overrides={"window": {"seconds": 5}})
    with pytest.raises(ValueError, match=r"same sample shapes.*\(12, 10, 200\).*\(12, 5, 200\)"):
        StreamingDataset([str(ecg_store), str(short)], batch_size=4)
    with pytest.raises(ValueError, match="given twice"):
        StreamingDataset([str(ecg_store), str(ecg_store)], batch_size=4)
    with pytest.raises(ValueError, match="one per store"):
        StreamingDataset([str(ecg_store), str(store_b)], batch_size=4, mix="1,2,3")
    with pytest.raises(ValueError, match="positive"):
        StreamingDataset([str(ecg_store), str(store_b)], batch_size=4, mix="1,0")
    with pytest.raises(ValueError, match="one entry"):
        StreamingDataset([str(ecg_store), str(store_b)], batch_size=4, rows=[0, 1, 2])
    rows = StreamingDataset([str(ecg_store), str(store_b)], batch_size=64, rows=[None, [0, 1, 2]], shuffle=False)
    assert rows.num_samples == 43 and sorted(rows.index.rows[rows.index.sources == 1]) == [0, 1, 2]


class Crash(Exception):
    pass


TINY = {"n_layer": 1, "d_model": 40, "dim_feedforward": 80, "nhead": 2}  # a small encoder: the data path is tested


def test_pretraining_on_two_stores_logs_each_source_and_resumes_after_a_crash(
    ecg_store, store_b, tmp_path, monkeypatch
):
    def config(out: Path, **kw) -> PretrainConfig:
        return PretrainConfig([str(ecg_store), str(store_b)], str(out), mix=[0.25, 0.75], max_steps=7,
                              batch_size=16, checkpoint_every=3, model=TINY, seed=3, device="cpu", **kw)  # fmt: skip

    summary = pretrain(config(tmp_path / "whole"))
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0] * 4 + [1] * 3  # 63 samples, 4 batches of 16 per epoch
    epoch0 = np.sum([r["source_samples"] for r in records[:4]], axis=0)
    assert epoch0.tolist() == quotas([40, 23], [0.25, 0.75]).tolist() == [16, 47]
    assert summary["samples_per_source"] == {
        str(ecg_store): sum(r["source_samples"][0] for r in records),
        str(store_b): sum(r["source_samples"][1] for r in records),
    }
    assert sum(summary["samples_per_source"].values()) == 63 + 3 * 16
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["store"] == [str(ecg_store), str(store_b)]

    # a crash right after the step-6 checkpoint (mid-way through epoch 1), then --resume
    original = pretrain_module.save_checkpoint

    def crashing(path: str, state: dict) -> None:
        original(path, state)
        if state["step"] == 6:
            raise Crash

    monkeypatch.setattr(pretrain_module, "save_checkpoint", crashing)
    with pytest.raises(Crash):
        pretrain(config(tmp_path / "crashed"))
    monkeypatch.setattr(pretrain_module, "save_checkpoint", original)
    assert not (tmp_path / "crashed" / "encoder.pt").exists()
    resumed = pretrain(config(tmp_path / "crashed", resume=True))
    whole, again = torch.load(tmp_path / "whole" / "encoder.pt"), torch.load(tmp_path / "crashed" / "encoder.pt")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert (tmp_path / "crashed" / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert resumed["samples_per_source"] == summary["samples_per_source"]
    with pytest.raises(ValueError, match="source_quotas"):  # another mix cannot continue this run
        pretrain(PretrainConfig([str(ecg_store), str(store_b)], str(tmp_path / "crashed"), mix=[0.5, 0.5],
                                max_steps=7, batch_size=16, model=TINY, seed=3, resume=True))  # fmt: skip


# ---- inter-lead masking of the limb leads as a group ---------------------------------------------


def test_limb_group_masking_hides_the_six_limb_leads_together_and_chest_leads_singly():
    generator = torch.Generator().manual_seed(0)
    present = torch.ones(4000, 12, dtype=torch.bool)
    present[:2000, 2] = False  # lead III absent in half the samples
    grouped = DualMasking("inter", inter_unit="limb-group", inter_ratio=0.25)
    mask = grouped(torch.randn(4000, 12, 3, 200), lead_mask=present, generator=generator)[1]
    assert (mask == mask[:, :, :1]).all()
    leads = mask[:, :, 0]
    limbs = leads[:, :6]
    others = limbs[:, [0, 1, 3, 4, 5]]
    assert (others.all(dim=1) | ~others.any(dim=1)).all()  # limb leads: all present ones or none
    assert not (leads & ~present).any()  # an absent lead is never a target
    units = limbs.any(dim=1).long() + leads[:, 6:].sum(dim=1)
    assert (units == 2).all()  # ceil(0.25 x 7 units)
    assert abs(limbs.any(dim=1).float().mean() - 2 / 7) < 0.03  # the group is one unit of seven, drawn uniformly
    assert ((leads[:, 6:].float().mean(dim=0)) - 2 / 7).abs().max() < 0.03
    # after masking no hidden limb lead can be computed from visible ones: none or all six are hidden
    single = DualMasking("inter", inter_ratio=0.25, inter_unit="lead")(
        torch.randn(4000, 12, 3, 200), generator=generator
    )[1]
    single = single[:, :, 0]
    partly = single[:, :6].any(dim=1) & ~single[:, :6].all(dim=1)
    assert partly.float().mean() > 0.5  # single-lead masking mostly leaves limb leads to arithmetic
    # fewer channels than 12 (2-lead ECG, EEG): no limb group, every channel its own unit
    two = grouped(torch.randn(50, 2, 3, 200), generator=generator)[1][:, :, 0]
    assert (two.sum(dim=1) == 1).all()
    nineteen = grouped(torch.randn(50, 19, 3, 200), generator=generator)[1][:, :, 0]
    assert (nineteen.sum(dim=1) == 5).all()  # ceil(0.25 x 19)
    # only the limb group present: one unit, which stays visible
    alone = torch.zeros(5, 12, dtype=torch.bool)
    alone[:, :6] = True
    assert not grouped(torch.randn(5, 12, 3, 200), lead_mask=alone, generator=generator)[1].any()
    with pytest.raises(ValueError, match="inter_unit"):
        DualMasking(inter_unit="limbs")


def test_pretraining_masking_default_and_eeg():
    from physiofm.models.masking import DEFAULT_INTER_UNIT
    from physiofm.train.pretrain import masking_options

    assert DualMasking().inter_unit == DEFAULT_INTER_UNIT and masking_options(PretrainConfig("s", "o")) == {}
    assert masking_options(PretrainConfig("s", "o", modality="eeg"))["inter_unit"] == "lead"
    with pytest.raises(ValueError, match="limb"):
        masking_options(PretrainConfig("s", "o", modality="eeg", masking={"inter_unit": "limb-group"}))


# ---- two processes (torchrun, gloo) ----------------------------------------------------------------


def test_two_process_pretraining_on_a_mix_is_exact_and_resumes_after_a_kill(ecg_store, store_b, tmp_path):
    """One 2-rank run over two stores with --mix, and the same run SIGKILLed (launcher and ranks) and resumed."""
    repo = Path(__file__).resolve().parent.parent
    env = {
        **{k: v for k, v in os.environ.items() if k not in LAUNCH_ENV},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "physiofm", "pretrain", str(ecg_store), str(store_b), "--mix", "0.3,0.7", "--out", str(out),
                "--batch-size", "4", "--layers", "1", "--seed", "3", "--checkpoint-every", "2", "--max-steps", "10",
                "--device", "cpu", *extra]  # fmt: skip

    whole = tmp_path / "whole"
    result = subprocess.run(command(whole, "--ddp"), capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    # 63 samples over 2 ranks: slots of 32, 8 steps per epoch; both ranks' samples counted per step
    assert [r["epoch"] for r in records] == [0] * 8 + [1] * 2
    assert np.sum([r["source_samples"] for r in records[:8]], axis=0).tolist() == [19, 44]  # 18.9, 44.1
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["weights_in_sync"] is True and sum(summary["samples_per_rank"]) == 63 + 2 * 8
    assert sum(summary["samples_per_source"].values()) == 63 + 2 * 8

    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher = psutil.Process(proc.pid)
    processes = [launcher, *launcher.children(recursive=True)]
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=60)
    proc.wait()
    step = torch.load(out / "last.pt", weights_only=False)["step"]
    assert step < 10 and not (out / "encoder.pt").exists(), "the run finished before it could be killed"
    result = subprocess.run(command(out, "--resume"), capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    expected, resumed = torch.load(whole / "encoder.pt"), torch.load(out / "encoder.pt")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert (out / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    assert json.loads((out / "summary.json").read_text())["samples_per_source"] == summary["samples_per_source"]
