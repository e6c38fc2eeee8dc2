"""The ``physiofm`` command line: thin wrappers over the library, one command per job.

Options with fixed choices are enums, so ``--help`` lists them and a wrong value is a one-line
error.  Corpus choices come from the registry (:mod:`physiofm.corpora.registry`); the others
are checked against the library's own lists by ``tests/test_cli.py``.  Nothing heavy (torch,
polars) is imported until a command runs.
"""

from __future__ import annotations

import gc
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
InterUnit = _choices("InterUnit", ("lead", "limb-group"))  # physiofm.models.masking.INTER_UNITS
# physiofm.train.protocols.PROTOCOLS
Protocol = _choices("Protocol", ("loso", "kfold-subject", "kfold-trial", "ptbxl", "split"))

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Physiological foundation models: data first.")
build_app = typer.Typer(no_args_is_help=True, help="Build a store (shards, Zarr, manifests) from a raw archive.")
app.add_typer(build_app, name="build")
console = Console(stderr=True)


def _progress() -> Progress:
    """The one progress bar of long commands: description, bar, done/total, elapsed; gone when finished."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)  # fmt: skip


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
    with _progress() as bar:
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

    with _progress() as bar:
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


@app.command()
def overlap(
    store_a: Annotated[str, typer.Argument(help="store folder or s3:// URL")],
    store_b: Annotated[str, typer.Argument(help="the store to compare it with")],
    out: Annotated[
        Path | None, typer.Option("--out", help="write overlap.parquet (record pairs) and overlap.json here")
    ] = None,
    threshold: Annotated[float, typer.Option(help="sketch correlation from which two windows are near copies")] = 0.97,
    show: Annotated[int, typer.Option(help="record pairs to print")] = 20,
    storage_option: StorageOption = None,
) -> None:
    """Recordings in both stores: exact copies (the same source signal) and near ones (another format, rate or filter)."""
    from physiofm.io import parse_storage_options
    from physiofm.store.overlap import overlap as run
    from physiofm.store.overlap import print_report, write_report

    try:
        report = run(store_a, store_b, threshold=threshold, storage_options=parse_storage_options(storage_option))
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]overlap failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    print_report(report, Console(width=200), show)
    if out:
        write_report(report, out)


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
    store: Annotated[
        list[str], typer.Argument(help="ECG (or EEG) store; several are mixed into one stream (same sample shape)")
    ],
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
    inter_unit: Annotated[
        InterUnit | None,
        typer.Option(
            help="inter-lead unit: single leads, or the 6 limb leads as one group, chest leads one by one "
            "(default limb-group: single limb leads are sums of I and II)"
        ),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(help="weights of the stores per epoch, e.g. 0.5,0.3,0.2 (default: in proportion to their sizes)"),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="leave out the recordings this store also holds, with their subjects (repeatable)"),
    ] = None,
    storage_option: StorageOption = None,
    ddp: Ddp = False,
) -> None:
    """Dual-masking reconstruction pretraining of a CBraMod encoder on one or more stores (data-parallel under
    torchrun)."""
    from physiofm.train.data.index import parse_mix
    from physiofm.train.distributed import is_main
    from physiofm.train.pretrain import PretrainConfig
    from physiofm.train.pretrain import pretrain as run

    options = _options(epochs, max_steps, batch_size, lr, workers, device, seed, resume, storage_option, ddp)
    masking = {"mode": mask.value, **({"inter_unit": inter_unit.value} if inter_unit else {})}
    try:
        weights = parse_mix(mix, len(store))
        config = PretrainConfig(store[0] if len(store) == 1 else list(store), out, modality=modality.value,
                                mix=None if weights is None else list(weights), exclude=list(exclude or []),
                                checkpoint_every=checkpoint_every,
                                model=_sizes(layers), masking=masking, **options)  # fmt: skip
        summary = _train("pretrain", run, config)
    except ValueError as error:
        console.print(f"[red]pretrain failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    if is_main():
        console.print(
            f"pretrained {summary['steps']} steps, final loss {summary['final_loss']}, "
            f"{summary['samples_per_s']:.1f} samples/s → {out}",
            soft_wrap=True,
        )


Mode = _choices("Mode", ("full", "frozen-mlp", "linear"))  # physiofm.train.finetune.MODES
LabelKind = _choices("LabelKind", ("auto", "binary", "multilabel", "multiclass"))  # physiofm.train.labels.KINDS


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


@app.command()
def finetune(
    store: Annotated[str, typer.Argument(help="labelled store (emotion, PTB-XL, Challenge, CODE-15%, …)")],
    out: Annotated[str, typer.Option("--out", help="run folder")],
    modalities: Annotated[str, typer.Option(help="eeg, ecg or eeg,ecg")] = "eeg,ecg",
    targets: Annotated[
        str,
        typer.Option(
            help="boolean columns (valence → valence_high), or one list column (ptbxl_superclass, dx) "
            "or one categorical column"
        ),
    ] = "valence,arousal,dominance",
    label_kind: Annotated[LabelKind, typer.Option(help="how targets are read (auto: from the column types)")] = "auto",
    classes: Annotated[
        str | None, typer.Option(help="fixed label vocabulary, comma-separated (default: every class of the store)")
    ] = None,
    min_count: Annotated[int, typer.Option(help="leave out classes held by fewer rows of the store")] = 1,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="subject-wise protocol (ptbxl: folds 1-8 train, 9 validate, 10 test; "
            "split: the corpus's own train/eval split, e.g. TUAB)"
        ),
    ] = "kfold-subject",
    folds: int = 5,
    val_fraction: Annotated[
        float, typer.Option(help="share of each fold's training subjects kept for validation (checkpoint, thresholds)")
    ] = 0.2,
    mode: Annotated[Mode, typer.Option(help="full: end to end; frozen-mlp / linear: heads on frozen embeddings")] = (
        "full"
    ),
    label_fraction: Annotated[
        str, typer.Option(help="fractions of training labels, e.g. 0.01,0.1,1 (nested, subject-wise, seeded)")
    ] = "1",
    seeds: Annotated[int, typer.Option(help="seeds per configuration (mean and spread)")] = 1,
    baselines: Annotated[
        str,
        typer.Option(
            help="also run: random (the same encoders randomly initialised), scratch (random, trained full); "
            "'none' for neither"
        ),
    ] = "random",
    eeg_weights: Annotated[str | None, typer.Option(help="CBraMod checkpoint (official layout)")] = None,
    ecg_weights: Annotated[str | None, typer.Option(help="a physiofm pretraining run (or encoder .pt)")] = None,
    epochs: int = 10,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: BatchSize = 32,
    lr: float = 1e-4,
    head_lr: Annotated[float, typer.Option(help="learning rate of the head")] = 1e-3,
    patience: Annotated[int, typer.Option(help="early stop after N validation passes without gain (0: never)")] = 0,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95 % intervals (0: none)")] = 1000,
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
    """Fine-tune or probe encoders under a subject-wise protocol, beside a random-initialised baseline; print metrics."""
    from physiofm.train.distributed import is_main
    from physiofm.train.finetune import FinetuneConfig, comparison, evaluation_rows
    from physiofm.train.finetune import finetune as run

    chosen = () if baselines.strip().lower() == "none" else _names(baselines)
    options = _options(epochs, max_steps, batch_size, lr, workers, device, seed, resume, storage_option, ddp)
    try:
        config = FinetuneConfig(store, out, modalities=_names(modalities), targets=_names(targets),
                                label_kind=label_kind.value, classes=_names(classes or ""), min_count=min_count,
                                protocol=protocol.value, folds=folds, val_fraction=val_fraction, mode=mode.value,
                                label_fractions=_floats(label_fraction, "--label-fraction"), seeds=seeds,
                                baselines=chosen, eeg_weights=eeg_weights, ecg_weights=ecg_weights,
                                head_lr=head_lr, patience=patience, bootstrap=bootstrap,
                                eeg_model=_sizes(eeg_layers), ecg_model=_sizes(ecg_layers), **options)  # fmt: skip
        _train("finetune", run, config)
    except ValueError as error:
        console.print(f"[red]finetune failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    if is_main():
        _print_comparison(comparison([out]))
        _print_evaluation(evaluation_rows([out]))


@app.command()
def embed(
    store: Annotated[str, typer.Argument(help="store folder or s3:// URL")],
    weights: Annotated[
        str, typer.Option(help="pretraining run, encoder .pt, CBraMod checkpoint, or 'random' (with --layers)")
    ],
    out: Annotated[str, typer.Option("--out", help="embeddings folder or s3:// URL (Zarr + Parquet)")],
    modality: Annotated[Modality | None, typer.Option(help="default: the store's only modality, else ecg")] = None,
    patches: Annotated[bool, typer.Option("--patches", help="also write per-patch embeddings")] = False,
    patch_dtype: Annotated[DtypeChoice, typer.Option(help="dtype of the per-patch array")] = "float32",
    layers: Annotated[int | None, typer.Option(help="encoder layers (random, or files without a saved size)")] = None,
    batch_size: int = 64,
    block_rows: Annotated[int, typer.Option(help="rows per written block (resuming skips finished blocks)")] = 256,
    workers: int = 0,
    device: Device = "auto",
    seed: Annotated[int, typer.Option(help="initialisation of a random encoder")] = 0,
    storage_option: StoreOption = None,
) -> None:
    """Write per-sample embeddings (pooled; per patch with --patches), row-aligned with the manifest; resumable."""
    from physiofm.io import parse_storage_options
    from physiofm.train.embed import EmbedConfig
    from physiofm.train.embed import embed as run

    config = EmbedConfig(store, out, weights=weights, modality=modality.value if modality else None,
                         model=_sizes(layers), patches=patches, patch_dtype=patch_dtype.value, batch_size=batch_size,
                         block_rows=block_rows, workers=workers, device=device.value, seed=seed,
                         storage_options=parse_storage_options(storage_option))  # fmt: skip
    with Progress(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("embedding", total=None)
        try:
            info = run(config, progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (ValueError, FileNotFoundError, OSError) as error:
            bar.stop()
            console.print(f"[red]embed failed:[/red] {error}", soft_wrap=True)
            raise typer.Exit(1) from None
    shapes = ", ".join(f"{name} {tuple(shape)}" for name, shape in info["arrays"].items())
    console.print(f"embedded {info['rows']} rows ({info['modality']}): {shapes} → {out}", soft_wrap=True)


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
        from physiofm.train.finetune import comparison, evaluation_rows

        _print_comparison(comparison([str(run) for run in finetuning]))
        _print_evaluation(evaluation_rows([str(run) for run in finetuning]))
    for run in pretraining:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [line["loss"] for line in lines if "loss" in line]
        last = f", loss {losses[0]:.4f} → {losses[-1]:.4f}" if losses else ""
        Console().print(f"pretraining run {run}: {len(lines)} steps logged{last}")


def _ms(value: tuple[float, float]) -> str:
    return "–" if value[0] != value[0] else f"{value[0]:.3f} ± {value[1]:.3f}"


def _ci(low: float, high: float) -> str:
    return "–" if low != low else f"[{low:.3f}, {high:.3f}]"


def _print_comparison(rows: list[dict]) -> None:
    """Fine-tuning runs: ROC-AUC and F1 per target (mean ± sd over folds; F1 at validation thresholds), the mean of
    those AUCs, and the pooled test macro AUC with its bootstrap interval."""
    targets = sorted({key.split(".")[0] for row in rows for key in row if "." in key})
    targets = targets if len(targets) <= 3 else []  # more classes: their macro mean only
    table = Table(title="fine-tuning results: ROC-AUC and F1, mean ± sd over folds; pooled over test sets")
    columns = ("run", "modalities", "mode", *[f"{t} AUC" for t in targets], *[f"{t} F1" for t in targets],
               "mean AUC", "pooled AUC", "95 % CI")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        cells = [row["run"], row["modalities"], row.get("mode", "full")]
        for metric in ("roc_auc", "f1"):
            cells += [_ms(row.get(f"{t}.{metric}", (float("nan"), 0.0))) for t in targets]
        pooled = row.get("pooled_auc", float("nan"))
        cells += [f"{row['mean_auc']:.3f}", "–" if pooled != pooled else f"{pooled:.3f}",
                  _ci(*row.get("pooled_auc_ci", (float("nan"), float("nan"))))]  # fmt: skip
        table.add_row(*cells)
    Console(width=200).print(table)


def _print_evaluation(rows: list[dict]) -> None:
    """Encoders × label fractions of runs with more than one cell: pooled test macro metrics, mean ± sd over seeds,
    the 95 % bootstrap interval (over test subjects) of their mean, and the mean over folds."""
    if len({(r["run"], r["encoder"], r["mode"], r["fraction"]) for r in rows}) < 2:
        return
    table = Table(title="encoders and label fractions: pooled test macro metrics (± sd over seeds, 95 % CI)")
    for column in ("run", "encoder", "mode", "labels", "train rows", "seeds", "macro ROC-AUC", "95 % CI",
                   "macro PR-AUC", "macro F1", "ROC-AUC per fold"):  # fmt: skip
        table.add_column(column, no_wrap=True)
    for r in sorted(rows, key=lambda r: (r["run"], r["encoder"], r["mode"], -r["fraction"])):
        pooled, folds = r["pooled"], r["per_fold"]
        ci = r.get("ci", {}).get("roc_auc", [float("nan"), float("nan")])
        table.add_row(r["run"], r["encoder"], r["mode"], f"{r['fraction']:.0%}", f"{r['train_rows']:.0f}",
                      str(len(r["seeds"])), _ms((pooled["roc_auc"]["mean"], pooled["roc_auc"]["std"])), _ci(*ci),
                      _ms((pooled["pr_auc"]["mean"], pooled["pr_auc"]["std"])),
                      _ms((pooled["f1"]["mean"], pooled["f1"]["std"])),
                      _ms((folds["roc_auc"]["mean"], folds["roc_auc"]["std"])))  # fmt: skip
    Console(width=200).print(table)


def main() -> None:
    try:
        app()
    finally:
        # the command is done and its output written: what is left is the interpreter's exit, whose
        # garbage collections walk every object the imports made (polars, zarr, fsspec: 0.3-0.4 s of a
        # build's wall time); frozen objects are not walked.  atexit handlers and flushing still run.
        gc.freeze()


if __name__ == "__main__":
    main()
