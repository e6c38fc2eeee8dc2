"""What the datasets need from a store, for the selected samples only: shards, rows, keys, scales, labels.

Read once from ``build.json``, ``shards.parquet`` and ``manifest.parquet``; shared by
:class:`~physiofm.train.data.stream.StreamingDataset` and :class:`~physiofm.train.data.zarr_dataset.ZarrDataset`.
Scaling to model units comes from the manifest's ``<modality>_unit`` columns, never from the shards.

:class:`Mixture` makes several stores one stream (``physiofm pretrain STORE STORE … --mix``): each
epoch is a :class:`StoreIndex` of *virtual shards* (the samples of one source shard chosen for that
epoch, once per copy), planned, sharded over ranks × workers and resumed exactly as one store is.

How a mixed epoch is defined:

* The epoch's budget ``N`` is the number of selected samples of all stores together.  Source ``s``
  gets a quota ``n_s``: ``mix`` normalised, times ``N``, rounded by largest remainders (so the quotas
  add up to ``N``); without ``mix`` the quotas are the stores' sizes, and an epoch is every sample
  of every store once (the stores concatenated).
* Source ``s`` of ``S`` samples with quota ``n_s = q·S + r`` (``0 <= r < S``): in epoch ``e`` each of
  its samples is chosen ``q`` times, and ``r`` more: the positions ``e·r … e·r + r - 1`` (mod ``S``) of
  one fixed permutation of its samples drawn from ``(seed, s)``.  An under-sampled store
  (``q = 0``) thus never repeats a sample within an epoch and goes round all of its samples
  before repeating any (over any run of epochs, sample counts differ by at most one); an
  over-sampled one repeats each sample ``q`` or ``q + 1`` times.
* Every chosen sample (every copy) is delivered once per epoch across ranks × workers, by the
  plan of :mod:`physiofm.train.data.stream`; batches mix sources freely (``batch["source"]``
  says which store each sample is from; ``row`` is the row of that store's manifest).

Stores must agree on what a sample is: the same modalities (those chosen, or all of each store)
with the same sample shapes (channels, patches, patch length); a mixture of, say, a 12-lead and a
2-lead ECG store, or of an ECG store and an EEG one, is a ValueError naming the stores and shapes.
``filters`` and ``labels`` apply to every store; ``rows`` takes one entry (None or rows) per store.
"""

from __future__ import annotations

import os
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


def _needed(
    columns: Sequence[str], modalities: Sequence[str], labels: Sequence[str], expr: pl.Expr | None
) -> list[str]:
    """The manifest columns :meth:`StoreIndex.load` uses, in the table's order: a store's fingerprints and
    descriptive columns are most of its manifest's memory (``fp_sketch`` alone about 540 bytes a row)."""
    wanted = {"key", "shard", "shard_pos", "n_patches", *labels, *(f"{m}_unit" for m in modalities)}
    if "ecg" in modalities:
        wanted.add("ecg_lead_mask")
    if expr is not None:
        wanted.update(expr.meta.root_names())
    return [name for name in columns if name in wanted]


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
    shard_urls: list[str] | None = None  # full URL per shard (a mixture's virtual shards); else wds_url/name
    sources: np.ndarray | None = None  # int64 source (store) of each sample, in a mixture of stores
    source_names: tuple[str, ...] = ()

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
        available = tuple(info["modalities"])
        chosen = tuple(modalities or available)
        if missing := [m for m in chosen if m not in available]:
            raise ValueError(f"{store} has modalities {list(available)}, not {missing}")
        columns = layout.table_columns("manifest")
        expr = _filter_expr(filters, columns)
        manifest = layout.read_table("manifest", _needed(columns, chosen, labels, expr)).with_row_index("_row")
        if expr is not None:
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

    def shard_url(self, shard: int) -> str:
        """Where shard ``shard`` (an index into ``shard_names``) is read from."""
        if self.shard_urls is not None:
            return self.shard_urls[shard]
        return f"{self.wds_url}/{self.shard_names[shard]}"

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
        if self.sources is not None:
            out["source"] = torch.from_numpy(np.where(pad, -1, self.sources[safe]))
        return out


def parse_mix(text: str | Sequence[float] | None, stores: int) -> tuple[float, ...] | None:
    """``"0.5,0.3,0.2"`` (or numbers) → positive weights, one per store, normalised to sum 1."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        values = tuple(float(x) for x in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        raise ValueError(f"--mix must be comma-separated numbers, one per store, got {text!r}") from None
    if len(values) != stores:
        raise ValueError(f"--mix has {len(values)} weight(s) for {stores} store(s): give one per store")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"--mix weights must be positive numbers (leave a store out instead of weighting it 0), got {values}"
        )
    total = sum(values)
    return tuple(v / total for v in values)


def quotas(sizes: Sequence[int], mix: Sequence[float] | None) -> np.ndarray:
    """Samples per epoch of each source: the sizes without ``mix``, else ``mix × sum(sizes)`` rounded by largest
    remainders (ties to the earlier store), so that they add up to ``sum(sizes)``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if mix is None:
        return sizes.copy()
    budget = int(sizes.sum())
    exact = np.asarray(mix, dtype=np.float64) * budget
    out = np.floor(exact).astype(np.int64)
    rest = budget - int(out.sum())
    out[np.argsort(-(exact - out), kind="stable")[:rest]] += 1
    return out


class Mixture:
    """Several stores streamed as one (see the module docstring): :meth:`index` gives epoch ``e``'s index.

    One store without ``mix`` is that store's :class:`StoreIndex` itself, unchanged, every epoch.
    """

    def __init__(self, bases: Sequence[StoreIndex], mix: Sequence[float] | None = None, seed: int = 0) -> None:
        self.bases, self.seed = list(bases), seed
        self.mix = None if mix is None else tuple(float(x) for x in mix)
        self.sizes = np.array([len(b) for b in self.bases], dtype=np.int64)
        self.quotas = quotas(self.sizes, self.mix)
        if (self.quotas < 1).any():
            empty = [b.url for b, n in zip(self.bases, self.quotas) if n < 1]
            raise ValueError(f"--mix gives {empty} no sample per epoch: raise its weight or leave it out")
        self._cache: tuple[int, StoreIndex] | None = None
        self._whole: StoreIndex | None = None

    @classmethod
    def load(
        cls,
        stores: str | Sequence[str],
        *,
        mix: str | Sequence[float] | None = None,
        seed: int = 0,
        modalities: Sequence[str] | None = None,
        labels: Sequence[str] = (),
        filters: Filters = None,
        rows: Any = None,
        storage_options: StorageOptions | None = None,
    ) -> Mixture:
        """Load every store's :class:`StoreIndex` (same selection for all) and check that they agree."""
        stores = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
        stores = [str(s) for s in stores]
        if not stores:
            raise ValueError("no store given")
        if len(set(stores)) != len(stores):
            raise ValueError(f"a store is given twice: {stores}")
        if len(stores) == 1:
            per_store = [rows]
        elif rows is None:
            per_store = [None] * len(stores)
        else:
            per_store = list(rows)
            if len(per_store) != len(stores):
                raise ValueError(f"rows: give one entry (None or manifest rows) per store, {len(stores)} in all")
        bases = [
            StoreIndex.load(
                store,
                modalities=modalities,
                labels=labels,
                filters=filters,
                rows=chosen,
                storage_options=storage_options,
            )
            for store, chosen in zip(stores, per_store)
        ]
        first = bases[0]
        for other in bases[1:]:
            if other.modalities != first.modalities or other.sample_shapes != first.sample_shapes:
                raise ValueError(
                    "stores mixed in one stream must hold the same modalities with the same sample shapes "
                    f"(channels, patches, patch length): {first.url} has {_describe(first)}, "
                    f"{other.url} has {_describe(other)}"
                )
        return cls(bases, parse_mix(mix, len(bases)) if isinstance(mix, str) else mix, seed)

    @property
    def trivial(self) -> bool:
        """One store, every sample once per epoch: the store's own index."""
        return len(self.bases) == 1 and bool((self.quotas == self.sizes).all())

    @property
    def urls(self) -> list[str]:
        return [b.wds_url for b in self.bases]

    def plan_config(self) -> dict[str, list[int]]:
        """What a resumed epoch plan depends on beyond one store's: the sources' sizes and quotas (nothing for one
        plain store, so that its checkpoints stay as they were)."""
        if self.trivial:
            return {}
        return {"source_samples": self.sizes.tolist(), "source_quotas": self.quotas.tolist()}

    def multiplicity(self, source: int, epoch: int) -> np.ndarray:
        """How many times each selected sample of ``source`` is chosen in ``epoch`` (int64, the source's length)."""
        size, quota = int(self.sizes[source]), int(self.quotas[source])
        q, r = divmod(quota, size)
        counts = np.full(size, q, dtype=np.int64)
        if r:
            order = np.random.default_rng([self.seed, 5, source]).permutation(size)
            counts[order[(epoch * r + np.arange(r, dtype=np.int64)) % size]] += 1
        return counts

    def index(self, epoch: int) -> StoreIndex:
        """Epoch ``epoch``'s index: every chosen sample (copy) once, in virtual shards (source, copy, shard)."""
        if self.trivial:
            return self.bases[0]
        proportional = bool((self.quotas == self.sizes).all())
        if proportional and self._whole is not None:
            return self._whole
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        index = self._build(epoch)
        if proportional:
            self._whole = index
        else:
            self._cache = (epoch, index)
        return index

    def _build(self, epoch: int) -> StoreIndex:
        urls, names, sizes, counts, parts, sources = [], [], [], [], [], []
        for s, base in enumerate(self.bases):
            times = self.multiplicity(s, epoch)
            shard_of = np.repeat(np.arange(len(base.shard_names)), base.shard_counts())
            for copy in range(int(times.max(initial=0))):
                js = np.flatnonzero(times > copy)
                per_shard = np.bincount(shard_of[js], minlength=len(base.shard_names))
                for shard in np.flatnonzero(per_shard).tolist():
                    urls.append(base.shard_url(shard))
                    names.append(base.shard_names[shard])
                    sizes.append(int(base.shard_bytes[shard]))
                    counts.append(int(per_shard[shard]))
                parts.append((base, js))
                sources.append(np.full(len(js), s, dtype=np.int64))
        first = self.bases[0]
        rows = np.concatenate([b.rows[js] for b, js in parts])
        keys = [b.keys[j] for b, js in parts for j in js.tolist()]
        lead_mask = None if first.lead_mask is None else np.concatenate([b.lead_mask[js] for b, js in parts])
        return StoreIndex(
            url=first.url,
            wds_url=first.wds_url,
            storage_options=first.storage_options,
            modalities=first.modalities,
            sample_shapes=first.sample_shapes,
            shard_names=names,
            shard_bytes=np.asarray(sizes, dtype=np.int64),
            shard_starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            rows=rows,
            keys=keys,
            n_patches=np.concatenate([b.n_patches[js] for b, js in parts]),
            scales={m: np.concatenate([b.scales[m][js] for b, js in parts]) for m in first.modalities},
            lead_mask=lead_mask,
            label_names=first.label_names,
            labels=np.ascontiguousarray(np.concatenate([b.labels[js] for b, js in parts]), dtype=np.float32),
            shard_urls=urls,
            sources=np.concatenate(sources),
            source_names=tuple(b.url for b in self.bases),
        )


def _describe(index: StoreIndex) -> str:
    return ", ".join(f"{m} {tuple(index.sample_shapes[m])}" for m in index.modalities)
