"""What the datasets need from a store, for the selected samples only: shards, rows, keys, scales, labels.

Read once from ``build.json``, ``shards.parquet`` and ``manifest.parquet``; shared by
:class:`~physiofm.train.data.stream.StreamingDataset` and :class:`~physiofm.train.data.zarr_dataset.ZarrDataset`.
Scaling to model units comes from the manifest's ``<modality>_unit`` columns, never from the shards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from physiofm.io import StorageOptions
from physiofm.store.layout import BUILD_INFO, Layout
from physiofm.units import microvolts

Filters = Mapping[str, Any] | pl.Expr | None

MODEL_UNIT_UV = {"ecg": 1e3, "eeg": 100.0}
"""The unit of model inputs per modality, in µV: ECG in mV, EEG in units of 100 µV."""


def _filter_expr(filters: Filters, columns: Sequence[str]) -> pl.Expr | None:
    """``{"subject_id": ["01", "02"], "q_nan": False, "fold": None}`` → one polars expression."""
    if filters is None or isinstance(filters, pl.Expr):
        return filters
    unknown = sorted(set(filters) - set(columns))
    if unknown:
        raise ValueError(f"filters name columns the manifest lacks: {unknown}")
    exprs = []
    for column, value in filters.items():
        if value is None:
            exprs.append(pl.col(column).is_null())
        elif isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
            exprs.append(pl.col(column).is_in(list(value)))
        else:
            exprs.append(pl.col(column) == value)
    return pl.all_horizontal(exprs) if exprs else None


@dataclass
class StoreIndex:
    """What the datasets need from a store, for the selected samples only, as numpy arrays.

    Selection index ``j`` (0 … ``len - 1``) runs over the selected samples in store order.
    """

    url: str
    wds_url: str  # the shards' folder, as a path or URL that any process can open
    storage_options: StorageOptions
    modalities: tuple[str, ...]
    sample_shapes: dict[str, tuple[int, ...]]
    shard_names: list[str]
    shard_bytes: np.ndarray
    shard_starts: np.ndarray  # selection indices where each shard's samples start (length shards + 1)
    rows: np.ndarray  # manifest row (= Zarr row) of each selected sample
    keys: list[str]
    n_patches: np.ndarray
    scales: dict[str, np.ndarray]  # factor to model units, per modality and sample
    lead_mask: np.ndarray | None
    label_names: tuple[str, ...]
    labels: np.ndarray  # float32 (samples, labels), NaN where null

    @classmethod
    def load(
        cls,
        store: str,
        *,
        modalities: Sequence[str] | None = None,
        labels: Sequence[str] = (),
        filters: Filters = None,
        rows: Sequence[int] | np.ndarray | None = None,
        storage_options: StorageOptions | None = None,
    ) -> StoreIndex:
        """Read ``build.json``, ``shards.parquet`` and ``manifest.parquet`` and apply the selection."""
        layout = Layout(store, storage_options or {})
        info = layout.read_info()
        if info is None:
            raise FileNotFoundError(f"{store} is not a complete physiofm store (no {BUILD_INFO})")
        shards = layout.read_table("shards")
        manifest = layout.read_table("manifest").with_row_index("_row")
        available = tuple(info["modalities"])
        chosen = tuple(modalities or available)
        if missing := [m for m in chosen if m not in available]:
            raise ValueError(f"{store} has modalities {list(available)}, not {missing}")
        if (expr := _filter_expr(filters, manifest.columns)) is not None:
            manifest = manifest.filter(expr)
        if rows is not None:
            manifest = manifest.filter(pl.col("_row").is_in(np.asarray(rows, dtype=np.int64).tolist()))
        if manifest.height == 0:
            raise ValueError(f"the filters select no sample of {store}")
        names = shards["shard"].to_list()
        manifest = manifest.with_columns(
            pl.col("shard").replace_strict(names, list(range(len(names))), return_dtype=pl.Int64).alias("_shard")
        ).sort("_shard", "shard_pos")
        counts = np.bincount(manifest["_shard"].to_numpy(), minlength=len(names))
        scales = {}
        for modality in chosen:
            units = manifest[f"{modality}_unit"]
            try:
                table = {unit: microvolts(unit) for unit in units.unique().to_list()}
            except ValueError as error:
                raise ValueError(f"{store}: {modality}: {error}") from None
            scales[modality] = (
                units.replace_strict(table, return_dtype=pl.Float64).to_numpy() / MODEL_UNIT_UV[modality]
            ).astype(np.float32)
        for name in labels:
            dtype = manifest.schema.get(name)
            if dtype is None or not (dtype.is_numeric() or dtype == pl.Boolean):
                raise ValueError(f"label column {name!r} is {dtype or 'missing'}: labels must be numeric or boolean")
        label_values = (
            manifest.select(pl.col(list(labels)).cast(pl.Float32).fill_null(float("nan"))).to_numpy()
            if labels
            else np.zeros((manifest.height, 0), np.float32)
        )
        lead_mask = None
        if "ecg" in chosen:
            width = info["sample_shapes"]["ecg"][0]
            lead_mask = manifest["ecg_lead_mask"].list.to_array(width).to_numpy().astype(bool)
        return cls(
            url=store,
            wds_url=layout.wds_url,
            storage_options=dict(storage_options or {}),
            modalities=chosen,
            sample_shapes={m: tuple(info["sample_shapes"][m]) for m in chosen},
            shard_names=names,
            shard_bytes=shards["bytes"].to_numpy(),
            shard_starts=np.concatenate([[0], np.cumsum(counts)]),
            rows=manifest["_row"].to_numpy().astype(np.int64),
            keys=manifest["key"].to_list(),
            n_patches=manifest["n_patches"].to_numpy().astype(np.int64),
            scales=scales,
            lead_mask=lead_mask,
            label_names=tuple(labels),
            labels=np.ascontiguousarray(label_values, dtype=np.float32),
        )

    def __len__(self) -> int:
        return len(self.rows)

    def shard_counts(self) -> np.ndarray:
        return np.diff(self.shard_starts)

    def fields(self, js: np.ndarray) -> dict[str, Any]:
        """The non-signal batch fields of selection indices ``js`` (-1 marks padding)."""
        pad = js < 0
        safe = np.where(pad, 0, js)
        out: dict[str, Any] = {
            "key": ["" if j < 0 else self.keys[j] for j in js.tolist()],
            "row": torch.from_numpy(np.where(pad, -1, self.rows[safe])),
            "n_patches": torch.from_numpy(np.where(pad, 0, self.n_patches[safe])),
            "pad": torch.from_numpy(pad),
        }
        if self.lead_mask is not None:
            out["lead_mask"] = torch.from_numpy(self.lead_mask[safe] & ~pad[:, None])
        if self.label_names:
            out["labels"] = torch.from_numpy(np.where(pad[:, None], np.float32("nan"), self.labels[safe]))
        return out
