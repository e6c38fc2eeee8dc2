"""``physiofm embed``: per-sample embeddings row-aligned with the manifest, resumable, local and on S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
import zarr

from physiofm.models.fusion import pool_features
from physiofm.train.data.zarr_dataset import ZarrDataset
from physiofm.train.embed import EmbedConfig, embed, load_encoder, pooled_embeddings, read_embeddings


def config(store, out, **kw) -> EmbedConfig:
    return EmbedConfig(str(store), str(out), weights="random", model={"n_layer": 1}, block_rows=16, batch_size=8,
                       device="cpu", **kw)  # fmt: skip


def direct(store, rows, encoder) -> np.ndarray:
    """What the embedding of ``rows`` should be: the encoder on the Zarr rows, pooled over present leads."""
    data = ZarrDataset(str(store), rows=rows)
    samples = data.__getitems__(list(range(len(data))))
    x = torch.stack([s["ecg"] for s in samples])
    mask = torch.stack([s["lead_mask"] for s in samples])
    with torch.no_grad():
        pooled = pool_features(encoder.eval().encode(x), mask).numpy()
    order = np.argsort([s["row"] for s in samples])
    return pooled[order]


def test_embeddings_are_row_aligned_with_the_manifest(ecg_store, tmp_path):
    info = embed(config(ecg_store, tmp_path / "emb", patches=True))
    manifest = pl.read_parquet(ecg_store / "manifest.parquet")
    table, pooled = read_embeddings(str(tmp_path / "emb"))
    assert table["key"].to_list() == manifest["key"].to_list()  # row i = manifest row i
    assert table["row"].to_list() == list(range(manifest.height))
    assert pooled.shape == (manifest.height, 200) and info["arrays"]["pooled"] == [manifest.height, 200]
    encoder = load_encoder("random", {"n_layer": 1}, seed=0)
    rows = [0, 7, 23, manifest.height - 1]
    assert np.allclose(pooled[rows], direct(ecg_store, rows, encoder), atol=1e-5)
    patches = zarr.open_group(str(tmp_path / "emb" / "zarr"), mode="r")["patches"]
    assert patches.shape == (manifest.height, 12, 10, 200)
    assert np.allclose(np.asarray(patches[3]).mean(axis=(0, 1)), pooled[3], atol=1e-5)  # every lead present here
    # a complete run is left as it is
    assert embed(config(ecg_store, tmp_path / "emb", patches=True))["seconds"] == info["seconds"]


def test_a_killed_embedding_run_resumes_to_the_same_arrays(ecg_store, tmp_path):
    whole = embed(config(ecg_store, tmp_path / "whole"))
    calls = []

    def die(done, total):
        calls.append(done)
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed after its first block

    with pytest.raises(KeyboardInterrupt):
        embed(config(ecg_store, tmp_path / "killed"), progress=die)
    assert not (tmp_path / "killed" / "embed.json").exists()
    assert len(list((tmp_path / "killed" / "progress").glob("block-*.json"))) == 1
    seen = []
    resumed = embed(config(ecg_store, tmp_path / "killed"), progress=lambda done, total: seen.append(done))
    assert seen[0] > 16  # the finished block was skipped
    _, a = read_embeddings(str(tmp_path / "whole"))
    _, b = read_embeddings(str(tmp_path / "killed"))
    assert np.array_equal(a, b) and resumed["rows"] == whole["rows"]
    with pytest.raises(ValueError, match="other settings"):
        (tmp_path / "killed" / "embed.json").unlink()
        embed(config(ecg_store, tmp_path / "killed", seed=5))


def test_pooled_embeddings_in_memory_match_the_written_ones(ecg_store, tmp_path):
    embed(config(ecg_store, tmp_path / "emb"))
    _, written = read_embeddings(str(tmp_path / "emb"))
    encoder = load_encoder("random", {"n_layer": 1}, seed=0)
    rows, parts = pooled_embeddings(str(ecg_store), {"ecg": encoder}, rows=[5, 1, 30], batch_size=2)
    assert rows.tolist() == [1, 5, 30] and np.allclose(parts["ecg"], written[[1, 5, 30]], atol=1e-5)


def test_embed_from_a_pretraining_run_to_s3(ecg_store, tmp_path, s3_bucket):
    from physiofm.train.pretrain import PretrainConfig, pretrain

    pretrain(PretrainConfig(str(ecg_store), str(tmp_path / "pre"), max_steps=2, batch_size=4, checkpoint_every=2,
                            model={"n_layer": 1}, seed=1))  # fmt: skip
    url, options = s3_bucket
    info = embed(EmbedConfig(str(ecg_store), f"{url}/emb", weights=str(tmp_path / "pre"), block_rows=16,
                             device="cpu", out_options=options))  # fmt: skip
    assert info["encoder"]["n_layer"] == 1 and info["seed"] is None
    table, pooled = read_embeddings(f"{url}/emb", options)
    encoder = load_encoder(str(tmp_path / "pre"))
    assert table.height == pooled.shape[0] == 40
    assert np.allclose(pooled[[2, 39]], direct(ecg_store, [2, 39], encoder), atol=1e-5)


def test_embed_command(emotion_store, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "physiofm", "embed", str(emotion_store), "--weights", "random", "--layers", "1",
         "--modality", "eeg", "--out", str(tmp_path / "emb"), "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "emb" / "embed.json").read_text())
    manifest = pl.read_parquet(emotion_store / "manifest.parquet")
    assert info["modality"] == "eeg" and info["rows"] == manifest.height
    table = pl.read_parquet(tmp_path / "emb" / "embeddings.parquet")
    assert table.select("key", "subject_id", "trial").equals(manifest.select("key", "subject_id", "trial"))
