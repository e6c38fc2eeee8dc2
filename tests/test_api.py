"""The public API and the command line: lazy top-level names, choices from the library, errors in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import physiofm
from physiofm import cli
from physiofm.corpora import registry

README = Path(__file__).resolve().parent.parent / "README.md"
HEAVY = ("torch", "numpy", "polars", "zarr", "scipy", "webdataset", "typer")


def fresh_python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_import_physiofm_imports_nothing_heavy():
    done = fresh_python(f"import sys, json, physiofm; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_every_public_name_resolves_to_its_object():
    from physiofm.models import CBraMod, create_model, load_pretrained
    from physiofm.store.build import build
    from physiofm.store.validate import validate
    from physiofm.train.data.stream import StreamingDataset
    from physiofm.train.data.zarr_dataset import ZarrDataset

    expected = {
        "build": build,
        "validate": validate,
        "StreamingDataset": StreamingDataset,
        "ZarrDataset": ZarrDataset,
        "CBraMod": CBraMod,
        "create_model": create_model,
        "load_pretrained": load_pretrained,
    }
    for name, value in expected.items():
        assert getattr(physiofm, name) is value
    assert physiofm.corpora.get("ptbxl").kind == "ecg"
    assert set(physiofm.__all__) == {"__version__", *expected, "corpora"}
    with pytest.raises(AttributeError):
        physiofm.no_such_name  # noqa: B018


def test_cli_choices_are_the_library_lists():
    from physiofm.models.masking import MODES
    from physiofm.store.executors import EXECUTORS
    from physiofm.train.protocols import PROTOCOLS

    values = lambda enum: {member.value for member in enum}  # noqa: E731
    assert values(cli.Corpus) == set(registry.names())
    assert values(cli.ExecutorChoice) == set(EXECUTORS)
    assert values(cli.MaskMode) == set(MODES)
    assert values(cli.Protocol) == set(PROTOCOLS)


def test_help_lists_choices_and_a_wrong_value_is_one_line():
    runner = CliRunner()
    for kind in registry.KINDS:
        shown = runner.invoke(cli.app, ["build", kind, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and all(name in shown.output for name in registry.names(kind))
    wrong = runner.invoke(cli.app, ["finetune", "store", "--out", "run", "--protocol", "foo"], env={"COLUMNS": "200"})
    assert wrong.exit_code == 2
    assert "Traceback" not in wrong.output and "'foo' is not one of" in wrong.output


def test_the_command_freezes_the_heap_it_leaves_to_the_exit_and_keeps_its_exit_status(tmp_path):
    """``main()`` ends with ``gc.freeze()``: the interpreter's exit then does not walk every imported object.

    Checked after a failing command (the status must still reach the shell) and after one that works.
    """
    code = (
        "import gc, sys\n"
        "from physiofm.cli import main\n"
        "sys.argv = ['physiofm', *sys.argv[1:]]\n"
        "try:\n    main()\n"
        "finally:\n    print('frozen', gc.get_freeze_count() > 0)\n"
    )
    for argv, status in ((["--help"], 0), (["build", "ecg", str(tmp_path / "nowhere"), str(tmp_path / "out")], 1)):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == status, done.stderr
        assert done.stdout.strip().endswith("frozen True")
    assert "does not exist" in " ".join(done.stderr.split())


def test_a_missing_source_is_named(tmp_path):
    done = CliRunner().invoke(cli.app, ["build", "ecg", str(tmp_path / "does-not-exist"), str(tmp_path / "out")])
    assert done.exit_code == 1
    assert f"source {tmp_path / 'does-not-exist'} does not exist" in " ".join(done.output.split())
    assert not (tmp_path / "out").exists()


def test_readme_api_snippet_runs(tmp_path):
    """The README's Python API example, run as written in a fresh process."""
    text = README.read_text()
    section = text[text.index("## Python API") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    done = fresh_python(snippet, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
