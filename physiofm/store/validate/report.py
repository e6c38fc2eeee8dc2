"""What validate found: problems with a check and a stable code, figures per section, and the printed summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Problem:
    """One departure: which check found it, a stable code, and a message naming what is wrong."""

    check: str
    code: str
    message: str


@dataclass
class Report:
    """What validate found (``problems``) and the figures of the summary (``sections``)."""

    store: str
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: str, code: str, message: str) -> None:
        self.problems.append(Problem(check, code, message))

    def to_json(self) -> str:
        """The machine-readable report (``--json``)."""
        body = {
            "store": self.store,
            "deep": self.deep,
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
            "sections": self.sections,
        }
        return json.dumps(body, indent=2, default=str)


def print_report(report: Report, console: Console) -> None:
    """The readable summary: store and counts, what was checked, splits, balance, every problem."""
    mode = "deep" if report.deep else "default"
    overview = Table(title=f"validate {report.store} ({mode})", show_header=False)
    for section in ("store", "counts", "checked"):
        for label, value in report.sections.get(section, {}).items():
            if value is not None:
                overview.add_row(label, str(value))
    console.print(overview)
    splits = report.sections.get("splits") or {}
    if splits:
        table = Table(title="subjects per split")
        for header in ("column", "value", "samples", "subjects"):
            table.add_column(header)
        for column, section in splits.items():
            for value, figures in section["values"].items():
                table.add_row(column, value, str(figures["samples"]), str(figures["subjects"]))
            table.add_row(column, "leaked subjects", "", str(section.get("leaked subjects", "-")))
        console.print(table)
    balance = report.sections.get("balance") or {}
    if balance:
        table = Table(title="class balance")
        table.add_column("label")
        table.add_column("samples per value", overflow="fold")
        for column, counts in balance.items():
            shown = [f"{value} {n}" for value, n in list(counts.items())[:8]]
            table.add_row(column, ", ".join(shown) + (f", … {len(counts) - 8} more" if len(counts) > 8 else ""))
        console.print(table)
    if report.problems:
        count = f"{len(report.problems)} problem{'s' if len(report.problems) > 1 else ''}"
        table = Table(title=count, title_style="bold red")
        for header in ("check", "code"):
            table.add_column(header, no_wrap=True)
        table.add_column("message", overflow="fold")
        for problem in report.problems:
            table.add_row(problem.check, problem.code, problem.message)
        console.print(table)
        console.print(f"[bold red]{report.store}: {count}[/bold red]")
    else:
        console.print(f"[bold green]{report.store}: clean[/bold green] ({mode} check)")
