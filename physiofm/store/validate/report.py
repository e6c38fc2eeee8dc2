"""What validate found: problems and warnings with a check and a stable code, figures per section, the printed summary.

*Problems* are departures from what a store must be (a missing shard, a leak, a NaN): any one
makes ``ok`` False and ``physiofm validate`` exit with status 1.  *Warnings* are findings that
may be right for some data but usually mean a mistake upstream: amplitudes far from
physiological (check ``scale``: a wrong source unit, one lead ten times off).  They are printed
and written to ``--json`` but keep ``ok`` True: a store of unusual but real recordings must
still validate, and a pipeline that wants them fatal reads ``warnings`` from the JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Problem:
    """One departure: which check found it, a stable code, and a message naming what is wrong."""

    check: str
    code: str
    message: str


@dataclass
class Report:
    """What validate found (``problems``, ``warnings``) and the figures of the summary (``sections``).

    ``ok`` depends on the problems only: warnings are shown, never failing.
    """

    store: str
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: str, code: str, message: str) -> None:
        self.problems.append(Problem(check, code, message))

    def warn(self, check: str, code: str, message: str) -> None:
        """A finding to show that does not fail the store (see the module docstring)."""
        self.warnings.append(Problem(check, code, message))

    @property
    def read(self) -> str | None:
        """What the check read, in one sentence (the default check reads a sample: it says how much)."""
        return (self.sections.get("checked") or {}).get("read")

    def to_json(self) -> str:
        """The machine-readable report (``--json``)."""
        body = {
            "store": self.store,
            "deep": self.deep,
            "ok": self.ok,
            "read": self.read,
            "problems": [asdict(p) for p in self.problems],
            "warnings": [asdict(w) for w in self.warnings],
            "sections": self.sections,
        }
        return json.dumps(body, indent=2, default=str)


def _cell(value: Any) -> str:
    """A value of the overview: a dict as ``key value, …``, a list joined."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_cell(item)}" for key, item in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _amplitude_table(amplitude: dict[str, dict[str, Any]]) -> Table:
    """Median (quartiles) of the per-window p99 of |x| per channel, and the lead II R peaks."""

    def cell(figures: dict[str, Any] | None) -> str:
        if not figures or figures.get("median") is None:
            return "-"
        return f"{figures['median']:.3g} ({figures['q1']:.3g}–{figures['q3']:.3g})"

    table = Table(title="amplitude: median (quartiles) over windows")
    for header in ("modality", "channel", "p99 |x|", "windows"):
        table.add_column(header)
    for modality, section in amplitude.items():
        unit = section.get("unit") or ""
        for name, figures in (section.get("channels") or {}).items():
            table.add_row(f"{modality} ({unit})", name, cell(figures), str(figures.get("windows", "")))
        if "r_peak_ii" in section:
            peaks = section["r_peak_ii"]
            table.add_row(f"{modality} ({unit})", "R peak, lead II", cell(peaks), str(peaks.get("windows", "")))
    return table


def print_report(report: Report, console: Console) -> None:
    """The readable summary: store and counts, what was checked, splits, balance, amplitudes, problems, warnings."""
    mode = "deep" if report.deep else "default"
    overview = Table(title=f"validate {report.store} ({mode})", show_header=False)
    for section in ("store", "counts", "checked"):
        for label, value in report.sections.get(section, {}).items():
            if value is not None and label != "read":
                overview.add_row(label, escape(_cell(value)))
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
    amplitude = report.sections.get("amplitude") or {}
    if amplitude:
        console.print(_amplitude_table(amplitude))
    if report.warnings:
        table = Table(title=_plural(len(report.warnings), "warning"), title_style="bold yellow")
        for header in ("check", "code"):
            table.add_column(header, no_wrap=True)
        table.add_column("message", overflow="fold")
        for warning in report.warnings:
            table.add_row(warning.check, warning.code, escape(warning.message))
        console.print(table)
    warned = f", {_plural(len(report.warnings), 'warning')}" if report.warnings else ""
    if report.problems:
        count = f"{len(report.problems)} problem{'s' if len(report.problems) > 1 else ''}"
        table = Table(title=count, title_style="bold red")
        for header in ("check", "code"):
            table.add_column(header, no_wrap=True)
        table.add_column("message", overflow="fold")
        for problem in report.problems:
            table.add_row(problem.check, problem.code, escape(problem.message))
        console.print(table)
        console.print(f"[bold red]{report.store}: {count}[/bold red]{warned}")
    else:
        console.print(f"[bold green]{report.store}: clean[/bold green] ({mode} check){warned}")
    if report.read:
        console.print(f"[dim]{mode} check {escape(report.read)}[/dim]", soft_wrap=True)
