"""The reader contract, checked for every corpus of the registry (as MNE-Python's ``_test_raw_reader``).

Each corpus is read from its generator's output and, where ``../shared/data`` has one, from the
real files.  A corpus added to the registry gets every test here without a line of its own:

* listing: ids unique, the same order on every listing and through ``memory://``, items picklable;
* reading a subset of items equals the matching part of a full read;
* the same records through ``memory://`` as from the local folder;
* channel names, units, rates and amplitudes physiologically sane (ECG in mV, EEG in µV);
* broken signal files become rejects with reasons, never exceptions.
"""

from __future__ import annotations

import pickle
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from physiofm import corpora
from physiofm.corpora import Reader, Record, Reject
from physiofm.preprocess.recipe import load_recipe
from physiofm.units import MICROVOLTS

GENERATED = corpora.names()
REAL = {"challenge": "physionet-challenge-2021", "ptbxl": "ptb-xl", "wfdb": "wfdb-software-data", "edf": "eegmmidb"}
SIGNAL_FILES = (".dat", ".mat", ".hdf5", ".bdf", ".edf")
# Robust amplitude (99th percentile of |x - channel median|) that a real recording of each modality has.
AMPLITUDE = {"ecg": ("mV", 0.05, 20.0), "eeg": ("uV", 1.0, 2000.0)}
CASES = [(name, "generated") for name in GENERATED] + [(name, "real") for name in REAL]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, request):
    """``(corpus, origin) -> root``, made on first use."""
    made: dict[tuple[str, str], Path] = {}

    def get(name: str, origin: str) -> Path:
        if (name, origin) not in made:
            if origin == "real":
                made[name, origin] = request.getfixturevalue("shared_data") / REAL[name]
            else:
                corpus = corpora.get(name)
                size = 6 if corpus.size == "records" else 2
                made[name, origin] = Path(corpus.generate(tmp_path_factory.mktemp(name), size, seed=3))
        return made[name, origin]

    return get


def read_all(name: str, root, items=None) -> list[Record | Reject]:
    reader = corpora.get(name).reader
    return list(reader.read(str(root), reader.list_items(str(root)) if items is None else items))


def same_records(a: list[Record | Reject], b: list[Record | Reject]) -> None:
    assert [type(x).__name__ for x in a] == [type(x).__name__ for x in b]
    for x, y in zip(a, b):
        if isinstance(x, Reject):
            assert (x.record_id, x.stage, x.reason) == (y.record_id, y.stage, y.reason)
            continue
        assert (x.record_id, x.subject_id, x.meta) == (y.record_id, y.subject_id, y.meta)
        assert x.signals.keys() == y.signals.keys()
        for modality, signal in x.signals.items():
            other = y.signals[modality]
            assert (signal.channels, signal.fs, signal.unit) == (other.channels, other.fs, other.unit)
            np.testing.assert_array_equal(signal.data, other.data)


def to_memory(root: Path) -> str:
    """Copy a local tree into fsspec's memory filesystem (under the same folder name); return its URL."""
    memory = fsspec.filesystem("memory")
    base = f"/conformance-{uuid.uuid4().hex[:8]}/{root.name}"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        memory.pipe(f"{base}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return f"memory://{base}"


@pytest.mark.parametrize("name", GENERATED)
def test_registry_entry_is_complete(name):
    corpus = corpora.get(name)
    assert corpus.kind in corpora.KINDS
    assert isinstance(corpus.reader, Reader) and corpus.reader.NAME == name
    load_recipe(corpus.recipe)  # the default recipe exists and resolves
    module, function = corpus.generator.split(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))


@pytest.mark.parametrize(("name", "origin"), CASES)
def test_listing_is_stable_unique_and_picklable(name, origin, sources):
    root = str(sources(name, origin))
    reader = corpora.get(name).reader
    assert reader.detect(root)
    items = reader.list_items(root)
    assert items, f"{name}: nothing listed in {root}"
    assert len({item.id for item in items}) == len(items)
    assert reader.list_items(root) == items
    assert pickle.loads(pickle.dumps(items)) == items


@pytest.mark.parametrize(("name", "origin"), CASES)
def test_a_subset_reads_as_the_same_part_of_a_full_read(name, origin, sources):
    root = str(sources(name, origin))
    reader = corpora.get(name).reader
    items = reader.list_items(root)
    full = read_all(name, root, items)
    assert any(isinstance(r, Record) for r in full), f"{name}: no record read from {root}"
    half = max(1, len(items) // 2)
    same_records(read_all(name, root, items[:half]) + read_all(name, root, items[half:]), full)
    middle = items[len(items) // 2]
    alone = read_all(name, root, [middle])
    by_id = {r.record_id: r for r in full}
    same_records(alone, [by_id[r.record_id] for r in alone])


@pytest.mark.parametrize(("name", "origin"), CASES)
def test_memory_filesystem_reads_the_same_records(name, origin, sources):
    root = sources(name, origin)
    url = to_memory(root)
    reader = corpora.get(name).reader
    assert reader.detect(url)
    assert [(i.id, i.path) for i in reader.list_items(url)] == [(i.id, i.path) for i in reader.list_items(str(root))]
    same_records(read_all(name, url), read_all(name, root))


@pytest.mark.parametrize(("name", "origin"), CASES)
def test_channels_units_rates_and_amplitudes_are_sane(name, origin, sources):
    records = [r for r in read_all(name, sources(name, origin)) if isinstance(r, Record)]
    assert records
    for record in records:
        assert record.dataset == name and record.record_id and record.source
        for modality, signal in record.signals.items():
            where = f"{name} {record.record_id} {modality}"
            assert signal.channels and len(set(signal.channels)) == len(signal.channels), where
            assert all(isinstance(c, str) and c.strip() for c in signal.channels), where
            assert signal.unit.lower() in MICROVOLTS, where
            assert 50 <= signal.fs <= 5000, where
            unit, low, high = AMPLITUDE[modality]
            x = np.asarray(signal.data, dtype=np.float64) * MICROVOLTS[signal.unit.lower()] / MICROVOLTS[unit.lower()]
            finite = np.isfinite(x).all(axis=0)
            assert finite.any(), where
            x = x[:, finite]
            spread = np.percentile(np.abs(x - np.median(x, axis=1, keepdims=True)), 99, axis=1)
            live = spread[spread > 0]
            assert live.size, f"{where}: every channel is flat"
            assert low <= np.median(live) <= high, f"{where}: median robust amplitude {np.median(live):.3g} {unit}"


@pytest.mark.parametrize(("name", "origin"), CASES)
def test_broken_signal_files_become_rejects(name, origin, sources, tmp_path):
    root = tmp_path / sources(name, origin).name  # the same folder name (Challenge subsets come from it)
    shutil.copytree(sources(name, origin), root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SIGNAL_FILES)
    assert files, f"{name}: no signal file to break"
    truncated, garbage = files[0], files[-1]
    truncated.write_bytes(truncated.read_bytes()[: max(1, truncated.stat().st_size // 3)])
    if garbage != truncated:
        garbage.write_bytes(b"\x00garbage" * 64)
    results = read_all(name, root)  # never raises
    rejects = [r for r in results if isinstance(r, Reject)]
    assert rejects, f"{name}: breaking {truncated.name} and {garbage.name} produced no reject"
    assert all(r.reason and r.stage == "read" for r in rejects)
    clean = {r.record_id: r for r in read_all(name, sources(name, origin)) if isinstance(r, Record)}
    survivors = [r for r in results if isinstance(r, Record)]
    assert len(survivors) < len(clean)
    same_records(survivors, [clean[r.record_id] for r in survivors])  # read correctly, or rejected
