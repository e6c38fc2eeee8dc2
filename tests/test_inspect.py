"""``physiofm show`` and ``physiofm report``: one sample as a picture, a store or runs as one self-contained page.

On an ECG store, a paired emotion store and a store on the loopback S3 server: what is drawn (every
lead, the mask, the scale bars, the source span of ``--raw``), that a page is well formed, fetches
nothing and embeds only PNGs that decode, and that a store report reads its tables and the samples
it draws, nothing else.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from physiofm import cli
from physiofm.inspect import InspectError, kind_of
from physiofm.inspect import show as S
from physiofm.inspect.run_report import run_report
from physiofm.inspect.store_report import store_report, store_report_html
from physiofm.store.layout import Layout

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class PageCheck(HTMLParser):
    """Tags balanced, and every ``src``/``href`` (and CSS ``url(``) collected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: set[str] = set()
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self._collect(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)
        self._in_style = tag == "style"

    def handle_startendtag(self, tag, attrs):
        self._collect(tag, attrs)

    def handle_endtag(self, tag):
        self._in_style = False
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self._in_style:
            self.style += data

    def _collect(self, tag, attrs):
        self.tags.add(tag)
        self.links += [(tag, name, value or "") for name, value in attrs if name in ("src", "href")]


def check_page(text: str) -> PageCheck:
    """Assert the page is well formed and self-contained; decode every embedded image; return the parse."""
    import matplotlib.pyplot as plt

    page = PageCheck()
    page.feed(text)
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    assert not page.tags & {"script", "link", "iframe", "object"}
    assert "url(" not in page.style and "@import" not in page.style
    images = 0
    for tag, attribute, value in page.links:
        assert not value.startswith(("http://", "https://", "//")), value
        if attribute == "href":
            assert value.startswith("#"), value
        else:
            prefix = "data:image/png;base64,"
            assert tag == "img" and value.startswith(prefix), value[:40]
            picture = plt.imread(io.BytesIO(base64.b64decode(value[len(prefix) :], validate=True)), format="png")
            assert picture.ndim == 3 and picture.shape[0] > 50 and picture.shape[1] > 50
            images += 1
    page.images = images
    return page


def new_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots()
    return fig, axes


# ---- show -----------------------------------------------------------------------------------------


def test_show_draws_every_lead_of_an_ecg_window(ecg_store, tmp_path):
    import matplotlib.pyplot as plt

    path = S.draw_sample(str(ecg_store), row=3, out=tmp_path / "a" / "sample.png")
    assert plt.imread(path).shape[1] == 1400  # 14 in at 100 dpi
    sample = S.load_sample(str(ecg_store), row=3)
    meta = sample.meta
    trace = sample.traces["ecg"]
    assert trace.data.shape == (12, 2000) and trace.channels[:3] == ["I", "II", "III"] and trace.unit == "mV"
    title = sample.title()
    for part in (meta["dataset"], meta["record_id"], "window 0", f"dx: {', '.join(meta['dx'])}", "row 3"):
        assert part in title
    trace.present[4] = False  # a lead the source lacks: a grey label, no trace
    fig, axes = new_axes()
    drawn = S.draw_on(axes, sample)
    assert drawn.absent == [("ecg", "aVL")] and len(drawn.traces) == 11 and not drawn.raw
    assert ("ecg", "aVL") not in drawn.traces
    assert [t.get_text() for t in axes.get_yticklabels()] == trace.channels
    assert axes.get_yticklabels()[4].get_color() == S.ABSENT_COLOR
    assert drawn.scale_bars["ecg"][1] == "mV" and drawn.scale_bars["ecg"][0] > 0
    x = drawn.traces[("ecg", "I")].get_xdata()
    assert x[0] == meta["window_start_s"] and np.isclose(x[-1] - x[0], 10 - 1 / 200)
    plt.close(fig)
    by_key = S.load_sample(str(ecg_store), key=meta["key"], source="tar")  # the same window from its tar shard
    assert by_key.row == 3 and by_key.read_from == "tar"
    np.testing.assert_array_equal(by_key.traces["ecg"].data, S.load_sample(str(ecg_store), row=3).traces["ecg"].data)
    assert (
        S.load_sample(str(ecg_store), random=True, seed=5).row == S.load_sample(str(ecg_store), random=True, seed=5).row
    )
    for wrong, message in (({"key": "nope"}, "no sample with key"), ({"row": 40}, "out of range"),
                           ({"row": 1, "random": True}, "choose one sample")):  # fmt: skip
        with pytest.raises(InspectError, match=message):
            S.load_sample(str(ecg_store), **wrong)


def test_show_raw_overlays_the_source_records_same_span(ecg_store):
    sample = S.load_sample(str(ecg_store), row=7, raw=True)
    trace = sample.traces["ecg"]
    assert trace.raw_fs == 500.0 and trace.raw.shape == (12, 5000)  # 10 s of the 500-Hz source, all 12 leads
    fig, axes = new_axes()
    drawn = S.draw_on(axes, sample)
    assert len(drawn.raw) == 12 and len(axes.lines) > 2 * len(trace.channels)
    raw_x = drawn.raw[("ecg", "II")].get_xdata()
    assert raw_x[0] == sample.start_s and np.isclose(raw_x[-1], sample.start_s + 10 - 1 / 500)
    # the same span in the same unit: the recipe's resampling and band-pass applied to it give the stored window
    # (these records are one window long, so the span is the whole record, edges and all)
    from physiofm.preprocess import transforms as T

    bandpass = json.loads((ecg_store / "build.json").read_text())["recipe"]["filter"]
    redone = T.filter_section(trace.raw, 500.0, 200.0, bandpass)
    np.testing.assert_allclose(redone, trace.data, atol=1e-4)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_show_raw_names_an_unreachable_source(ecg_store, tmp_path):
    store = S.Store.open(str(ecg_store))
    store.info = {**store.info, "source": str(tmp_path / "moved-away")}
    with pytest.raises(InspectError, match="not reachable"):
        S.load_sample(store, row=0, raw=True)
    done = CliRunner().invoke(cli.app, ["show", str(tmp_path / "no-store"), "--out", str(tmp_path / "x.png")])
    assert done.exit_code == 1 and "not a complete store" in done.output and "Traceback" not in done.output


def test_show_paired_emotion_sample_eeg_above_ecg(emotion_store, tmp_path):
    sample = S.load_sample(str(emotion_store), key="s02_t03", raw=True)  # a record id: its first window
    assert sample.meta["record_id"] == "s02_t03" and sample.meta["window_index"] == 0
    assert list(sample.traces) == ["eeg", "ecg"]
    eeg, ecg = sample.traces["eeg"], sample.traces["ecg"]
    assert eeg.data.shape == (14, 2000) and ecg.data.shape == (2, 2000)
    assert eeg.raw_fs == 128.0 and ecg.raw_fs == 256.0 and np.isfinite(eeg.raw).all() and np.isfinite(ecg.raw).all()
    title = sample.title()
    for score in ("valence", "arousal", "dominance"):
        high = "high" if sample.meta[f"{score}_high"] else "low"
        assert f"{score} {sample.meta[score]} ({high})" in title
    fig, axes = new_axes()
    drawn = S.draw_on(axes, sample)
    assert drawn.scale_bars["eeg"][1] == "µV" and drawn.scale_bars["ecg"][1] == "mV"
    lowest_eeg = min(line.get_ydata().mean() for (m, _), line in drawn.traces.items() if m == "eeg")
    highest_ecg = max(line.get_ydata().mean() for (m, _), line in drawn.traces.items() if m == "ecg")
    assert lowest_eeg > highest_ecg  # EEG above ECG, one time axis
    assert len(drawn.raw) == 16
    import matplotlib.pyplot as plt

    plt.close(fig)
    from physiofm.corpora.base import Item

    items = [Item("s01_t01", "DREAMER.mat"), Item("s01_t011", "DREAMER.mat")]
    assert S._find_item(items, "s01_t01_baseline").id == "s01_t01"  # a baseline is read with its trial's item
    later = S.load_sample(str(emotion_store), key="s02_t03_w001", raw=True)  # a window 10 s into its trial
    assert later.start_s == 10.0
    x = S.draw_on(new_axes()[1], later).raw[("eeg", "AF3")].get_xdata()
    assert x[0] == 10.0


# ---- report ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ecg", "emotion"])
def test_store_report_is_one_self_contained_page(which, ecg_store, emotion_store, tmp_path):
    store = ecg_store if which == "ecg" else emotion_store
    path = store_report(str(store), tmp_path / "r" / "report.html", samples=3, seed=1)
    text = path.read_text()
    page = check_page(text)
    info = json.loads((store / "build.json").read_text())
    modalities = len(info["modalities"])
    assert page.images == 3 + modalities + 1  # the drawn samples, one amplitude chart per modality, windows/record
    for section in ("Overview", "Rejects", "Class balance", "Amplitudes", "Windows per record", "Recipe", "Versions"):
        assert f">{section}</h2>" in text
    assert info["recipe_hash"] in text and "matches the recipe below" in text
    assert f"numpy</td><td>{info['versions']['numpy']}" in text
    assert "From build.json" in text  # amplitude statistics of every window
    labels = ["dx"] if which == "ecg" else ["valence", "valence_high", "arousal_high", "dominance"]
    assert all(f"<h3>{label}</h3>" in text for label in labels)
    if which == "emotion":
        assert "3 subjects" in text and "µV" in text


def test_store_report_reads_only_the_tables_and_the_drawn_samples(emotion_store, monkeypatch):
    """Each drawn sample is one Zarr row per modality; no tar shard is opened, no other Zarr row read."""
    from fsspec.implementations.local import LocalFileSystem

    reads, opened = [], []
    real_open_zarr, real_open = Layout.open_zarr, LocalFileSystem._open

    class Array:
        def __init__(self, array, name):
            self.array, self.name = array, name

        def __getitem__(self, index):
            reads.append((self.name, index))
            return self.array[index]

    class Group:
        def __init__(self, group):
            self.group = group

        def __getitem__(self, name):
            return Array(self.group[name], name)

    def no_tar(*args, **kwargs):
        raise AssertionError("a tar shard was read")

    monkeypatch.setattr(Layout, "open_zarr", lambda self, mode="r": Group(real_open_zarr(self, mode)))
    monkeypatch.setattr(
        LocalFileSystem, "_open", lambda self, path, *a, **k: opened.append(path) or real_open(self, path, *a, **k)
    )
    monkeypatch.setattr(S, "iter_members", no_tar)
    store = S.Store.open(str(emotion_store))
    store.info = {k: v for k, v in store.info.items() if k != "amplitude"}  # as a store built before the statistics
    text = store_report_html(store, samples=4, seed=3)
    assert len(reads) == 4 * 2 and all(isinstance(index, int) for _, index in reads)
    assert sorted({name for name, _ in reads}) == ["ecg", "eeg"]
    assert not [p for p in opened if "/wds/" in p]
    assert {Path(p).name for p in opened} <= {"build.json", "manifest.parquet", "shards.parquet", "rejects.parquet"}
    assert "computed from the 4 drawn samples" in text
    check_page(text)


def _finetuning_run(folder: Path, modalities: list[str], seed: int, roc: bool) -> Path:
    from physiofm.train.metrics import binary_metrics, summarize
    from physiofm.train.plots import plot_roc

    rng = np.random.default_rng(seed)
    targets = ["valence", "arousal"]
    (folder / "folds").mkdir(parents=True)
    per_fold, folds = {}, {}
    for k in range(2):
        true = rng.integers(0, 2, size=(30, 2)).astype(float)
        prob = np.clip(true * 0.3 + rng.random((30, 2)) * 0.7, 0, 1)
        metrics = {t: binary_metrics(true[:, i], prob[:, i]) for i, t in enumerate(targets)}
        per_fold[f"fold-{k}"] = {"true": true.tolist(), "prob": prob.tolist(), "metrics": metrics}
        (folder / "folds" / f"fold-{k}.json").write_text(json.dumps(per_fold[f"fold-{k}"]))
        folds[f"fold-{k}"] = {"metrics": metrics, "steps": 4, "final_loss": 0.69, "subjects_test": [f"0{k}"]}
    results = {"modalities": modalities, "targets": targets, "protocol": "kfold-subject", "folds": folds,
               "summary": summarize([f["metrics"] for f in folds.values()]),
               "seconds": 1.0, "world_size": 1}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "config.json").write_text(json.dumps({"store": "emo", "modalities": modalities, "lr": 1e-4 * seed}))
    if roc:
        plot_roc(per_fold, tuple(targets), folder)
    return folder


def test_report_of_runs_compares_finetuning_and_shows_losses(tmp_path):
    from physiofm.train.plots import plot_curve

    fused = _finetuning_run(tmp_path / "fused", ["eeg", "ecg"], 1, roc=True)
    eeg = _finetuning_run(tmp_path / "eeg", ["eeg"], 2, roc=False)  # no PNGs: redrawn from folds/*.json
    pre = tmp_path / "pre"
    pre.mkdir()
    records = [{"step": s, "loss": 2.0 / s} for s in range(1, 9)]
    (pre / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_curve(records, "loss", pre / "loss.png", "pretraining")
    assert [kind_of(str(p)) for p in (fused, pre, tmp_path)] == ["run", "run", None]
    text = run_report([str(fused), str(eeg), str(pre)], tmp_path / "runs.html").read_text()
    page = check_page(text)
    assert page.images == 1 + 2 * 2 + 1 + 1  # AUC chart, 2 ROC per run, the loss chart, pre/loss.png
    assert "mean AUC" in text and "eeg+ecg" in text and ">fused<" in text and "Pretraining: loss" in text
    assert "Settings that differ between the runs" in text
    # the command line: runs without --out print today's table, with --out the page; a store needs --out
    runner = CliRunner()
    done = runner.invoke(cli.app, ["report", str(fused), str(eeg), str(pre)], env={"COLUMNS": "250"})
    assert done.exit_code == 0 and "mean AUC" in done.output and "pretraining run" in done.output
    done = runner.invoke(cli.app, ["report", str(fused), "--out", str(tmp_path / "cli.html")])
    assert done.exit_code == 0 and (tmp_path / "cli.html").is_file()
    done = runner.invoke(cli.app, ["report", str(tmp_path / "nothing")])
    assert done.exit_code == 1 and "neither a store" in done.output


def test_show_and_report_of_a_store_on_s3(ecg_store, s3_bucket, tmp_path):
    import s3fs

    url, options = s3_bucket
    s3fs.S3FileSystem(**options).put(str(ecg_store), f"{url}/store", recursive=True)
    store = f"{url}/store"
    assert kind_of(store, options) == "store"
    sample = S.load_sample(store, random=True, seed=2, raw=True, storage_options=options)
    assert len(sample.traces["ecg"].channels) == 12 and sample.traces["ecg"].raw is not None
    flags = [arg for k, v in options.items() for arg in ("-o", f"{k}={v}")]
    runner = CliRunner()
    done = runner.invoke(
        cli.app, ["show", store, "--row", "5", "--from", "tar", "--out", str(tmp_path / "s.png"), *flags]
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli.app, ["report", store, "--out", str(tmp_path / "r.html"), "--samples", "2", *flags])
    assert done.exit_code == 0, done.output
    text = (tmp_path / "r.html").read_text()
    assert check_page(text).images == 2 + 1 + 1 and f"{url}/store" in text
    done = runner.invoke(cli.app, ["report", store, *flags])
    assert done.exit_code == 1 and "--out" in done.output


def test_import_physiofm_cli_stays_light():
    heavy = ("matplotlib", "torch", "polars")
    code = f"import sys, json, physiofm.cli; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
