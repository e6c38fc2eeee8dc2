"""Per-sample embeddings of a store from a CBraMod encoder: Zarr arrays and a Parquet table, row-aligned with
the manifest.

``physiofm embed STORE --weights RUN_OR_CHECKPOINT --out EMB`` writes::

    EMB/
      zarr/                Zarr v3 group: ``pooled`` (rows, d_model) float32, mean over channels (present ECG
                           leads only) and patches; with ``patches=True`` also ``patches`` (rows, C, N, d_model)
                           float32 or float16.  Row i = manifest row i of STORE.
      embeddings.parquet   one row per manifest row, in order: key, row, and the manifest's ids
                           (dataset, record_id, subject_id, window_index, trial, segment where present)
      progress/            one marker per finished block of rows, and the run's settings (resuming)
      embed.json           the settings, the encoder's size, counts and time; written last: a complete run

The store is streamed (local or ``s3://``, :class:`~physiofm.train.data.stream.StreamingDataset`,
in store order); ``EMB`` may be local or ``s3://`` too.  Rows go in blocks of ``block_rows``
(whole Zarr chunks, so a block is written whole or not at all), each followed by its marker; a
run killed at any point and started again skips the finished blocks and ends with the same
arrays.  A complete ``EMB`` is left as it is.

:func:`pooled_embeddings` is the same pass in memory, for the frozen fine-tuning modes (under a
process group each rank embeds its share, and all ranks get every row).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from physiofm.io import StorageOptions, atomic_write, join, url_to_fs
from physiofm.models import CBraMod, create_model, load_pretrained
from physiofm.models.fusion import pool_features
from physiofm.store.layout import Layout
from physiofm.store.zarr_arrays import open_zarr_group
from physiofm.train import distributed
from physiofm.train.data.stream import StreamingDataset
from physiofm.train.loop import autocast, pick_device

INFO, TABLE, ZARR, PROGRESS = "embed.json", "embeddings.parquet", "zarr", "progress"
ID_COLUMNS = ("dataset", "record_id", "subject_id", "window_index", "trial", "segment")
RANDOM = "random"


@dataclass
class EmbedConfig:
    store: str
    out: str
    weights: str = RANDOM  # a pretraining run, an encoder file, CBraMod's checkpoint, or "random"
    modality: str | None = None  # default: the store's only modality, else ecg
    model: dict = field(default_factory=dict)  # CBraMod size (with "random", or for files without one)
    patches: bool = False
    patch_dtype: str = "float32"
    batch_size: int = 64
    block_rows: int = 256
    workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0  # the initialisation of a random encoder
    storage_options: dict = field(default_factory=dict)  # for the store
    out_options: dict = field(default_factory=dict)  # for EMB (default: the store's)


def load_encoder(weights: str | None, model: Mapping | None = None, seed: int = 0) -> CBraMod:
    """The encoder of ``weights`` (:func:`physiofm.models.load_pretrained`), or with ``None`` / ``"random"`` a
    randomly initialised one of size ``model`` (``{"n_layer": 1}``, or a name of
    :data:`physiofm.models.MODEL_SIZES` under ``"name"``) drawn from ``seed``."""
    model = dict(model or {})
    if weights in (None, RANDOM):
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            name = model.pop("name", None)
            return create_model(name, **model) if name else CBraMod(**model)
        finally:
            torch.random.set_rng_state(generator_state)
    return load_pretrained(weights, **model)


def _modality(store: str, asked: str | None, options: StorageOptions) -> str:
    info = Layout(store, options).read_info()
    if info is None:
        raise FileNotFoundError(f"{store} is not a complete physiofm store (no build.json)")
    available = list(info["modalities"])
    if asked is None:
        return available[0] if len(available) == 1 else ("ecg" if "ecg" in available else available[0])
    if asked not in available:
        raise ValueError(f"{store} has modalities {available}, not {asked!r}")
    return asked


@torch.no_grad()
def pooled_embeddings(
    store: str,
    encoders: Mapping[str, CBraMod],
    rows: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    workers: int = 0,
    storage_options: StorageOptions | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(rows, {modality: (rows, d_model) float32})``: mean-pooled features of each encoder, rows sorted.

    Under a process group each rank embeds its share and all ranks return every row.
    """
    device = torch.device(device)
    for encoder in encoders.values():
        encoder.to(device).eval()
    data = StreamingDataset(
        store,
        batch_size=batch_size,
        modalities=list(encoders),
        rows=rows,
        shuffle=False,
        num_workers=workers,
        storage_options=storage_options,
    )
    got_rows, got = [], {m: [] for m in encoders}
    for batch in data.loader():
        keep = ~batch["pad"]
        for modality, encoder in encoders.items():
            mask = batch.get("lead_mask") if modality == "ecg" else None
            with autocast(device, precision):
                features = encoder.encode(batch[modality].to(device))
            pooled = pool_features(features.float(), None if mask is None else mask.to(device))
            got[modality].append(pooled.cpu()[keep].numpy())
        got_rows.append(batch["row"][keep].numpy())
    width = {m: e.config["d_model"] for m, e in encoders.items()}
    local_rows = np.concatenate(got_rows) if got_rows else np.zeros(0, np.int64)
    local = {m: np.concatenate(v) if v else np.zeros((0, width[m]), np.float32) for m, v in got.items()}
    all_rows = distributed.all_concat(local_rows)
    order = np.argsort(all_rows, kind="stable")
    return all_rows[order], {m: distributed.all_concat(v)[order] for m, v in local.items()}


def _settings(config: EmbedConfig, modality: str, encoder: CBraMod, rows: int) -> dict:
    return {
        "store": config.store,
        "weights": str(config.weights),
        "modality": modality,
        "encoder": dict(encoder.config),
        "seed": config.seed if config.weights in (None, RANDOM) else None,
        "patches": config.patches,
        "patch_dtype": config.patch_dtype if config.patches else None,
        "block_rows": config.block_rows,
        "rows": rows,
    }


def embed(config: EmbedConfig, progress=None) -> dict:
    """Write the embeddings of every manifest row of ``config.store`` to ``config.out``; return ``embed.json``.

    ``progress(done_rows, total_rows)`` is called after each block.
    """
    started = time.perf_counter()
    if config.block_rows < 1 or (config.patches and config.block_rows % 8):
        raise ValueError(f"block_rows must be positive (a multiple of 8 with patches), got {config.block_rows}")
    out_options = config.out_options or config.storage_options
    fs, root = url_to_fs(config.out, out_options)
    info_path = join(root, INFO)
    if fs.exists(info_path):
        with fs.open(info_path, "rb") as handle:
            return json.loads(handle.read())
    modality = _modality(config.store, config.modality, config.storage_options)
    layout = Layout(config.store, config.storage_options)
    manifest = layout.read_table("manifest")
    total = manifest.height
    encoder = load_encoder(config.weights, config.model, config.seed)
    settings = _settings(config, modality, encoder, total)
    settings_path = join(root, PROGRESS, "settings.json")
    if fs.exists(settings_path):
        with fs.open(settings_path, "rb") as handle:
            saved = json.loads(handle.read())
        if saved != settings:
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ValueError(f"{config.out} holds an unfinished embedding run with other settings ({changed})")
        group = open_zarr_group(fs, join(root, ZARR), "r+", out_options)
    else:
        group = open_zarr_group(fs, join(root, ZARR), "w", out_options)
        d_model = encoder.config["d_model"]
        rows = config.block_rows
        group.create_array("pooled", shape=(total, d_model), dtype="float32", chunks=(rows, d_model), fill_value=0,
                           dimension_names=("sample", "feature"), overwrite=True)  # fmt: skip
        if config.patches:
            channels, patches = layout.read_info()["sample_shapes"][modality][:2]
            shape = (channels, patches, d_model)
            group.create_array("patches", shape=(total, *shape), dtype=config.patch_dtype, chunks=(8, *shape),
                               shards=(rows, *shape), fill_value=0, overwrite=True,
                               dimension_names=("sample", "channel", "patch", "feature"))  # fmt: skip
        with atomic_write(fs, settings_path) as handle:
            handle.write(json.dumps(settings, sort_keys=True).encode())
    blocks = -(-total // config.block_rows)

    def marker(block: int) -> str:
        return join(root, PROGRESS, f"block-{block:06d}.json")

    todo = [b for b in range(blocks) if not fs.exists(marker(b))]
    device = pick_device(config.device)
    encoder = encoder.to(device).eval()
    done = (blocks - len(todo)) * config.block_rows
    if todo:
        rows = np.concatenate([np.arange(b * config.block_rows, min(total, (b + 1) * config.block_rows)) for b in todo])
        data = StreamingDataset(
            config.store,
            batch_size=config.batch_size,
            modalities=[modality],
            rows=rows,
            shuffle=False,
            num_workers=config.workers,
            storage_options=config.storage_options,
            rank=0,
            world_size=1,
        )
        pending: dict[int, dict] = {}
        with torch.no_grad():
            for batch in data.loader():
                keep = ~batch["pad"]
                with autocast(device, config.precision):
                    features = encoder.encode(batch[modality].to(device)).float()
                mask = batch.get("lead_mask") if modality == "ecg" else None
                pooled = pool_features(features, None if mask is None else mask.to(device)).cpu()[keep].numpy()
                patches = features.cpu()[keep].numpy() if config.patches else None
                for i, row in enumerate(batch["row"][keep].tolist()):
                    block = row // config.block_rows
                    start = block * config.block_rows
                    size = min(total, start + config.block_rows) - start
                    entry = pending.setdefault(
                        block,
                        {
                            "pooled": np.zeros((size, pooled.shape[1]), np.float32),
                            "patches": np.zeros((size, *patches.shape[1:]), config.patch_dtype)
                            if patches is not None
                            else None,
                            "left": size,
                        },
                    )
                    entry["pooled"][row - start] = pooled[i]
                    if patches is not None:
                        entry["patches"][row - start] = patches[i]
                    entry["left"] -= 1
                    if entry["left"] == 0:
                        group["pooled"][start : start + size] = entry["pooled"]
                        if patches is not None:
                            group["patches"][start : start + size] = entry["patches"]
                        with atomic_write(fs, marker(block)) as handle:
                            handle.write(b"{}")
                        del pending[block]
                        done += size
                        if progress is not None:
                            progress(min(done, total), total)
        if pending:
            raise RuntimeError(f"the stream ended with {len(pending)} block(s) incomplete")
    ids = [c for c in ID_COLUMNS if c in manifest.columns]
    table = manifest.select(pl.col("key"), pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), *ids)
    with atomic_write(fs, join(root, TABLE)) as handle:
        table.write_parquet(handle)
    info = {
        **settings,
        "arrays": {name: list(group[name].shape) for name in ("pooled", "patches") if name in group},
        "table": TABLE,
        "seconds": time.perf_counter() - started,
        "device": str(device),
    }
    with atomic_write(fs, info_path) as handle:
        handle.write(json.dumps(info, indent=2, sort_keys=True).encode())
    return info


def read_embeddings(out: str, storage_options: StorageOptions | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    """The table and the pooled array of a complete ``EMB`` (row i of both = manifest row i)."""
    fs, root = url_to_fs(out, storage_options)
    if not fs.exists(join(root, INFO)):
        raise FileNotFoundError(f"{out} is not a complete embedding run (no {INFO})")
    with fs.open(join(root, TABLE), "rb") as handle:
        table = pl.read_parquet(handle)
    group = open_zarr_group(fs, join(root, ZARR), "r", storage_options)
    return table, np.asarray(group["pooled"][:])


__all__ = ["EmbedConfig", "embed", "load_encoder", "pooled_embeddings", "read_embeddings"]
