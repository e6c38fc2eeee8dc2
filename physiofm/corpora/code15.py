"""CODE-15%: ``exams.csv`` + ``exams_part*.hdf5`` (``tracings`` (N, 4096, 12) float32 at 400 Hz).

Rows are matched to the CSV by ``exam_id`` (not position); the last row of every part is
zero padding and is skipped; short exams are zero-padded in the file and the padding is
stripped before windowing (the recipe then keeps a last window of ≥ 7 s).

Units: the values are mV, and the reader returns them as stored (``VALUE_TO_MV = 1.0``).  The
README's sentence "represented … at the scale 1e-4V: so if the signal is in V it should be
multiplied by 1000" contradicts itself; the authors answer "just make sure your ECG is scaled as
millivolts" (antonior92/automatic-ecg-diagnosis#3, #10).  Reading it as 1e-4 V per unit (× 0.1,
what physiofm did before) makes CODE-15% ten times smaller than PTB-XL or the Challenge.
Caveat: a user's comparison over 100,000 exams found CODE-15% maxima about 2× those of other
archives read in mV (antonior92/ecg-age-prediction#5; an empirical factor of 0.5 aligned them),
so "mV" is the authors' word, not an exact calibration.  A build that wants another factor sets
it in its recipe, ``[source] scale`` (``manifests/recipes/code15.toml``, default 1.0), which the
ECG preparer multiplies into every value; ``physiofm validate`` warns when a store's R peaks or
lead amplitudes are far from physiological (see :mod:`physiofm.store.amplitude`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import groupby

import numpy as np
import polars as pl

from physiofm.corpora.base import Item, Record, Reject, Signal
from physiofm.io import join, url_to_fs

NAME = "code15"
FS = 400.0
LEADS = ["DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
VALUE_TO_MV = 1.0  # tracings are mV (the authors; see the module docstring); not 1e-4 V per unit
LABELS = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF", "normal_ecg")


def _h5(handle):
    """``h5py.File`` of an open handle; h5py (~0.2 s to import) is imported only where an archive is read,
    not by every ECG build that tries the layouts in turn."""
    import h5py

    return h5py.File(handle, "r")


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    return fs.exists(join(base, "exams.csv")) and bool(fs.glob(join(base, "*.hdf5")))


def _bool(value: str | None) -> bool | None:
    return {"true": True, "false": False, "1": True, "0": False}.get((value or "").strip().lower())


def _float(value: str | None) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def list_items(root: str) -> list[Item]:
    fs, base = url_to_fs(root)
    with fs.open(join(base, "exams.csv"), "rb") as handle:
        exams = pl.read_csv(handle, infer_schema_length=0)
    rows: dict[str, dict[int, int]] = {}
    for path in sorted(fs.glob(join(base, "*.hdf5"))):
        try:
            with fs.open(path, "rb") as handle, _h5(handle) as h5:
                ids = h5["exam_id"][:]
        except (OSError, KeyError, ValueError):  # the part's exams are rejected when read, with the reason
            continue
        rows[path.rsplit("/", 1)[-1]] = {int(e): i for i, e in enumerate(ids) if e != 0}
    items = []
    for row in exams.iter_rows(named=True):
        part = row["trace_file"]
        index = rows.get(part, {}).get(int(row["exam_id"]), -1)
        meta = {
            "age": _float(row.get("age")),
            "sex": {True: "male", False: "female"}.get(_bool(row.get("is_male"))),
            "nn_predicted_age": _float(row.get("nn_predicted_age")),
            "death": _bool(row.get("death")),
            "timey": _float(row.get("timey")),
        }
        meta.update({label: _bool(row.get(label)) for label in LABELS})
        items.append(Item(id=row["exam_id"], path=part, extra=(index, row.get("patient_id"), json.dumps(meta))))
    return sorted(items, key=lambda item: (item.path, item.extra[0]))


def _strip_padding(tracing: np.ndarray) -> np.ndarray:
    """(12, T) without the all-zero columns before the first and after the last sample."""
    nonzero = np.flatnonzero(np.any(tracing != 0, axis=0))
    return tracing[:, nonzero[0] : nonzero[-1] + 1] if len(nonzero) else tracing[:, :0]


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    fs, base = url_to_fs(root)
    for part, group in groupby(items, key=lambda item: item.path):
        group = list(group)
        present = [item for item in group if item.extra[0] >= 0]
        try:
            with fs.open(join(base, part), "rb") as handle, _h5(handle) as h5:
                tracings = h5["tracings"][sorted({item.extra[0] for item in present})] if present else None
        except FileNotFoundError:
            for item in group:
                yield Reject(NAME, part, "read", f"missing HDF5 part {part}", item.id)
            continue
        except (OSError, KeyError, ValueError) as error:
            for item in group:
                yield Reject(
                    NAME, part, "read", f"unreadable HDF5 part {part}: {type(error).__name__}: {error}", item.id
                )
            continue
        for item in group:
            if item.extra[0] < 0:
                yield Reject(NAME, part, "read", f"exam_id {item.id} is not in {part}", item.id)
        if not present:
            continue
        position = {row: i for i, row in enumerate(sorted({item.extra[0] for item in present}))}
        for item in present:
            tracing = _strip_padding(tracings[position[item.extra[0]]].T)
            if tracing.shape[1] == 0:
                yield Reject(NAME, part, "read", "all-zero tracing", item.id)
                continue
            values = tracing * VALUE_TO_MV if VALUE_TO_MV != 1.0 else tracing
            signal = Signal(np.ascontiguousarray(values, dtype=np.float32), FS, LEADS, "mV")
            yield Record(NAME, item.id, part, {"ecg": signal}, item.extra[1], json.loads(item.extra[2]))
