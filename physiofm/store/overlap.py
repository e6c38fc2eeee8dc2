"""Recordings present in two stores: exact copies and near copies across formats, rates and filters.

:func:`overlap` compares two stores by the fingerprint columns of their manifests
(:mod:`physiofm.preprocess.fingerprint`):

1. **exact**: records whose ``fp_signal`` (hash of the source signal in µV, with its rate) is
   the same on both sides, found by a hash join;
2. **near**: windows whose sketches share a locality-sensitive hash key (a band of sign bits of
   random projections, per lead) are candidates; each candidate pair is verified by the
   correlation of the two sketches (mean over the leads both sketched, best lag within ±50 ms),
   and pairs at or above ``threshold`` are kept: 0.97 by default, as copies of the real
   Challenge/PTB-XL records of ``shared/data`` at 100, 250 and 500 Hz correlate at 0.998 or more,
   and with another band-pass (0.05-70 Hz with a 50-Hz notch against 0.5-45 Hz) and float16 at
   0.99 or more, while a million pairs of generated ECGs (one template morphology at steady
   rates, harder than real data) stay under 0.92.  The index makes the
   cost grow with the number of windows and candidates, not with their product: two stores of
   800,000 windows compare in about 2 minutes (60 s of CPU) on a shared 2-core machine,
   verifying 2.1 million candidates instead of 6.4e11 pairs (``bench/overlap.py``).

Window pairs are gathered into record pairs (``kind`` exact or near, the best correlation, the
windows matched); :func:`write_report` writes them as ``overlap.parquet`` with ``overlap.json``
(the summary).  A store built before the fingerprint columns existed is sketched from its Zarr
array instead (its exact copies are then found as near ones, at correlation 1).

:func:`kept_rows` is what ``pretrain --exclude`` applies: the manifest rows of a store left once
every record that overlaps another store is dropped, with every record of the same subject where
the store has subject ids (a subject id that is not just the record id); :func:`pretraining_overlap`
is what ``finetune`` warns with: the overlap of its store with the stores a pretraining run
(the weights' run folder) trained on.

Limits: windows are compared at their own positions (a copy cropped by a fraction of a window, or
built with another window length, is not found as a near copy, only as an exact one); a strictly
regular rhythm (a paced heart) recorded twice from one person can, by chance alignment of its
beats within ±50 ms, pass for a copy.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from physiofm.io import StorageOptions
from physiofm.preprocess import fingerprint as F
from physiofm.store.layout import Layout

THRESHOLD = 0.97
MAX_LAG = 1  # sketch samples (±50 ms at 20 Hz)
MAX_BUCKET_PAIRS = 10_000  # a key shared by more window pairs than this is skipped (flat or degenerate sketches)
VERIFY_CHUNK = 200_000
ID_COLUMNS = ("key", "dataset", "record_id", "subject_id", "window_index")

PAIR_SCHEMA = {
    "kind": pl.String,
    "corr": pl.Float64,
    "windows": pl.Int64,
    "lag_s": pl.Float64,
    **{f"{side}_{c}": pl.String for side in ("a", "b") for c in ("dataset", "record_id", "subject_id")},
    "a_windows": pl.Int64,
    "b_windows": pl.Int64,
}


@dataclass
class Fingerprints:
    """One store's manifest ids and fingerprints, decoded."""

    store: str
    ids: pl.DataFrame  # row, key, dataset, record_id, subject_id, window_index, fp_signal (null when unknown)
    leads: np.ndarray  # (rows, SLOTS) int16, -1 absent
    values: np.ndarray  # (rows, SLOTS, L) int8
    source: str  # "manifest" or "zarr"

    @property
    def length(self) -> int:
        return self.values.shape[-1]


@dataclass
class OverlapReport:
    pairs: pl.DataFrame  # one row per record pair (PAIR_SCHEMA)
    summary: dict = field(default_factory=dict)


# ---- reading --------------------------------------------------------------------------------------


def load(store: str, storage_options: StorageOptions | None = None) -> Fingerprints:
    """The fingerprints of ``store``: from its manifest, or sketched from its Zarr array when it has none."""
    layout = Layout(store, storage_options or {})
    info = layout.read_info()
    if info is None:
        raise FileNotFoundError(f"{store} is not a complete physiofm store (no build.json)")
    with layout.fs.open(layout.table("manifest"), "rb") as handle:
        names = set(pl.read_parquet_schema(handle))
    if set(F.FP_COLUMNS) <= names:
        df = layout.read_table("manifest", columns=[*ID_COLUMNS, *F.FP_COLUMNS]).with_row_index("row")
        if df["fp_sketch"].null_count() < df.height:  # a store whose preparer sketches nothing: from Zarr
            leads, values = F.decode(df["fp_sketch"])
            return Fingerprints(store, df.drop("fp_sketch"), leads, values, "manifest")
    return _from_zarr(layout, info, store)


def _from_zarr(layout: Layout, info: dict, store: str) -> Fingerprints:
    """Sketch every sample of an older store from its Zarr array (what the build would have stored)."""
    modality = "ecg" if "ecg" in info["modalities"] else info["modalities"][0]
    mask_column = {"ecg": "ecg_lead_mask", "eeg": "eeg_channel_mask"}.get(modality)
    columns = [*ID_COLUMNS, f"{modality}_channels", *([mask_column] if mask_column else [])]
    df = layout.read_table("manifest", columns=columns).with_row_index("row")
    channels = df[f"{modality}_channels"][0].to_list()
    width = len(channels)
    present = (
        df[mask_column].list.to_array(width).to_numpy().astype(bool)
        if mask_column and df[mask_column].null_count() == 0
        else np.ones((df.height, width), dtype=bool)
    )
    preference = F.ECG_PREFERENCE if modality == "ecg" else tuple(channels)
    chosen = F.slots(present, channels, preference)
    array = layout.open_zarr("r")[modality]
    fs = float(info.get("recipe", {}).get("signal", {}).get("fs", 200))
    step = 256
    length = F.sketch_length(int(np.prod(array.shape[2:])) / fs)
    leads = np.full((df.height, F.SLOTS), -1, dtype=np.int16)
    values = np.zeros((df.height, F.SLOTS, length), dtype=np.int8)
    for start in range(0, df.height, step):
        block = np.asarray(array[start : start + step], dtype=np.float32)
        block = block.reshape(block.shape[0], block.shape[1], -1)
        picked = chosen[start : start + len(block)]
        for pattern in np.unique(picked, axis=0):  # rows with the same leads sketched, together
            rows = np.flatnonzero((picked == pattern).all(axis=1))
            leads[start + rows], values[start + rows] = F.window_sketches(block[rows], fs, pattern)
    ids = df.select("row", *ID_COLUMNS).with_columns(pl.lit(None, dtype=pl.String).alias("fp_signal"))
    return Fingerprints(store, ids, leads, values, "zarr")


# ---- comparing ------------------------------------------------------------------------------------


def candidates(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], max_bucket_pairs: int = MAX_BUCKET_PAIRS
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Window pairs ``(rows of a, rows of b)`` whose sketches share an LSH key, each pair once.

    ``a`` and ``b`` are ``(leads, values)`` of :func:`physiofm.preprocess.fingerprint.decode`.  Keys
    shared by more than ``max_bucket_pairs`` pairs are skipped and counted (``skipped_keys``).
    """
    frames = []
    for leads, values in (a, b):
        keys, valid = F.band_keys(leads, values)
        rows = np.broadcast_to(np.arange(len(keys), dtype=np.uint32)[:, None], keys.shape)
        frames.append(pl.DataFrame({"k": keys[valid], "r": rows[valid]}))  # a key holds a row once
    left, right = frames
    counts = (
        left.group_by("k")
        .len("na")
        .join(right.group_by("k").len("nb"), on="k")
        .with_columns((pl.col("na").cast(pl.Int64) * pl.col("nb")).alias("pairs"))
    )
    hot = counts.filter(pl.col("pairs") > max_bucket_pairs)
    keep = counts.filter(pl.col("pairs") <= max_bucket_pairs).select("k")
    joined = (
        left.join(keep, on="k")
        .join(right.join(keep, on="k"), on="k", suffix="_b")
        .select(pl.col("r").alias("a"), pl.col("r_b").alias("b"))
        .unique()
    )
    stats = {
        "keys_a": left.height,
        "keys_b": right.height,
        "shared_keys": counts.height,
        "skipped_keys": hot.height,
        "skipped_pairs": int(hot["pairs"].sum()) if hot.height else 0,
        "candidates": joined.height,
    }
    return joined["a"].to_numpy().astype(np.int64), joined["b"].to_numpy().astype(np.int64), stats


def verify(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    max_lag: int = MAX_LAG,
) -> tuple[np.ndarray, np.ndarray]:
    """Correlation and lag (sketch samples) of each candidate pair."""
    corr = np.empty(len(rows_a))
    lag = np.empty(len(rows_a), dtype=np.int64)
    for start in range(0, len(rows_a), VERIFY_CHUNK):
        i, j = rows_a[start : start + VERIFY_CHUNK], rows_b[start : start + VERIFY_CHUNK]
        c, g, _ = F.similarity(a[0][i], a[1][i], b[0][j], b[1][j], max_lag)
        corr[start : start + len(i)], lag[start : start + len(i)] = c, g
    return corr, lag


def _records(ids: pl.DataFrame) -> pl.DataFrame:
    return ids.group_by("dataset", "record_id").agg(pl.col("subject_id").first(), pl.len().alias("n_windows"))


def _side(records: pl.DataFrame, side: str) -> pl.DataFrame:
    """:func:`_records` with the report's column names of ``side`` (a or b)."""
    names = {"dataset": "dataset", "record_id": "record_id", "subject_id": "subject_id", "n_windows": "windows"}
    return records.rename({column: f"{side}_{name}" for column, name in names.items()})


def compare(
    a: Fingerprints,
    b: Fingerprints,
    *,
    threshold: float = THRESHOLD,
    max_lag: int = MAX_LAG,
    max_bucket_pairs: int = MAX_BUCKET_PAIRS,
) -> OverlapReport:
    """Record pairs of ``a`` and ``b`` that hold the same recording (see the module's description)."""
    started = time.perf_counter()
    notes: list[str] = []
    # exact: the same source signal
    exact = (
        a.ids.filter(pl.col("fp_signal").is_not_null())
        .select("fp_signal", "dataset", "record_id")
        .unique()
        .join(
            b.ids.filter(pl.col("fp_signal").is_not_null()).select("fp_signal", "dataset", "record_id").unique(),
            on="fp_signal",
            suffix="_b",
        )
        .select(
            pl.col("dataset").alias("a_dataset"),
            pl.col("record_id").alias("a_record_id"),
            pl.col("dataset_b").alias("b_dataset"),
            pl.col("record_id_b").alias("b_record_id"),
        )
        .unique()
        .with_columns(pl.lit("exact").alias("kind"), pl.lit(1.0).alias("corr"), pl.lit(0).cast(pl.Int64).alias("lag"))
    )
    # near: LSH candidates, verified by correlation
    stats: dict = {"candidates": 0}
    near = pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "corr": pl.Float64, "lag": pl.Int64})
    if a.length != b.length:
        notes.append(
            f"windows of {a.length / F.SKETCH_HZ:g} s and {b.length / F.SKETCH_HZ:g} s: near copies not searched "
            "(build both stores with the same window length)"
        )
    else:
        rows_a, rows_b, stats = candidates((a.leads, a.values), (b.leads, b.values), max_bucket_pairs)
        corr, lag = verify((a.leads, a.values), (b.leads, b.values), rows_a, rows_b, max_lag)
        good = corr >= threshold
        near = pl.DataFrame({"a": rows_a[good], "b": rows_b[good], "corr": corr[good], "lag": lag[good]})
        if stats["skipped_keys"]:
            notes.append(
                f"{stats['skipped_keys']} index keys shared by more than {max_bucket_pairs} window pairs "
                f"were skipped ({stats['skipped_pairs']} pairs; degenerate sketches such as flat windows)"
            )
    side_a = a.ids.select(pl.col("row").cast(pl.Int64).alias("a"), "dataset", "record_id")
    side_b = b.ids.select(pl.col("row").cast(pl.Int64).alias("b"), "dataset", "record_id")
    near_records = (
        near.join(side_a, on="a")
        .join(side_b, on="b", suffix="_b")
        .group_by("dataset", "record_id", "dataset_b", "record_id_b")
        .agg(
            pl.col("corr").max(),
            pl.col("lag").sort_by("corr").last(),
            pl.len().alias("windows"),
        )
        .rename(
            {"dataset": "a_dataset", "record_id": "a_record_id", "dataset_b": "b_dataset", "record_id_b": "b_record_id"}
        )
        .with_columns(pl.lit("near").alias("kind"))
    )
    keys = ["a_dataset", "a_record_id", "b_dataset", "b_record_id"]
    exact = exact.join(near_records.select(*keys, "windows"), on=keys, how="left")
    near_records = near_records.join(exact.select(keys), on=keys, how="anti")
    rec_a, rec_b = _records(a.ids), _records(b.ids)
    pairs = (
        pl.concat([exact.select(near_records.columns), near_records], how="vertical_relaxed")
        .join(_side(rec_a, "a"), on=["a_dataset", "a_record_id"])
        .join(_side(rec_b, "b"), on=["b_dataset", "b_record_id"])
        .with_columns(
            pl.col("windows").fill_null(0).cast(pl.Int64),
            (pl.col("lag") / F.SKETCH_HZ).alias("lag_s"),
        )
        .select(list(PAIR_SCHEMA))
        .cast(PAIR_SCHEMA)
        .sort("kind", "a_dataset", "a_record_id", "b_dataset", "b_record_id")
    )
    summary = {
        "store_a": a.store,
        "store_b": b.store,
        "windows_a": a.ids.height,
        "windows_b": b.ids.height,
        "records_a": rec_a.height,
        "records_b": rec_b.height,
        "fingerprints_a": a.source,
        "fingerprints_b": b.source,
        "threshold": threshold,
        "max_lag_s": max_lag / F.SKETCH_HZ,
        "pairs": pairs.height,
        "exact": int((pairs["kind"] == "exact").sum()),
        "near": int((pairs["kind"] == "near").sum()),
        "records_a_overlapping": pairs.select("a_dataset", "a_record_id").unique().height,
        "records_b_overlapping": pairs.select("b_dataset", "b_record_id").unique().height,
        **{f"index_{k}": v for k, v in stats.items()},
        "seconds": round(time.perf_counter() - started, 3),
        "notes": notes,
    }
    return OverlapReport(pairs, summary)


def overlap(
    store_a: str,
    store_b: str,
    *,
    threshold: float = THRESHOLD,
    storage_options: StorageOptions | None = None,
    storage_options_b: StorageOptions | None = None,
) -> OverlapReport:
    """Record pairs of two stores that hold the same recording: exact copies and near ones."""
    a = load(store_a, storage_options)
    b = load(store_b, storage_options if storage_options_b is None else storage_options_b)
    return compare(a, b, threshold=threshold)


def write_report(report: OverlapReport, out: str | Path) -> tuple[Path, Path]:
    """``out/overlap.parquet`` (the record pairs) and ``out/overlap.json`` (the summary)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table, summary = folder / "overlap.parquet", folder / "overlap.json"
    report.pairs.write_parquet(table)
    summary.write_text(json.dumps(report.summary, indent=2, sort_keys=True) + "\n")
    return table, summary


# ---- using it: exclusion and warnings -----------------------------------------------------------------


def _real_subject(subject: pl.Expr, record: pl.Expr) -> pl.Expr:
    """A subject id that identifies a person, not just the record (Challenge records have no patient ids)."""
    return subject.is_not_null() & (subject != record)


def kept_rows(
    store: str, exclude: list[str], storage_options: StorageOptions | None = None, *, threshold: float = THRESHOLD
) -> tuple[np.ndarray, dict]:
    """The manifest rows of ``store`` left when its records that overlap any store of ``exclude`` are dropped.

    A dropped record takes every record of its subject with it where the store's ids allow (its
    ``subject_id`` is set and is not the record id).  Returns ``(rows, summary)``; the summary
    says, per excluded store, the records and subjects dropped and the rows left.
    """
    mine = load(store, storage_options)
    ids = mine.ids
    drop_records = pl.DataFrame(schema={"dataset": pl.String, "record_id": pl.String})
    per_store = []
    for other in exclude:
        report = compare(mine, load(other, storage_options), threshold=threshold)
        found = report.pairs.select(pl.col("a_dataset").alias("dataset"), pl.col("a_record_id").alias("record_id"))
        drop_records = pl.concat([drop_records, found]).unique()
        summary = report.summary
        per_store.append({"store": other, "records": found.unique().height, "exact": summary["exact"],
                          "near": summary["near"]})  # fmt: skip
    matched = ids.join(drop_records, on=["dataset", "record_id"], how="semi")
    subjects = (
        matched.filter(_real_subject(pl.col("subject_id"), pl.col("record_id")))
        .select("dataset", "subject_id")
        .unique()
    )
    by_record = ids.join(drop_records, on=["dataset", "record_id"], how="semi")
    by_subject = ids.join(subjects, on=["dataset", "subject_id"], how="semi")
    gone = pl.concat([by_record, by_subject]).unique("row")
    rows = np.setdiff1d(ids["row"].to_numpy(), gone["row"].to_numpy()).astype(np.int64)
    summary = {
        "store": store,
        "exclude": per_store,
        "records_overlapping": drop_records.height,
        "subjects_dropped": subjects.height,
        "records_dropped": gone.select("dataset", "record_id").unique().height,
        "rows_dropped": gone.height,
        "rows_kept": len(rows),
    }
    return rows, summary


def _run_folder(weights: str) -> Path | None:
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    return folder if (folder / "config.json").is_file() else None


def pretraining_stores(weights: str) -> tuple[list[str], list[str]]:
    """``(stores trained on, stores excluded)`` of the pretraining run that wrote ``weights`` (none when unknown)."""
    folder = _run_folder(weights)
    if folder is None:
        return [], []
    try:
        config = json.loads((folder / "config.json").read_text())
    except ValueError:
        return [], []
    if not isinstance(config, dict):
        return [], []
    stores = config.get("stores") or [config.get("store")]
    stores = [s for s in (stores if isinstance(stores, list) else [stores]) if s]
    return stores, list(config.get("exclude") or [])


def _same(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def pretraining_overlap(
    store: str, weights: list[str], storage_options: StorageOptions | None = None, *, warn: bool = True
) -> list[str]:
    """Warnings (also issued with :func:`warnings.warn`) for each pretraining store of ``weights``' runs that
    shares recordings with ``store``; a store the run excluded, or the lack of a run folder, gives none."""
    messages = []
    for path in weights:
        stores, excluded = pretraining_stores(path)
        if any(_same(store, e) for e in excluded):
            continue
        for other in stores:
            try:
                report = overlap(store, other, storage_options=storage_options)
            except (FileNotFoundError, OSError) as error:
                messages.append(f"could not compare {store} with pretraining store {other}: {error}")
                continue
            s = report.summary
            if s["pairs"]:
                messages.append(
                    f"{store} shares {s['records_a_overlapping']} of its {s['records_a']} records with {other}, "
                    f"which {path} was pretrained on ({s['exact']} exact, {s['near']} near copies): the evaluation "
                    f"tests on recordings the encoder trained on; pretrain with --exclude {store} to avoid it"
                )
    if warn:
        for message in messages:
            warnings.warn(message, stacklevel=2)
    return messages


def print_report(report: OverlapReport, console=None, show: int = 20) -> None:
    """What was found: counts, then up to ``show`` record pairs (exact first, then by correlation)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = report.summary
    console.print(
        f"{s['store_a']}: {s['records_a']} records ({s['windows_a']} windows); "
        f"{s['store_b']}: {s['records_b']} records ({s['windows_b']} windows)",
        soft_wrap=True,
    )
    console.print(
        f"{s['pairs']} record pairs hold the same recording: {s['exact']} exact (same source signal), "
        f"{s['near']} near (sketch correlation ≥ {s['threshold']:g}); {s['records_a_overlapping']} records of A, "
        f"{s['records_b_overlapping']} of B; {s['index_candidates']} candidate window pairs verified "
        f"in {s['seconds']:.1f} s",
        soft_wrap=True,
    )
    for note in s["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    if not report.pairs.height or show <= 0:
        return
    table = Table(title=f"record pairs (first {min(show, report.pairs.height)} of {report.pairs.height})")
    for column in ("kind", "corr", "A record", "A subject", "B record", "B subject", "windows", "lag s"):
        table.add_column(column, no_wrap=True)
    ordered = report.pairs.sort(["kind", "corr"], descending=[False, True]).head(show)
    for r in ordered.iter_rows(named=True):
        table.add_row(r["kind"], f"{r['corr']:.4f}", f"{r['a_dataset']}/{r['a_record_id']}", r["a_subject_id"] or "–",
                      f"{r['b_dataset']}/{r['b_record_id']}", r["b_subject_id"] or "–", str(r["windows"]),
                      f"{r['lag_s']:+.2f}")  # fmt: skip
    console.print(table)
