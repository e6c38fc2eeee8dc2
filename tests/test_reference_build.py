"""A pinned reference build: its shards, Zarr objects and tables must not change by accident.

Two small stores (an ECG store from generated Challenge records, a paired EEG+ECG store from
a generated DREAMER file) are built and every output is hashed: tar shards and Zarr objects
byte for byte; Parquet tables by their content (column names, dtypes and every value, so a
new Parquet writer version does not count as a change); ``build.json`` without the fields
that name the machine (source path, library versions).

A change that is *meant* to change the bytes (a new transform, a recipe version) updates
``PINNED`` below in the same commit, and says so.  History of intended changes:

* issue 12: the manifest gained ``ecg_skipped`` (also in each sample's ``.json``, so the tar shards'
  bytes changed) and ``build.json`` an ``amplitude`` section; every ``.npy`` member and Zarr chunk is
  unchanged (checked by hashing them against the previous build).
* issue 13: ``build.json`` records every table (size, sha256, columns) and a new ``zarr.parquet`` indexes the
  Zarr objects; issue 15: nullable EEG columns in the manifest schema.  Arrays unchanged.
* issue 16: recipes ``ecg`` and ``emotion`` version 2 (``method = "fft"``: resampling and the zero-phase
  filters in one FFT, tests/test_transforms.py states the tolerance), so every ``.npy`` member and Zarr
  chunk changed, with the recipe in ``build.json``, the shards' sha256 in ``shards.parquet`` and the
  objects' in ``zarr.parquet``; every quality flag, key and label is unchanged.  With
  ``method = "sosfiltfilt"`` every array is byte-identical to version 1 (checked by digest).  Zarr shard
  objects are now written directly (tests/test_zarr_shards.py): the same bytes.  (Pinned together with
  issue 17's ``fp_signal``/``fp_sketch`` manifest columns, which were in the tree at the time.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

# sha256 of each store's digest listing, as printed by `python tests/test_reference_build.py`.
PINNED = {
    "ecg": "39fb5b4b1a76a2b08fd282b335bc42a3d32599e9c956a2e5a38e9ba8b615551d",
    "emotion": "fe7d3cb219afc8ee77e6561e8a64cac4060de04a53f15a90c0097ab562050b60",
}
VOLATILE = ("source", "versions")  # build.json fields that depend on the machine, not on the build


def table_digest(path: Path) -> str:
    df = pl.read_parquet(path)
    body = {"schema": [[name, str(dtype)] for name, dtype in df.schema.items()], "rows": df.rows()}
    return hashlib.sha256(json.dumps(body, default=str, sort_keys=True).encode()).hexdigest()


def store_digests(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file of a store (tables by content)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.suffix == ".parquet":
            out[rel] = table_digest(path)
        elif rel == "build.json":
            info = {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
            out[rel] = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def listing_hash(digests: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(digests.items())).encode()).hexdigest()


def build_reference(kind: str, root: Path) -> Path:
    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_challenge
    from physiofm.synth.emotion import synth_dreamer

    if kind == "ecg":
        src = synth_challenge(root / "raw", n_records=30, seed=11, subsets=("georgia", "ptb-xl"))
        build(str(src), str(root / "store"), jobs=1, shard_size=12)
    else:
        src = synth_dreamer(root / "raw", subjects=2, seed=11, clip_seconds=(20.0, 24.0))
        build(str(src), str(root / "store"), kind="emotion", jobs=1, shard_size=16)
    return root / "store"


@pytest.mark.parametrize("kind", ["ecg", "emotion"])
def test_reference_build_is_byte_identical(kind, tmp_path):
    store = build_reference(kind, tmp_path)
    digests = store_digests(store)
    assert any(name.startswith("wds/") for name in digests) and any(name.startswith("zarr/") for name in digests)
    assert listing_hash(digests) == PINNED[kind], (
        f"the {kind} reference build changed; if that is intended, pin the new hash "
        f"(python tests/test_reference_build.py) and say why in the commit:\n"
        + "\n".join(f"  {k} {v[:16]}" for k, v in digests.items())
    )


if __name__ == "__main__":
    import tempfile

    for name in PINNED:
        with tempfile.TemporaryDirectory() as folder:
            print(name, listing_hash(store_digests(build_reference(name, Path(folder)))))
