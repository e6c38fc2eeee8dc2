"""Real archives' quirks, built through the CLI as a user would: no record crashes a build.

Made from the real recordings in ``../shared/data`` (copied to a temporary folder):

* a PTB Diagnostic-style record with 15 signals: the 12 leads of a real PTB-XL record in ``.dat``
  plus Frank leads ``vx vy vz`` in a second ``.xyz`` file (today's crash: the 12-lead fast path took
  all 15 signals);
* a Challenge 2015-style record mixing ECG and other signals: ``II`` and ``V`` (MIT-BIH 100s'
  MLII and V5) and ``PLETH`` in ``NU``, plus an ``ABP`` channel in ``mmHg``;
* a record whose ECG lead ``V2`` has a unit that is not a voltage (the lead is masked, the record kept);
* the real MIT-BIH 100s with its ``.dat`` truncated.
"""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import wfdb
from typer.testing import CliRunner

from physiofm.cli import app


def _write(folder, name, fs, signals, units, names, files):
    """A format-16 WFDB record: ``signals`` (C, T) in physical units, gain 1000/unit, channels split over ``files``."""
    lines = [f"{name} {len(names)} {fs} {signals.shape[1]}"]
    for file in dict.fromkeys(files):
        rows = [i for i, f in enumerate(files) if f == file]
        digital = np.clip(np.rint(signals[rows] * 1000), -32767, 32767).astype("<i2")
        (folder / file).write_bytes(digital.T.tobytes())
    for unit, label, file in zip(units, names, files):
        lines.append(f"{file} 16 1000/{unit} 16 0 0 0 0 {label}")
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def make_archive(shared_data, root):
    root.mkdir()
    ptbxl = wfdb.rdrecord(str(shared_data / "ptb-xl/records100/00000/00001_lr"))
    twelve = ptbxl.p_signal.T  # (12, 1000) mV at 100 Hz
    frank = np.stack([twelve[0] * 0.8, twelve[1] * 0.6, twelve[6] * 0.5])
    _write(root, "s0010_re", 100, np.concatenate([twelve, frank]), ["mV"] * 15,
           [*ptbxl.sig_name, "vx", "vy", "vz"], ["s0010_re.dat"] * 12 + ["s0010_re.xyz"] * 3)  # fmt: skip
    mitbih = wfdb.rdrecord(str(shared_data / "wfdb-software-data/100s"))
    ecg = mitbih.p_signal.T  # (2, 21600) mV at 360 Hz
    pleth = 0.5 + 0.3 * np.sin(np.linspace(0, 60 * np.pi, ecg.shape[1]))
    abp = 90 + 20 * np.sin(np.linspace(0, 60 * np.pi, ecg.shape[1]))
    _write(root, "a103l", 360, np.stack([ecg[0], ecg[1], pleth, abp / 10]), ["mV", "mV", "NU", "mmHg"],
           ["II", "V", "PLETH", "ABP"], ["a103l.dat"] * 4)  # fmt: skip
    odd = twelve.copy()
    _write(root, "odd_unit", 100, odd, ["mV"] * 7 + ["furlong"] + ["mV"] * 4, ptbxl.sig_name, ["odd_unit.dat"] * 12)
    for suffix in (".hea", ".dat"):
        shutil.copy(shared_data / f"wfdb-software-data/100s{suffix}", root / f"100s{suffix}")
    data = (root / "100s.dat").read_bytes()
    (root / "100s.dat").write_bytes(data[: len(data) // 3])


def test_fifteen_signals_mixed_channels_an_odd_unit_and_a_truncated_file(shared_data, tmp_path):
    make_archive(shared_data, tmp_path / "raw")
    done = CliRunner().invoke(app, ["build", "ecg", str(tmp_path / "raw"), str(tmp_path / "store"), "--format", "wfdb",
                                    "--jobs", "1"])  # fmt: skip
    assert done.exit_code == 0, done.output
    manifest = pl.read_parquet(tmp_path / "store" / "manifest.parquet")
    rows = {r["record_id"]: r for r in manifest.iter_rows(named=True)}
    assert set(rows) == {"s0010_re", "a103l", "odd_unit"}

    ptb = rows["s0010_re"]
    assert ptb["ecg_lead_mask"] == [True] * 12
    assert ptb["ecg_skipped"] == ["vx (frank)", "vy (frank)", "vz (frank)"]
    mixed = rows["a103l"]
    assert mixed["ecg_lead_mask"] == [False, True] + [False] * 10  # only II is a standard lead
    assert mixed["ecg_skipped"] == ["PLETH (ppg)", "ABP (pressure)", "V (ecg: not a standard lead)"]
    odd = rows["odd_unit"]
    assert odd["ecg_lead_mask"] == [True] * 7 + [False] + [True] * 4

    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    lead = rejects.filter(pl.col("stage") == "lead")
    assert lead["record_id"].to_list() == ["odd_unit"]
    assert lead["reason"][0] == "lead V2 left out: unknown physical unit 'furlong'"
    read = rejects.filter(pl.col("stage") == "read")
    assert read["record_id"].to_list() == ["100s"]
    reason = read["reason"][0]
    assert reason.startswith("truncated signal file 100s.dat:") and "the header needs" in reason, reason
