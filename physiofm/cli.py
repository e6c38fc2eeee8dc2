"""The ``physiofm`` command line: thin wrappers over the library, one command per job.

Options with fixed choices are enums, so ``--help`` lists them and a wrong value is a one-line
error.  Corpus choices come from the registry (:mod:`physiofm.corpora.registry`); the others
are checked against the library's own lists by ``tests/test_cli.py``.  Nothing heavy (torch,
polars) is imported until a command runs.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from physiofm.corpora import registry


def _choices(name: str, values) -> type[Enum]:
    """An ``Enum`` whose values are ``values`` (Typer shows them in ``--help`` and checks them)."""
    return Enum(name, {value: value for value in values}, type=str)


Corpus = _choices("Corpus", registry.names())
ExecutorChoice = _choices("ExecutorChoice", ("local", "dask", "dask-local"))  # physiofm.store.executors.EXECUTORS
DtypeChoice = _choices("DtypeChoice", ("float32", "float16"))
DeviceChoice = _choices("DeviceChoice", ("auto", "cpu", "cuda"))
Modality = _choices("Modality", ("ecg", "eeg"))
MaskMode = _choices("MaskMode", ("dual", "intra", "inter"))  # physiofm.models.masking.MODES
Protocol = _choices("Protocol", ("loso", "kfold-subject", "kfold-trial"))  # physiofm.train.protocols.PROTOCOLS

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Physiological foundation models: data first.")
build_app = typer.Typer(no_args_is_help=True, help="Build a store (shards, Zarr, manifests) from a raw archive.")
app.add_typer(build_app, name="build")
console = Console(stderr=True)

Jobs = Annotated[int | None, typer.Option("--jobs", "-j", help="worker processes (default: all cores)")]
Recipe = Annotated[str | None, typer.Option(help="recipe name (manifests/recipes) or .toml path")]
ShardSize = Annotated[int | None, typer.Option(help="target samples per shard")]
Dtype = Annotated[DtypeChoice | None, typer.Option(help="sample dtype (default: the recipe's)")]
ExecutorName = Annotated[
    ExecutorChoice,
    typer.Option("--executor", help="local (process pool), dask (a running cluster: --scheduler) or dask-local"),
]
Scheduler = Annotated[str | None, typer.Option(help="Dask scheduler address, tcp://HOST:PORT (--executor dask)")]
StorageOption = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-o", help="fsspec storage option KEY=VALUE for OUT (repeatable)"),
]


def _run_build(**kwargs) -> None:
    from physiofm.io import parse_storage_options
    from physiofm.store.build import BuildError, build
    from physiofm.store.executors import open_executor

    kwargs["storage_options"] = parse_storage_options(kwargs.pop("storage_option"))
    executor_name, scheduler = kwargs.pop("executor").value, kwargs.pop("scheduler")
    kwargs["fmt"] = kwargs["fmt"].value
    kwargs["dtype"] = kwargs["dtype"].value if kwargs["dtype"] else None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("building shards", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            label = "building shards" if stage == "units" else "filling zarr"
            bar.update(task, description=label, completed=done, total=total)

        try:
            with open_executor(executor_name, kwargs["jobs"], scheduler) as executor:
                summary = build(**kwargs, executor=executor, progress=progress)
        except (BuildError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
            bar.stop()
            console.print(f"[red]build failed:[/red] {error}", soft_wrap=True)
            raise typer.Exit(1) from None
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['dataset']} → {summary['out']} ({summary['status']})", show_header=False)
    rate = summary["records_read"] / summary["seconds"] if summary["seconds"] else 0.0
    for label, key in (
        ("items listed", "items"),
        ("records read", "records_read"),
        ("records rejected", "records_rejected"),
        ("windows written", "samples"),
        ("windows rejected", "windows_rejected"),
        ("shards", "shards"),
    ):
        table.add_row(label, str(summary[key]))
    table.add_row("time", f"{summary['seconds']:.1f} s ({rate:.0f} records/s)")
    for reason, count in summary.get("rejected_by_reason", {}).items():
        table.add_row(f"rejected: {reason}", str(count))
    Console().print(table)


BUILD_HELP = {
    "ecg": ("archive", "Build an ECG store: 12 standard leads, 200 Hz, windows of (12, N, 200) patches."),
    "emotion": ("dataset", "Build a paired EEG+ECG store from an emotion dataset (one sample = both modalities)."),
    "eeg": (
        "archive",
        "Build an EEG store (EDF/BDF folders, TUH, BIDS): the recipe's channel set (CBraMod's 19 by default), "
        "200 Hz, windows of (C, N, 200) patches in uV.",
    ),
}


def _build_command(kind: str):
    """``physiofm build KIND``: the same options for every corpus kind, its layouts as the choices."""
    noun, summary = BUILD_HELP[kind]
    layouts = _choices(f"{kind.title()}Layout", ("auto", *registry.names(kind)))

    def command(
        source,
        out,
        layout="auto",
        recipe=None,
        jobs=None,
        shard_size=None,
        dtype=None,
        storage_option=None,
        executor="local",
        scheduler=None,
    ) -> None:
        _run_build(
            source=source,
            out=out,
            fmt=layout,
            kind=kind,
            recipe=recipe,
            jobs=jobs,
            shard_size=shard_size,
            dtype=dtype,
            storage_option=storage_option,
            executor=executor,
            scheduler=scheduler,
        )

    command.__doc__ = summary
    command.__annotations__ = {
        "source": Annotated[str, typer.Argument(help=f"{noun} folder or URL")],
        "out": Annotated[str, typer.Argument(help="store folder or s3:// URL")],
        "layout": Annotated[
            layouts,
            typer.Option(
                "--format", *(("--dataset",) if kind == "emotion" else ()), help=f"{noun} layout (auto: detect it)"
            ),
        ],
        "recipe": Recipe,
        "jobs": Jobs,
        "shard_size": ShardSize,
        "dtype": Dtype,
        "storage_option": StorageOption,
        "executor": ExecutorName,
        "scheduler": Scheduler,
        "return": None,
    }
    return command


for _kind in registry.KINDS:
    build_app.command(_kind)(_build_command(_kind))


@app.command()
def synth(
    name: Annotated[Corpus, typer.Argument(help="corpus whose layout to write")],
    out: Annotated[Path, typer.Argument(help="folder to write")],
    records: Annotated[int, typer.Option(help="records (ECG archives)")] = 20,
    subjects: Annotated[int, typer.Option(help="subjects (emotion datasets)")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a small dataset with the exact on-disk layout of a real archive."""
    from physiofm.synth import generate

    root = generate(name.value, out, records=records, subjects=subjects, seed=seed)
    console.print(f"wrote {name.value} layout to {root}")


@app.command()
def validate(
    store: Annotated[str, typer.Argument(help="store folder or s3:// URL")],
    deep: Annotated[
        bool, typer.Option("--deep", help="read everything: hash every shard and Zarr object, compare every sample")
    ] = False,
    json_report: Annotated[Path | None, typer.Option("--json", help="write a machine-readable report here")] = None,
    sample: Annotated[
        int, typer.Option(help="samples read (as whole shards) and compared with Zarr without --deep")
    ] = 64,
    seed: Annotated[int, typer.Option(help="which shards the sample reads")] = 0,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="objects read at once (--deep: processes; default: all cores)"),
    ] = None,
    storage_option: StorageOption = None,
) -> None:
    """Check a store end to end: schema, integrity, content, leakage and balance."""
    from physiofm.io import parse_storage_options
    from physiofm.store.validate import print_report
    from physiofm.store.validate import validate as run

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("reading shards and Zarr objects", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = run(
            store,
            deep=deep,
            sample=sample,
            seed=seed,
            jobs=jobs,
            progress=progress,
            storage_options=parse_storage_options(storage_option),
        )
    print_report(report, Console())
    if json_report:
        json_report.write_text(report.to_json())
    raise typer.Exit(0 if report.ok else 1)


Device = Annotated[DeviceChoice, typer.Option(help="where to train (auto: CUDA when available)")]
BatchSize = Annotated[int, typer.Option(help="samples per step in each process (torchrun: N processes take N ×)")]
Ddp = Annotated[
    bool,
    typer.Option(
        "--ddp",
        help="require a torchrun launch: one process per rank, gloo on the CPU, "
        "nccl on GPUs (a launch is used when detected anyway)",
    ),
]


def _sizes(layers: int | None) -> dict:
    return {"n_layer": layers} if layers else {}


def _options(epochs, max_steps, batch_size, lr, workers, device, seed, resume, storage_option, ddp) -> dict:
    """The :class:`~physiofm.train.loop.TrainOptions` fields that pretraining and fine-tuning share."""
    from physiofm.io import parse_storage_options

    return {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "workers": workers,
            "device": device.value, "seed": seed, "resume": resume, "ddp": ddp,
            "storage_options": parse_storage_options(storage_option)}  # fmt: skip


def _train(command: str, run, config):
    """``run(config)``; a distributed set-up failure is a one-line error and exit status 1."""
    from physiofm.train.distributed import DistributedError

    try:
        return run(config)
    except DistributedError as error:
        console.print(f"[red]{command} failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def pretrain(
    store: Annotated[str, typer.Argument(help="ECG (or EEG) store")],
    out: Annotated[str, typer.Option("--out", help="run folder")],
    modality: Annotated[Modality, typer.Option(help="which modality of the store to pretrain on")] = "ecg",
    epochs: int = 1,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: BatchSize = 32,
    lr: float = 5e-4,
    workers: int = 0,
    device: Device = "auto",
    seed: int = 0,
    resume: Annotated[bool, typer.Option("--resume")] = False,
    checkpoint_every: int = 100,
    layers: Annotated[int | None, typer.Option(help="encoder layers (default 12, as CBraMod)")] = None,
    mask: Annotated[MaskMode, typer.Option(help="masking: intra-lead patches, whole leads, or both")] = "dual",
    storage_option: StorageOption = None,
    ddp: Ddp = False,
) -> None:
    """Dual-masking reconstruction pretraining of a CBraMod encoder (data-parallel under torchrun)."""
    from physiofm.train.distributed import is_main
    from physiofm.train.pretrain import PretrainConfig
    from physiofm.train.pretrain import pretrain as run

    options = _options(epochs, max_steps, batch_size, lr, workers, device, seed, resume, storage_option, ddp)
    config = PretrainConfig(store, out, modality=modality.value, checkpoint_every=checkpoint_every,
                            model=_sizes(layers), masking={"mode": mask.value}, **options)  # fmt: skip
    summary = _train("pretrain", run, config)
    if is_main():
        console.print(
            f"pretrained {summary['steps']} steps, final loss {summary['final_loss']}, "
            f"{summary['samples_per_s']:.1f} samples/s → {out}",
            soft_wrap=True,
        )


@app.command()
def finetune(
    store: Annotated[str, typer.Argument(help="emotion store")],
    out: Annotated[str, typer.Option("--out", help="run folder")],
    modalities: Annotated[str, typer.Option(help="eeg, ecg or eeg,ecg")] = "eeg,ecg",
    targets: Annotated[str, typer.Option()] = "valence,arousal,dominance",
    protocol: Annotated[Protocol, typer.Option(help="subject-wise evaluation protocol")] = "kfold-subject",
    folds: int = 5,
    eeg_weights: Annotated[str | None, typer.Option(help="CBraMod checkpoint (official layout)")] = None,
    ecg_weights: Annotated[str | None, typer.Option(help="a physiofm pretraining run (or encoder .pt)")] = None,
    epochs: int = 10,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: BatchSize = 32,
    lr: float = 1e-4,
    workers: int = 0,
    device: Device = "auto",
    seed: int = 0,
    resume: Annotated[bool, typer.Option("--resume")] = False,
    eeg_layers: Annotated[
        int | None, typer.Option(help="EEG encoder layers (default 12; with --eeg-weights, the checkpoint's)")
    ] = None,
    ecg_layers: Annotated[
        int | None,
        typer.Option(help="ECG encoder layers (default 12; with --ecg-weights from physiofm, read from the weights)"),
    ] = None,
    storage_option: StorageOption = None,
    ddp: Ddp = False,
) -> None:
    """Fine-tune the fusion classifier (or one branch) under a subject-wise protocol; print its metrics."""
    from physiofm.train.distributed import is_main
    from physiofm.train.finetune import FinetuneConfig, comparison
    from physiofm.train.finetune import finetune as run

    options = _options(epochs, max_steps, batch_size, lr, workers, device, seed, resume, storage_option, ddp)
    config = FinetuneConfig(store, out, modalities=tuple(modalities.split(",")), targets=tuple(targets.split(",")),
                            protocol=protocol.value, folds=folds, eeg_weights=eeg_weights, ecg_weights=ecg_weights,
                            eeg_model=_sizes(eeg_layers), ecg_model=_sizes(ecg_layers), **options)  # fmt: skip
    _train("finetune", run, config)
    if is_main():
        _print_comparison(comparison([out]))


SampleSource = _choices("SampleSource", ("zarr", "tar"))  # physiofm.inspect.show.SOURCES
StoreOption = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-o", help="fsspec storage option KEY=VALUE for the store (repeatable)"),
]


@app.command()
def show(
    store: Annotated[str, typer.Argument(help="store folder or s3:// URL")],
    key: Annotated[
        str | None, typer.Argument(help="sample key (manifest 'key'), or a record id: its first window")
    ] = None,
    row: Annotated[int | None, typer.Option("--row", help="manifest row of the sample")] = None,
    random: Annotated[bool, typer.Option("--random", help="a sample at random (see --seed)")] = False,
    seed: Annotated[int | None, typer.Option(help="seed of --random")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="overlay the source record's same span (read back from build.json's source)")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="PNG to write")] = Path("sample.png"),
    read_from: Annotated[
        SampleSource, typer.Option("--from", help="read the window from Zarr or its tar shard")
    ] = "zarr",
    storage_option: StoreOption = None,
) -> None:
    """Draw one sample: every channel on a shared time axis, lead mask, units, scale bars, ids and labels."""
    from physiofm.inspect import InspectError
    from physiofm.inspect.show import draw_sample
    from physiofm.io import parse_storage_options

    try:
        path = draw_sample(store, key=key, row=row, random=random, seed=seed, raw=raw, out=out,
                           storage_options=parse_storage_options(storage_option), source=read_from.value)  # fmt: skip
    except (InspectError, ValueError) as error:
        console.print(f"[red]show failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"wrote {path}")


@app.command()
def report(
    paths: Annotated[list[str], typer.Argument(help="a store, or run folders (fine-tuning or pretraining)")],
    out: Annotated[Path | None, typer.Option("--out", help="write a self-contained HTML report here")] = None,
    samples: Annotated[int, typer.Option(help="samples a store report draws")] = 6,
    seed: Annotated[int, typer.Option(help="which samples a store report draws")] = 0,
    storage_option: StoreOption = None,
) -> None:
    """Report a store (with --out: counts, rejects, balance, amplitudes, samples) or compare training runs.

    A store has build.json, a run results.json (fine-tuning) or metrics.jsonl (pretraining).  Without
    --out, runs are compared in a table as before.
    """
    from physiofm.inspect import InspectError, kind_of
    from physiofm.io import parse_storage_options

    options = parse_storage_options(storage_option)
    kinds = {path: kind_of(path, options) for path in paths}
    unknown = [path for path, kind in kinds.items() if kind is None]
    stores = [path for path, kind in kinds.items() if kind == "store"]
    try:
        if unknown:
            raise InspectError(f"{', '.join(unknown)}: neither a store (build.json) nor a run "
                               "(results.json or metrics.jsonl)")  # fmt: skip
        if stores and len(paths) > 1:
            raise InspectError("report one store at a time (runs may be several, stores not, and not mixed)")
        if stores:
            if out is None:
                raise InspectError("a store report is a page: give --out report.html")
            from physiofm.inspect.store_report import store_report

            console.print(f"wrote {store_report(stores[0], out, options, samples=samples, seed=seed)}")
        elif out is not None:
            from physiofm.inspect.run_report import run_report

            console.print(f"wrote {run_report(paths, out)}")
        else:
            _print_runs(paths)
    except InspectError as error:
        console.print(f"[red]report failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None


def _print_runs(runs: list[str]) -> None:
    """Today's table of fine-tuning runs; a pretraining run gets one line (its steps and losses)."""
    import json

    from physiofm.inspect.run_report import split_runs

    finetuning, pretraining = split_runs(runs)
    if finetuning:
        from physiofm.train.finetune import comparison

        _print_comparison(comparison([str(run) for run in finetuning]))
    for run in pretraining:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [line["loss"] for line in lines if "loss" in line]
        last = f", loss {losses[0]:.4f} → {losses[-1]:.4f}" if losses else ""
        Console().print(f"pretraining run {run}: {len(lines)} steps logged{last}")


def _print_comparison(rows: list[dict]) -> None:
    targets = sorted({key.split(".")[0] for row in rows for key in row if "." in key})
    table = Table(title="fine-tuning results: ROC-AUC and F1, mean ± sd over folds")
    for column in ("run", "modalities", *[f"{t} AUC" for t in targets], *[f"{t} F1" for t in targets], "mean AUC"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        cells = [row["run"], row["modalities"]]
        for metric in ("roc_auc", "f1"):
            cells += [f"{row[f'{t}.{metric}'][0]:.3f} ± {row[f'{t}.{metric}'][1]:.3f}" for t in targets]
        table.add_row(*cells, f"{row['mean_auc']:.3f}")
    Console(width=200).print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
