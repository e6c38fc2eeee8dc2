"""The HTML report of training runs (``physiofm report RUN... --out report.html``).

One self-contained page for any mix of run folders:

* fine-tuning runs (``results.json``): the comparison table of :func:`physiofm.train.finetune.comparison`
  (mean ± sd over folds of ROC-AUC and F1 per target), a chart of the mean AUCs, each run's folds
  (steps, final loss, test subjects, AUC per target) and its ROC curves (the run's ``roc_<target>.png``,
  or redrawn from ``folds/*.json`` when a PNG is missing);
* pretraining runs (``metrics.jsonl``): their loss curves redrawn on one chart from ``metrics.jsonl``,
  each run's own ``loss.png``, and its summary (steps, final loss, throughput);
* every run's ``config.json``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from physiofm.inspect import InspectError
from physiofm.inspect import html as H

__all__ = ["run_report", "run_report_html"]


def run_report(runs: list[str], out: str | Path = "report.html") -> Path:
    """Write the report of the run folders ``runs`` to ``out``; return its path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_report_html(runs), encoding="utf-8")
    return path


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a killed run
    return out


def split_runs(runs: list[str]) -> tuple[list[Path], list[Path]]:
    """``(fine-tuning runs, pretraining runs)``; a folder that is neither is an :class:`InspectError`."""
    finetuning, pretraining = [], []
    for run in runs:
        folder = Path(run)
        if (folder / "results.json").is_file():
            finetuning.append(folder)
        elif (folder / "metrics.jsonl").is_file():
            pretraining.append(folder)
        else:
            raise InspectError(f"{run} is not a run folder (no results.json or metrics.jsonl)")
    return finetuning, pretraining


def run_report_html(runs: list[str]) -> str:
    """The report page of ``runs`` as a string (see the module docstring)."""
    if not runs:
        raise InspectError("no run folders given")
    finetuning, pretraining = split_runs(runs)
    sections: list[tuple[str, str]] = []
    if finetuning:
        from physiofm.train.finetune import comparison

        rows = comparison([str(run) for run in finetuning])
        for row, run in zip(rows, finetuning):
            row["run"] = _label(run, finetuning)
        sections.append(("Fine-tuning: comparison", _comparison(rows)))
        sections.append(
            ("Fine-tuning: folds and ROC curves", "".join(_finetune_run(r, finetuning) for r in finetuning))
        )
    if pretraining:
        sections.append(("Pretraining: loss", _pretraining(pretraining)))
    sections.append(("Configurations", _configs(finetuning + pretraining)))
    subtitle = f"{len(finetuning)} fine-tuning run(s), {len(pretraining)} pretraining run(s): " + ", ".join(
        _label(Path(r), [Path(x) for x in runs]) for r in runs
    )
    return H.page("Training runs report", subtitle, sections)


def _label(run: Path, runs: list[Path]) -> str:
    """The folder's name, or its path where two runs share a name."""
    same = [r for r in runs if r.name == run.name]
    return run.name if len(same) <= 1 else str(run)


def _targets(rows: list[dict]) -> list[str]:
    return sorted({key.split(".")[0] for row in rows for key in row if "." in key})


def _ms(value: tuple[float, float] | None) -> str:
    if not value or value[0] is None or (isinstance(value[0], float) and math.isnan(value[0])):
        return "–"
    return f"{value[0]:.3f} ± {value[1]:.3f}"


def _comparison(rows: list[dict]) -> str:
    targets = _targets(rows)
    best = max((row["mean_auc"] for row in rows if not math.isnan(row["mean_auc"])), default=None)
    headers = ["run", "modalities", "protocol", *[f"{t} AUC" for t in targets], *[f"{t} F1" for t in targets],
               "mean AUC"]  # fmt: skip
    body = []
    for row in rows:
        auc = "–" if math.isnan(row["mean_auc"]) else f"{row['mean_auc']:.3f}"
        mean = H.Raw(f"<b>{auc}</b>" if best is not None and row["mean_auc"] == best else H.esc(auc))
        body.append([row["run"], row["modalities"], row.get("protocol", ""),
                     *[_ms(row.get(f"{t}.roc_auc")) for t in targets], *[_ms(row.get(f"{t}.f1")) for t in targets],
                     mean])  # fmt: skip
    numeric = tuple(range(3, len(headers)))
    parts = [
        H.note("ROC-AUC and F1 of the positive class: mean ± sd over the folds of each run's protocol "
               "(folds whose test set holds one class leave the AUC out). The best mean AUC is in bold."),
        H.table(headers, body, numeric=numeric),
    ]  # fmt: skip
    if targets:
        png = H.figure_png((max(5.0, 1.4 * len(targets) * max(1, len(rows)) * 0.6 + 2), 3.4),
                           lambda axes: _auc_chart(axes, rows, targets))  # fmt: skip
        parts.append(H.image(png, "mean ROC-AUC per target and run", "mean ROC-AUC over folds, bars: ± sd"))
    return "".join(parts)


def _auc_chart(axes, rows: list[dict], targets: list[str]) -> None:
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(targets))
    for i, row in enumerate(rows):
        means = [row.get(f"{t}.roc_auc", (np.nan, np.nan))[0] for t in targets]
        spread = [row.get(f"{t}.roc_auc", (np.nan, np.nan))[1] for t in targets]
        axes.bar(x + (i - (len(rows) - 1) / 2) * width, means, width * 0.95, yerr=spread, capsize=3,
                 label=f"{row['run']} ({row['modalities']})")  # fmt: skip
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(x)
    axes.set_xticklabels(targets)
    axes.set_ylim(0, 1)
    axes.set_ylabel("ROC-AUC")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes.grid(axis="y", alpha=0.3)


def _finetune_run(run: Path, runs: list[Path]) -> str:
    results = _read_json(run / "results.json") or {}
    targets = list(results.get("targets", []))
    folds = results.get("folds", {})
    rows = []
    for name, fold in folds.items():
        metrics = fold.get("metrics", {})
        aucs = [metrics.get(t, {}).get("roc_auc") for t in targets]
        loss = fold.get("final_loss")
        subjects = fold.get("subjects_test") or []
        rows.append([name, fold.get("steps"), None if loss is None else round(loss, 4),
                     ", ".join(map(str, subjects[:12])) + (" …" if len(subjects) > 12 else ""),
                     *[_auc(a) for a in aucs]])  # fmt: skip
    head = (
        f"<h3>{H.esc(_label(run, runs))}</h3>"
        + H.note(
            f"{'+'.join(results.get('modalities', []))} · protocol {results.get('protocol')} · {len(folds)} folds"
            f" · {results.get('seconds', 0):.0f} s · {results.get('world_size', 1)} process(es)"
        )  # fmt: skip
        + H.table(
            ["fold", "steps", "final loss", "test subjects", *[f"{t} AUC" for t in targets]],
            rows,
            numeric=(1, 2, *range(4, 4 + len(targets))),
        )  # fmt: skip
    )
    images = []
    for target, png in _roc_pngs(run, targets):
        images.append(H.image(png, f"ROC curve of {target}", f"{target}: each fold (thin) and pooled (black)"))
    if not images:
        images.append(H.note("no ROC curves: no roc_<target>.png and no per-fold predictions (folds/*.json)"))
    return head + H.tiles(images)


def _auc(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 3)


def _roc_pngs(run: Path, targets: list[str]) -> list[tuple[str, bytes]]:
    """The run's ROC PNGs per target; those missing are redrawn from the folds' predictions."""
    found = {t: (run / f"roc_{t}.png").read_bytes() for t in targets if (run / f"roc_{t}.png").is_file()}
    missing = [t for t in targets if t not in found]
    if missing:
        per_fold = {p.stem: _read_json(p) for p in sorted((run / "folds").glob("*.json"))}
        per_fold = {k: v for k, v in per_fold.items() if v and "prob" in v and "true" in v and v["prob"]}
        if per_fold:
            from physiofm.train.plots import plot_roc

            with tempfile.TemporaryDirectory() as tmp:
                plot_roc(per_fold, tuple(targets), Path(tmp))
                for t in missing:
                    if (Path(tmp) / f"roc_{t}.png").is_file():
                        found[t] = (Path(tmp) / f"roc_{t}.png").read_bytes()
    return [(t, found[t]) for t in targets if t in found]


def _pretraining(runs: list[Path]) -> str:
    logs = {_label(run, runs): _jsonl(run / "metrics.jsonl") for run in runs}
    png = H.figure_png((8, 3.6), lambda axes: _loss_chart(axes, logs))
    rows = []
    for run in runs:
        summary = _read_json(run / "summary.json") or {}
        config = _read_json(run / "config.json") or {}
        records = logs[_label(run, runs)]
        losses = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]
        rate = summary.get("samples_per_s")
        rows.append([_label(run, runs), config.get("modality"), config.get("store"), len(records),
                     losses[0] if losses else None, losses[-1] if losses else None, min(losses) if losses else None,
                     None if rate is None else round(rate, 1), summary.get("world_size")])  # fmt: skip
    parts = [
        H.image(
            png, "pretraining loss against step", "masked reconstruction loss per step, redrawn from metrics.jsonl"
        ),
        H.table(
            [
                "run",
                "modality",
                "store",
                "steps logged",
                "first loss",
                "last loss",
                "lowest loss",
                "samples/s",
                "processes",
            ],
            rows,
            numeric=(3, 4, 5, 6, 7, 8),
        ),  # fmt: skip
    ]
    own = [H.image((run / "loss.png").read_bytes(), f"loss.png of {run.name}", f"{_label(run, runs)}/loss.png")
           for run in runs if (run / "loss.png").is_file()]  # fmt: skip
    if own:
        parts += ["<h3>The runs' own loss.png</h3>", H.tiles(own)]
    return "".join(parts)


def _loss_chart(axes, logs: dict[str, list[dict]]) -> None:
    for name, records in logs.items():
        points = [(r["step"], r["loss"]) for r in records if "step" in r and isinstance(r.get("loss"), (int, float))]
        if points:
            axes.plot(*zip(*points), label=name, linewidth=1.2)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    if any(logs.values()):
        axes.legend(fontsize=8, frameon=False)


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(_flat(value, name))
        else:
            out[name] = value
    return out


def _configs(runs: list[Path]) -> str:
    configs = {_label(run, runs): _read_json(run / "config.json") for run in runs}
    flat = {label: _flat(config) for label, config in configs.items() if isinstance(config, dict)}
    parts = []
    if len(flat) > 1:
        keys = sorted({key for config in flat.values() for key in config} - {"out"})
        differ = [key for key in keys if len({json.dumps(c.get(key), sort_keys=True) for c in flat.values()}) > 1]
        if differ:
            rows = [[key, *[json.dumps(c.get(key)) if key in c else "–" for c in flat.values()]] for key in differ]
            parts += ["<h3>Settings that differ between the runs</h3>", H.table(["setting", *flat], rows)]
        else:
            parts.append(H.note("The runs' settings are the same (apart from their folders)."))
    parts.append(H.note("Each run's config.json (click a run to open it):"))
    for label, config in configs.items():
        if config is None:
            parts.append(H.note(f"{label}: no config.json"))
            continue
        text = H.toml_text(config)
        parts.append(f"<details><summary>{H.esc(label)}</summary>{H.pre(text, columns=True)}</details>")
    return "".join(parts)
