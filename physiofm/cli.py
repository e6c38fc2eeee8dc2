"""The ``physiofm`` command line: thin wrappers over the library, one command per job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Physiological foundation models: data first.")
build_app = typer.Typer(no_args_is_help=True, help="Build a store (shards, Zarr, manifests) from a raw archive.")
app.add_typer(build_app, name="build")
console = Console(stderr=True)

Jobs = Annotated[Optional[int], typer.Option("--jobs", "-j", help="worker processes (default: all cores)")]
Recipe = Annotated[Optional[str], typer.Option(help="recipe name (manifests/recipes) or .toml path")]
ShardSize = Annotated[Optional[int], typer.Option(help="target samples per shard")]
Dtype = Annotated[Optional[str], typer.Option(help="float32 or float16")]
StorageOption = Annotated[Optional[list[str]], typer.Option(
    "--storage-option", "-o", help="fsspec storage option KEY=VALUE for OUT (repeatable)")]


def _run_build(**kwargs) -> None:
    from physiofm.io import parse_storage_options
    from physiofm.pipeline.build import BuildError, build

    kwargs["storage_options"] = parse_storage_options(kwargs.pop("storage_option"))
    with Progress(TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("build", total=None)
        try:
            summary = build(**kwargs, progress=lambda _, done, total: bar.update(task, completed=done, total=total))
        except (BuildError, ValueError, FileNotFoundError) as error:
            bar.stop()
            console.print(f"[red]build failed:[/red] {error}", soft_wrap=True)
            raise typer.Exit(1) from None
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['dataset']} → {summary['out']} ({summary['status']})", show_header=False)
    rate = summary["records_read"] / summary["seconds"] if summary["seconds"] else 0.0
    for label, key in (("items listed", "items"), ("records read", "records_read"),
                       ("records rejected", "records_rejected"), ("windows written", "samples"),
                       ("windows rejected", "windows_rejected"), ("shards", "shards")):
        table.add_row(label, str(summary[key]))
    table.add_row("time", f"{summary['seconds']:.1f} s ({rate:.0f} records/s)")
    for reason, count in summary.get("rejected_by_reason", {}).items():
        table.add_row(f"rejected: {reason}", str(count))
    Console().print(table)


@build_app.command("ecg")
def build_ecg(
    source: Annotated[str, typer.Argument(help="archive folder or URL")],
    out: Annotated[str, typer.Argument(help="store folder or s3:// URL")],
    format: Annotated[str, typer.Option(help="auto, wfdb, ptbxl, challenge, mimic-iv-ecg, code15")] = "auto",
    recipe: Recipe = None, jobs: Jobs = None, shard_size: ShardSize = None, dtype: Dtype = None,
    storage_option: StorageOption = None,
) -> None:
    """Build an ECG store: 12 standard leads, 200 Hz, windows of (12, N, 200) patches."""
    _run_build(source=source, out=out, fmt=format, kind="ecg", recipe=recipe, jobs=jobs,
               shard_size=shard_size, dtype=dtype, storage_option=storage_option)


@build_app.command("emotion")
def build_emotion(
    source: Annotated[str, typer.Argument(help="dataset folder or URL")],
    out: Annotated[str, typer.Argument(help="store folder or s3:// URL")],
    dataset: Annotated[str, typer.Option(help="dreamer, amigos, mahnob or auto")] = "auto",
    recipe: Recipe = None, jobs: Jobs = None, shard_size: ShardSize = None, dtype: Dtype = None,
    storage_option: StorageOption = None,
) -> None:
    """Build a paired EEG+ECG store from an emotion dataset (one sample = both modalities)."""
    _run_build(source=source, out=out, fmt=dataset, kind="emotion", recipe=recipe, jobs=jobs,
               shard_size=shard_size, dtype=dtype, storage_option=storage_option)


@app.command()
def synth(
    name: Annotated[str, typer.Argument(help="ptbxl, challenge, mimic-iv-ecg, code15, dreamer, amigos, mahnob")],
    out: Annotated[Path, typer.Argument(help="folder to write")],
    records: Annotated[int, typer.Option(help="records (ECG archives)")] = 20,
    subjects: Annotated[int, typer.Option(help="subjects (emotion datasets)")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a small dataset with the exact on-disk layout of a real archive."""
    from physiofm.synth import generate

    root = generate(name, out, records=records, subjects=subjects, seed=seed)
    console.print(f"wrote {name} layout to {root}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
