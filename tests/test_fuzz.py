"""A seeded fuzz test of the WFDB-family readers and the build, on the real recordings of ``../shared/data``.

Three real sources, copied into a temporary folder: the Challenge 2021 records (``.hea`` + MATLAB v4
``.mat``, the format-16 fast path), the PTB-XL record (``records100``, format-16 ``.dat``) and MIT-BIH
``100s`` (format 212, read through ``wfdb``); the PTB-XL and MIT-BIH records are copied into three
folders each so that every source has at least three records.  Each case mutates one record (byte
flips in the header or the signal file, truncations, deleted and swapped header fields, absurd sample
counts, rates, gains, offsets, skews and formats, non-ASCII names, …), then reads a folder holding the
mutated record and two unmutated ones, and checks:

* nothing raises, nothing hangs (a time bound per case);
* the mutated record is either read (with its clean data where the mutation cannot change it, the
  change the mutation implies where it does, a sane shape otherwise) or rejected with a reason;
* the unmutated records are read exactly as a clean read reads them.

A seeded subset of the cases runs the whole build (``physiofm.store.build.build``) instead and compares
the unmutated records' samples with a clean build's, tar member by tar member (by key: a rejected
record shifts rows).  A header that claims 10^12 samples is read in a subprocess whose peak memory is
measured.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from physiofm import corpora
from physiofm.corpora.base import Record, Reject
from physiofm.store.build import build

REPO = Path(__file__).resolve().parent.parent
SEED = 20240611
N_CASES = 330  # reader-level cases (every source, every mutation kind, then seeded draws)
BUILD_EVERY = 7  # every 7th case also runs the whole build: 48 builds
CASE_SECONDS = 20.0  # a case that takes longer hangs (a clean case takes well under a second)

# corpus -> {record id: (header path here, signal path here, the shared record it is a copy of)}
SOURCES = {
    "challenge": {
        rid: (f"{rid}.hea", f"{rid}.mat", f"physionet-challenge-2021/{rid}")
        for rid in ("E07500", "HR06000", "HR06001", "JS20000")
    },
    "ptbxl": {
        f"records100/0000{k}/00001_lr": (
            f"records100/0000{k}/00001_lr.hea",
            f"records100/0000{k}/00001_lr.dat",
            "ptb-xl/records100/00000/00001_lr",
        )
        for k in range(3)
    },
    "wfdb": {f"r{k}/100s": (f"r{k}/100s.hea", f"r{k}/100s.dat", "wfdb-software-data/100s") for k in range(3)},
}
SIGNAL_SUFFIX = {"challenge": ".mat", "ptbxl": ".dat", "wfdb": ".dat"}


@dataclass(frozen=True)
class Expect:
    """What a mutation allows: ``kind`` and its parameter.

    * ``any``: read with a sane shape, or rejected with a reason;
    * ``shape``: as ``any``, and if read, the clean shape;
    * ``same``: if read, the clean data, channels and rate (the mutation cannot change them);
    * ``same_data``: if read, the clean data and channels (the rate is ``param``);
    * ``prefix``: if read, the first ``param`` samples of the clean data;
    * ``scaled``: if read, the clean data times ``param`` (one factor per channel);
    * ``negated``: if read, the clean data with the rows ``param`` negated (bit for bit);
    * ``reject``: rejected with a reason; ``truncated``: rejected as a truncated signal file.

    ``read``: the mutated record must be read, not rejected.
    """

    kind: str
    param: object = None
    read: bool = False  # the record must be read (nothing in the mutation is a reason to reject it)


@dataclass(frozen=True)
class Case:
    index: int
    corpus: str
    mutated: str  # record id
    others: tuple[str, str]
    mutation: str
    header: bytes
    signal: bytes
    expect: Expect
    what: str  # a person-readable description of the mutation


# ---- mutations -----------------------------------------------------------------------------------
# Each takes (rng, header text, signal bytes, clean record) and returns (header, signal, Expect, what).
# Header text is latin-1 (as the readers decode it), so any character below U+0100 is one byte.


def _split(text: str) -> tuple[list[str], str]:
    newline = "\r\n" if "\r\n" in text else "\n"
    return text.split(newline), newline


def _join(lines: list[str], newline: str) -> str:
    return newline.join(lines)


def _body_index(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]


def _n_sig(lines: list[str]) -> int:
    return int(lines[_body_index(lines)[0]].split()[1])


def _signal_lines(lines: list[str]) -> list[int]:
    body = _body_index(lines)
    return body[1 : 1 + _n_sig(lines)]


def _replace_token(line: str, position: int, value: str) -> str:
    tokens = line.split()
    tokens[position] = value
    return " ".join(tokens)


def _non_ascii(rng, n: int = 3) -> str:
    """Latin-1 characters above 127 (``é``, ``ß``, NBSP, ``\\x85``…), as a latin-1 decode of any byte gives."""
    return "".join(chr(int(c)) for c in rng.integers(0x80, 0x100, size=n))


def header_flip(rng, text, sig, clean):
    raw = bytearray(text.encode("latin-1"))
    spots = rng.integers(0, len(raw), size=int(rng.integers(1, 5)))
    for at in spots:
        raw[at] ^= 1 << int(rng.integers(0, 8))
    return raw.decode("latin-1"), sig, Expect("any"), f"header bits flipped at {sorted(spots.tolist())}"


def signal_flip(rng, text, sig, clean):
    raw = bytearray(sig)
    spots = rng.integers(0, len(raw), size=int(rng.integers(1, 9)))
    for at in spots:
        raw[at] ^= int(rng.integers(1, 256))
    return text, bytes(raw), Expect("shape"), f"signal bytes changed at {sorted(spots.tolist())}"


def signal_truncate(rng, text, sig, clean):
    keep = int(rng.choice([0, 1, 19, 20, 24, 25, len(sig) // 2, len(sig) - 1, int(rng.integers(0, len(sig)))]))
    return text, sig[:keep], Expect("truncated"), f"signal file cut to {keep} of {len(sig)} bytes"


def header_truncate(rng, text, sig, clean):
    keep = int(rng.integers(0, len(text)))
    return text[:keep], sig, Expect("any"), f"header cut to {keep} of {len(text)} characters"


def field_delete(rng, text, sig, clean):
    lines, nl = _split(text)
    at = int(rng.choice(_body_index(lines)))
    tokens = lines[at].split()
    gone = int(rng.integers(0, len(tokens)))
    lines[at] = " ".join(tokens[:gone] + tokens[gone + 1 :])
    return _join(lines, nl), sig, Expect("any"), f"token {gone} of line {at} deleted"


def field_swap(rng, text, sig, clean):
    lines, nl = _split(text)
    at = int(rng.choice(_body_index(lines)))
    tokens = lines[at].split()
    i, j = (int(x) for x in rng.choice(len(tokens), size=2, replace=False))
    tokens[i], tokens[j] = tokens[j], tokens[i]
    lines[at] = " ".join(tokens)
    return _join(lines, nl), sig, Expect("any"), f"tokens {i} and {j} of line {at} swapped"


ABSURD_COUNTS = [
    "1000000000000", "1000000000000000000", str(2**63), str(2**64 + 1), "99999999999999999999999",
    "-1", "0", "nan", "inf", "-inf", "1.5", "1e12", "0x10",
]  # fmt: skip


def absurd_count(rng, text, sig, clean):
    lines, nl = _split(text)
    first = _body_index(lines)[0]
    value = str(rng.choice(ABSURD_COUNTS))
    lines[first] = _replace_token(lines[first], 3, value)
    return _join(lines, nl), sig, Expect("reject"), f"sample count {value}"


def shorter_count(rng, text, sig, clean):
    lines, nl = _split(text)
    first = _body_index(lines)[0]
    n = clean.data.shape[1]
    value = int(rng.integers(1, n))
    lines[first] = _replace_token(lines[first], 3, str(value))
    # a Challenge .mat states its own size: a header that disagrees with it is rejected
    expect = Expect("prefix", value, read=not sig.startswith(b"\x1e\x00\x00\x00"))
    return _join(lines, nl), sig, expect, f"sample count {value} of {n}"


ABSURD_RATES = ["0", "-1", "-360", "1e9", "100001", "nan", "inf", "-inf", "1e-9", "0/0", "0(0)", "1e400"]
PLAUSIBLE_RATES = ["250", "1000", "128", "360/1000(0)"]


def absurd_rate(rng, text, sig, clean):
    lines, nl = _split(text)
    first = _body_index(lines)[0]
    value = str(rng.choice(ABSURD_RATES))
    lines[first] = _replace_token(lines[first], 2, value)
    return _join(lines, nl), sig, Expect("reject"), f"sampling rate {value}"


def other_rate(rng, text, sig, clean):
    lines, nl = _split(text)
    first = _body_index(lines)[0]
    value = str(rng.choice(PLAUSIBLE_RATES))
    lines[first] = _replace_token(lines[first], 2, value)
    rate = float(value.split("/")[0])
    return _join(lines, nl), sig, Expect("same_data", rate, read=True), f"sampling rate {value}"


def _gain_parts(token: str) -> tuple[float, str]:
    """``1000.0(0)/mV`` -> (1000.0, ``(0)/mV``)."""
    cut = min([i for i in (token.find("("), token.find("/")) if i >= 0] or [len(token)])
    return float(token[:cut]), token[cut:]


def _rows(rng, n: int) -> list[int]:
    if rng.random() < 0.5:
        return list(range(n))
    return sorted(int(i) for i in rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False))


def gain_zero(rng, text, sig, clean):
    lines, nl = _split(text)
    rows = _rows(rng, _n_sig(lines))
    factors = np.ones(len(clean.channels))
    for row, at in enumerate(_signal_lines(lines)):
        if row in rows:
            gain, rest = _gain_parts(lines[at].split()[2])
            lines[at] = _replace_token(lines[at], 2, str(rng.choice(["0", "0.0", "-0"])) + rest)
            factors[row] = gain / 200.0  # WFDB: gain 0 means 200
    expect = Expect("same", read=True) if (factors == 1).all() else Expect("scaled", tuple(factors.tolist()), True)
    return _join(lines, nl), sig, expect, f"gain 0 in rows {rows}"


def gain_negative(rng, text, sig, clean):
    lines, nl = _split(text)
    rows = _rows(rng, _n_sig(lines))
    for row, at in enumerate(_signal_lines(lines)):
        if row in rows:
            token = lines[at].split()[2]
            lines[at] = _replace_token(lines[at], 2, "-" + token)
    return _join(lines, nl), sig, Expect("negated", rows, read=True), f"gain negated in rows {rows}"


BAD_GAINS = ["1e999", "nan", "inf", "-1e999", "1e-320", "abc", "200(x)/mV", "200(nan)", "1000(1e999)/mV", "1e3(/mV"]


def gain_garbage(rng, text, sig, clean):
    lines, nl = _split(text)
    at = int(rng.choice(_signal_lines(lines)))
    value = str(rng.choice(BAD_GAINS))
    lines[at] = _replace_token(lines[at], 2, value)
    return _join(lines, nl), sig, Expect("reject"), f"gain {value} in line {at}"


def record_name_non_ascii(rng, text, sig, clean):
    lines, nl = _split(text)
    first = _body_index(lines)[0]
    name = lines[first].split()[0]
    at = int(rng.integers(0, len(name) + 1))
    lines[first] = _replace_token(lines[first], 0, name[:at] + _non_ascii(rng) + name[at:])
    return _join(lines, nl), sig, Expect("same", read=True), "non-ASCII record name"


def channel_name_non_ascii(rng, text, sig, clean):
    lines, nl = _split(text)
    rows = _rows(rng, _n_sig(lines))
    for row, at in enumerate(_signal_lines(lines)):
        if row in rows:
            tokens = lines[at].split()
            where = int(rng.integers(0, len(tokens[-1]) + 1))
            tokens[-1] = tokens[-1][:where] + _non_ascii(rng) + tokens[-1][where:]
            lines[at] = " ".join(tokens)
    return _join(lines, nl), sig, Expect("any"), f"non-ASCII channel names in rows {rows}"


def comments_non_ascii(rng, text, sig, clean):
    lines, nl = _split(text)
    extra = [f"#{_non_ascii(rng, 8)}", f"# Âge: {_non_ascii(rng)}", "#", "#:::", f"#Dx: {_non_ascii(rng, 4)},,"]
    for line in extra:
        lines.insert(int(rng.integers(1, len(lines) + 1)), line)
    return _join(lines, nl), sig, Expect("same", read=True), "comment lines added"


UNITS = ["NU", "mmHg", "uV", "µV", "V", "nV", "%", "bpm", "mv", "MV", "?", "é"]


def unit_change(rng, text, sig, clean):
    lines, nl = _split(text)
    rows = _rows(rng, _n_sig(lines))
    units = []
    for row, at in enumerate(_signal_lines(lines)):
        if row in rows:
            gain, rest = _gain_parts(lines[at].split()[2])
            unit = str(rng.choice(UNITS))
            units.append(unit)
            baseline = rest.split("/")[0] if rest.startswith("(") else ""
            lines[at] = _replace_token(lines[at], 2, f"{gain:g}{baseline}/{unit}")
    return _join(lines, nl), sig, Expect("any"), f"units {units} in rows {rows}"


def signal_count(rng, text, sig, clean):
    lines, nl = _split(text)
    first = _body_index(lines)[0]
    n = _n_sig(lines)
    value = rng.choice([str(n - 1), str(n + 1), "0", "-1", "1000000000000", "x", str(2**64)])
    lines[first] = _replace_token(lines[first], 1, str(value))
    return _join(lines, nl), sig, Expect("any" if value == str(n - 1) else "reject"), f"signal count {value}"


def byte_offset(rng, text, sig, clean):
    lines, nl = _split(text)
    rows = _rows(rng, _n_sig(lines))
    added = int(rng.choice([1, 2, 3, 1000, 10**12, 10**18]))
    for row, at in enumerate(_signal_lines(lines)):
        if row in rows:
            fmt = lines[at].split()[1]
            base, _, offset = fmt.partition("+")
            lines[at] = _replace_token(lines[at], 1, f"{base}+{int(offset or 0) + added}")
    # the files are exactly as long as their headers need: any offset further is past their end.
    # (An offset on some signals of a file only is not what wfdb reads: it takes the first signal's.)
    expect = Expect("reject") if 0 in rows else Expect("any")
    return _join(lines, nl), sig, expect, f"byte offset +{added} in rows {rows}"


FORMATS = ["8", "80", "16", "24", "32", "61", "160", "212", "310", "311", "508", "516", "524", "0", "999", "16x2"]


def format_change(rng, text, sig, clean):
    lines, nl = _split(text)
    rows = _rows(rng, _n_sig(lines))
    value = str(rng.choice(FORMATS))
    for row, at in enumerate(_signal_lines(lines)):
        if row in rows:
            fmt = lines[at].split()[1]
            _, plus, offset = fmt.partition("+")
            lines[at] = _replace_token(lines[at], 1, value + plus + offset)
    return _join(lines, nl), sig, Expect("any"), f"format {value} in rows {rows}"


def absurd_frame(rng, text, sig, clean):
    lines, nl = _split(text)
    at = int(rng.choice(_signal_lines(lines)))
    fmt = lines[at].split()[1]
    base, plus, offset = fmt.partition("+")
    value = str(rng.choice(["x1000000000000", ":1000000000000", "x0", ":99999999999999999999"]))
    lines[at] = _replace_token(lines[at], 1, base.split("x")[0].split(":")[0] + value + plus + offset)
    return _join(lines, nl), sig, Expect("reject"), f"format {base}{value} in line {at}"


def extra_lines(rng, text, sig, clean):
    lines, nl = _split(text)
    signal_lines = _signal_lines(lines)
    at = int(rng.choice(signal_lines))
    lines.insert(signal_lines[-1] + 1, lines[at])
    # lines past the announced signal lines are ignored, as real archives need
    return _join(lines, nl), sig, Expect("same", read=True), f"line {at} repeated after the signal lines"


def whitespace(rng, text, sig, clean):
    lines, nl = _split(text)
    choice = int(rng.integers(0, 3))
    if choice == 0:
        out = "\r".join(lines)  # old-Mac line ends
    elif choice == 1:
        out = ("\n" if nl == "\r\n" else "\r\n").join(lines)
    else:
        out = nl.join("  ".join(line.split(" ")) + "  " for line in lines)
    return out, sig, Expect("same", read=True), ["CR line ends", "other line ends", "double spaces"][choice]


def empty_files(rng, text, sig, clean):
    if rng.random() < 0.5:
        return "", sig, Expect("reject"), "empty header"
    return text, b"", Expect("truncated"), "empty signal file"


MUTATIONS = {
    f.__name__: f
    for f in (
        header_flip, signal_flip, signal_truncate, header_truncate, field_delete, field_swap, absurd_count,
        shorter_count, absurd_rate, other_rate, gain_zero, gain_negative, gain_garbage, record_name_non_ascii,
        channel_name_non_ascii, comments_non_ascii, unit_change, signal_count, byte_offset, format_change,
        absurd_frame, extra_lines, whitespace, empty_files,
    )
}  # fmt: skip
WEIGHTED = ["header_flip"] * 4 + ["signal_flip"] * 3 + ["field_delete", "field_swap", "header_truncate"] * 2


# ---- the clean sources ---------------------------------------------------------------------------


def write_source(root: Path, corpus: str, records: dict[str, tuple[bytes, bytes]]) -> Path:
    """A folder holding ``records`` (record id -> header bytes, signal bytes) of ``corpus``."""
    root.mkdir(parents=True)
    for rid, (header, sig) in records.items():
        header_path, signal_path, _ = SOURCES[corpus][rid]
        (root / header_path).parent.mkdir(parents=True, exist_ok=True)
        (root / header_path).write_bytes(header)
        (root / signal_path).write_bytes(sig)
    return root


def read_folder(corpus: str, root: Path) -> dict[str, Record | Reject]:
    reader = corpora.get(corpus).reader
    items = reader.list_items(str(root))
    out = list(reader.read(str(root), items))  # never raises
    assert [r.record_id for r in out] == [item.id for item in items]
    return {r.record_id: r for r in out}


def npy_members(store: Path) -> dict[str, bytes]:
    out = {}
    for shard in sorted((store / "wds").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".npy"):
                    out[member.name] = tar.extractfile(member).read()
    return out


def keys_by_record(store: Path) -> dict[str, list[str]]:
    manifest = pl.read_parquet(store / "manifest.parquet", columns=["key", "record_id"])
    out: dict[str, list[str]] = {}
    for key, rid in manifest.iter_rows():
        out.setdefault(rid, []).append(key)
    return out


def members_of(members: dict[str, bytes], keys: list[str]) -> dict[str, bytes]:
    return {name: data for name, data in members.items() if name.split(".", 1)[0] in keys}


@pytest.fixture(scope="module")
def pristine(shared_data, tmp_path_factory):
    """Per corpus: the clean files, the clean reads, and a clean build (its npy members and keys)."""
    root = tmp_path_factory.mktemp("fuzz-clean")
    out = {}
    for corpus, records in SOURCES.items():
        files = {}
        for rid, (_, _, shared) in records.items():
            files[rid] = (
                (shared_data / f"{shared}.hea").read_bytes(),
                (shared_data / f"{shared}{SIGNAL_SUFFIX[corpus]}").read_bytes(),
            )
        src = write_source(root / corpus / "src", corpus, files)
        reads = read_folder(corpus, src)
        assert all(isinstance(r, Record) for r in reads.values()), reads
        store = root / corpus / "store"
        build(str(src), str(store), fmt=corpus, jobs=1)
        keys = keys_by_record(store)
        assert sorted(keys) == sorted(records)  # every clean record gives samples
        out[corpus] = {"files": files, "reads": reads, "members": npy_members(store), "keys": keys}
    return out


def make_cases(pristine) -> list[Case]:
    rng = np.random.default_rng(SEED)
    corpus_names = list(SOURCES)
    plan = [(c, m) for m in MUTATIONS for c in corpus_names]  # every mutation on every source
    while len(plan) < N_CASES:
        names = list(MUTATIONS) + WEIGHTED
        plan.append((corpus_names[len(plan) % 3], names[int(rng.integers(0, len(names)))]))
    cases = []
    for index, (corpus, mutation) in enumerate(plan):
        case_rng = np.random.default_rng([SEED, index])
        ids = sorted(SOURCES[corpus])
        chosen = [ids[int(i)] for i in case_rng.choice(len(ids), size=3, replace=False)]
        mutated, others = chosen[0], (chosen[1], chosen[2])
        header, sig = pristine[corpus]["files"][mutated]
        clean = pristine[corpus]["reads"][mutated].signals["ecg"]
        text, new_sig, expect, what = MUTATIONS[mutation](case_rng, header.decode("latin-1"), sig, clean)
        cases.append(Case(index, corpus, mutated, others, mutation, text.encode("latin-1"), new_sig, expect, what))
    return cases


@pytest.fixture(scope="module")
def cases(pristine) -> list[Case]:
    return make_cases(pristine)


class Hang(BaseException):
    """Not an ``Exception``: a reader's ``except Exception`` must not turn a hang into a reject."""


@contextmanager
def time_bound(seconds: float, what: str):
    """Fail a case that runs longer than ``seconds`` (an alarm interrupts a hang in Python code)."""

    def alarm(signum, frame):
        raise Hang(f"{what} still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - started < seconds, what


def case_folder(case: Case, pristine, root: Path) -> Path:
    files = pristine[case.corpus]["files"]
    records = {rid: files[rid] for rid in case.others}
    records[case.mutated] = (case.header, case.signal)
    return write_source(root, case.corpus, records)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check_mutated(case: Case, got: Record | Reject, clean_record: Record) -> None:
    where = f"case {case.index} {case.corpus} {case.mutated}: {case.what} (expect {case.expect.kind})"
    kind, param = case.expect.kind, case.expect.param
    if isinstance(got, Reject):
        assert isinstance(got.reason, str) and got.reason.strip(), where
        assert not case.expect.read, f"{where}: rejected: {got.reason}"
        assert got.stage == "read" and got.record_id == case.mutated, where
        if kind == "truncated":
            assert "truncated signal file" in got.reason, f"{where}: {got.reason}"
        return
    assert isinstance(got, Record), f"{where}: {got!r}"
    assert kind not in ("reject", "truncated"), f"{where}: read, not rejected"
    ecg, clean = got.signals["ecg"], clean_record.signals["ecg"]
    assert ecg.data.ndim == 2 and ecg.data.shape[0] == len(ecg.channels) >= 1 and ecg.data.shape[1] >= 1, where
    assert ecg.data.dtype == np.float64, where
    assert np.isfinite(ecg.fs) and 0 < ecg.fs <= 100_000, where
    assert all(isinstance(c, str) for c in ecg.channels), where
    if kind == "shape":
        assert ecg.data.shape == clean.data.shape, where
    elif kind in ("same", "same_data"):
        assert ecg.channels == clean.channels and same_array(ecg.data, clean.data), where
        assert ecg.fs == (clean.fs if kind == "same" else param), where
    elif kind == "prefix":
        assert ecg.channels == clean.channels and same_array(ecg.data, clean.data[:, :param]), where
    elif kind == "scaled":
        assert ecg.channels == clean.channels, where
        np.testing.assert_allclose(ecg.data, clean.data * np.asarray(param)[:, None], rtol=1e-12, err_msg=where)
    elif kind == "negated":
        expected = clean.data.copy()
        expected[param] = -expected[param]
        assert ecg.channels == clean.channels and same_array(ecg.data, expected), where


def check_unmutated(corpus: str, rid: str, got: Record | Reject, clean: Record) -> None:
    assert isinstance(got, Record), f"{corpus} {rid} (not mutated) was rejected: {got}"
    a, b = got.signals["ecg"], clean.signals["ecg"]
    assert (a.channels, a.fs, a.unit, got.meta) == (b.channels, b.fs, b.unit, clean.meta), rid
    assert same_array(a.data, b.data), rid


def test_the_fuzz_plan_covers_every_mutation_on_every_source(cases, pristine):
    assert len(cases) >= 300
    assert {(c.corpus, c.mutation) for c in cases} == {(c, m) for c in SOURCES for m in MUTATIONS}
    assert len([c for c in cases if c.index % BUILD_EVERY == 0]) >= 30
    assert all(isinstance(c.header, bytes) and isinstance(c.signal, bytes) for c in cases)
    assert make_cases(pristine) == cases  # seeded: the same cases on every run


def test_mutated_records_are_read_or_rejected_and_the_others_unchanged(cases, pristine, tmp_path):
    outcomes: dict[str, int] = {}
    for case in cases:
        if case.index % BUILD_EVERY == 0:
            continue  # the build test runs these
        root = case_folder(case, pristine, tmp_path / f"case-{case.index:03d}" / "src")  # same name: the subset
        with time_bound(CASE_SECONDS, f"case {case.index} ({case.corpus}: {case.what})"):
            got = read_folder(case.corpus, root)
        clean = pristine[case.corpus]["reads"]
        assert sorted(got) == sorted((case.mutated, *case.others))
        check_mutated(case, got[case.mutated], clean[case.mutated])
        for rid in case.others:
            check_unmutated(case.corpus, rid, got[rid], clean[rid])
        outcome = "read" if isinstance(got[case.mutated], Record) else "rejected"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("read", 0) > 20 and outcomes.get("rejected", 0) > 20, outcomes  # the fuzzer bites both ways


def test_builds_with_a_mutated_record_keep_the_others_byte_identical(cases, pristine, tmp_path):
    for case in cases:
        if case.index % BUILD_EVERY:
            continue
        root = case_folder(case, pristine, tmp_path / f"case-{case.index:03d}" / "src")
        store = tmp_path / f"case-{case.index:03d}" / "store"
        where = f"case {case.index} ({case.corpus} {case.mutated}: {case.what})"
        with time_bound(CASE_SECONDS * 2, where):
            summary = build(str(root), str(store), fmt=case.corpus, jobs=1)
        assert summary["status"] == "built" and summary["items"] == 3, where
        clean = pristine[case.corpus]
        members = npy_members(store)
        keys = keys_by_record(store)
        for rid in case.others:
            expected = members_of(clean["members"], clean["keys"][rid])
            assert expected and members_of(members, keys.get(rid, [])) == expected, f"{where}: {rid} changed"
        rejects = pl.read_parquet(store / "rejects.parquet")
        mine = rejects.filter(pl.col("record_id") == case.mutated)
        assert all(isinstance(r, str) and r.strip() for r in mine["reason"].to_list()), where
        assert case.mutated in keys or mine.height, f"{where}: neither samples nor a reject"
        assert rejects.filter(pl.col("record_id") != case.mutated).height == 0, f"{where}: {rejects}"
        if case.expect.kind in ("reject", "truncated"):
            assert case.mutated not in keys and mine.height, where
        if case.expect.kind == "same":
            mutated = members_of(members, keys.get(case.mutated, []))
            assert mutated == members_of(clean["members"], clean["keys"][case.mutated]), where


HUGE = 10**12
MEMORY_PROBE = r"""
import json, resource, sys, time
from pathlib import Path
from physiofm import corpora
sources = json.loads(sys.argv[1])
def read(corpus, root):
    reader = corpora.get(corpus).reader
    return list(reader.read(root, reader.list_items(root)))
for name, corpus, clean, _ in sources:
    read(corpus, clean)  # warm up: imports, wfdb, numpy buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for name, corpus, _, huge in sources:
    started = time.perf_counter()
    results = read(corpus, huge)
    out[name] = {
        "seconds": time.perf_counter() - started,
        "reasons": [getattr(r, "reason", None) for r in results],
    }
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": after - before, "results": out}))
"""


def test_a_header_claiming_1e12_samples_allocates_nothing(pristine, tmp_path):
    """Every reader path (Challenge ``.mat``, PTB-XL ``.dat``, MIT-BIH 212 through wfdb, and a
    multi-frequency header) refuses the claim with a reason, fast, and peak memory stays flat."""
    sources = []
    for corpus, records in SOURCES.items():
        rid = sorted(records)[0]
        header, sig = pristine[corpus]["files"][rid]
        lines, nl = _split(header.decode("latin-1"))
        first = _body_index(lines)[0]
        lines[first] = _replace_token(lines[first], 3, str(HUGE))
        huge = write_source(tmp_path / corpus / "huge", corpus, {rid: (_join(lines, nl).encode("latin-1"), sig)})
        clean = write_source(tmp_path / corpus / "clean", corpus, {rid: (header, sig)})
        sources.append((corpus, corpus, str(clean), str(huge)))
    # the same claim in samples per frame, read through wfdb
    header, sig = pristine["wfdb"]["files"]["r0/100s"]
    spf = header.decode("latin-1").replace("100s.dat 212 ", f"100s.dat 212x{HUGE} ")
    frames = write_source(tmp_path / "frames", "wfdb", {"r0/100s": (spf.encode("latin-1"), sig)})
    sources.append(("frames", "wfdb", sources[-1][2], str(frames)))
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(sources)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["grew_kib"] < 100 * 1024, report  # nothing near 10^12 samples (or even 100 MB) was allocated
    assert sorted(report["results"]) == sorted(name for name, *_ in sources)
    for name, outcome in report["results"].items():
        (reason,) = outcome["reasons"]  # a reject's reason (None would be a record)
        assert reason and (str(HUGE) in reason or "the header needs" in reason), (name, reason)
        assert "allocate" not in reason and "Memory" not in reason, (name, reason)  # refused, not attempted
        assert outcome["seconds"] < 5, (name, outcome)
