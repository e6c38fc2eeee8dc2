"""The pieces of a self-contained HTML page: inline CSS, tables, bars, and figures as PNG data URIs.

A page built from these needs nothing outside itself: no stylesheet, script, font or image is
fetched (images are ``data:image/png;base64,...``), so it can be mailed, archived or opened
offline.  Every text that comes from data goes through :func:`esc`.  Void elements are written
self-closed (``<img ... />``), so the page parses with balanced tags.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2330;
       background: #f5f6f8; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; }
header { background: #1f3b73; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; opacity: .85; font-size: 14px; }
nav { font-size: 13px; margin: 12px 0 0; }
nav a { color: #fff; margin-right: 14px; }
h2 { border-bottom: 2px solid #1f3b73; padding-bottom: 4px; margin-top: 36px; font-size: 19px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
section { background: #fff; padding: 4px 20px 18px; margin-top: 18px; border-radius: 6px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e3e6eb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: #eef1f6; border-radius: 6px; padding: 10px 16px; min-width: 120px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { font-size: 12px; color: #555d6b; }
.bar { background: #e3e6eb; width: 220px; height: 12px; border-radius: 3px; display: inline-block; }
.bar span { background: #3a6fc4; height: 12px; border-radius: 3px; display: block; }
.note { color: #555d6b; font-size: 13px; }
.warn { color: #a4361b; }
pre { background: #f0f2f5; padding: 10px 14px; font-size: 12px; overflow-x: auto; border-radius: 4px; }
pre.cols { column-width: 300px; column-gap: 28px; }
img { max-width: 100%; height: auto; }
.tiles figure img { max-width: 380px; }
figure { margin: 10px 0; }
figcaption { font-size: 12px; color: #555d6b; }
.tiles { display: flex; flex-wrap: wrap; gap: 4px 36px; align-items: flex-start; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 14px; }
"""


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is also safe in an attribute)."""
    return html.escape(str(value), quote=True)


def anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole page: a header with a table of contents, then one ``<section>`` per ``(title, body)``."""
    links = "".join(f'<a href="#{anchor(name)}">{esc(name)}</a>' for name, _ in sections)
    body = "".join(
        f'<section id="{anchor(name)}"><h2>{esc(name)}</h2>{content}</section>' for name, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8" />'
        '<meta name="viewport" content="width=device-width, initial-scale=1" />'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p><nav>{links}</nav></header>"
        f"<main>{body}</main></body></html>\n"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """A table; cells are escaped unless wrapped in :class:`Raw`; columns in ``numeric`` right-aligned."""

    def cell(tag: str, index: int, value: Any) -> str:
        css = ' class="num"' if index in numeric else ""
        text = value.html if isinstance(value, Raw) else esc(_fmt(value))
        return f"<{tag}{css}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of names and values, without a header row."""
    body = "".join(f"<tr><th>{esc(name)}</th><td>{esc(_fmt(value))}</td></tr>" for name, value in rows)
    return f"<table><tbody>{body}</tbody></table>"


def tiles(parts: Iterable[str]) -> str:
    """Blocks side by side, wrapping to the next line when the page is narrow."""
    return '<div class="tiles">' + "".join(f"<div>{part}</div>" for part in parts) + "</div>"


class Raw:
    """Markup to put in a table cell as it is (already escaped by whoever made it)."""

    def __init__(self, markup: str) -> None:
        self.html = markup


def bar(fraction: float) -> Raw:
    """A horizontal bar, ``fraction`` (0-1) of its width filled."""
    width = max(0.0, min(1.0, float(fraction))) * 100
    return Raw(f'<span class="bar"><span style="width:{width:.1f}%"></span></span>')


def cards(items: Sequence[tuple[str, Any]]) -> str:
    """Big figures in boxes: ``(label, value)``."""
    inner = "".join(
        f'<div class="card"><div class="value">{esc(_fmt(value))}</div><div class="label">{esc(label)}</div></div>'
        for label, value in items
    )
    return f'<div class="cards">{inner}</div>'


def note(text: str, warn: bool = False) -> str:
    return f'<p class="note{" warn" if warn else ""}">{esc(text)}</p>'


def pre(text: str, columns: bool = False) -> str:
    """Preformatted text; ``columns``: flowed into as many columns as the page is wide enough for."""
    css = ' class="cols"' if columns else ""
    return f"<pre{css}>{esc(text)}</pre>"


def pretty_json(value: Any) -> str:
    return pre(json.dumps(value, indent=2, sort_keys=True, default=str))


def toml_text(value: dict) -> str:
    """A nested dict written as TOML-like text (top-level values first, then one ``[table]`` per dict),
    values in JSON notation: how a recipe reads in ``manifests/recipes``."""
    lines: list[str] = []

    def write(table: dict, prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix and (scalars or not table):
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {json.dumps(v, default=str, ensure_ascii=False)}" for k, v in scalars.items())
        if scalars:
            lines.append("")
        for key, sub in table.items():
            if isinstance(sub, dict):
                write(sub, f"{prefix}.{key}" if prefix else key)

    write(value, "")
    return "\n".join(lines).rstrip() + "\n"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, caption: str | None = None) -> str:
    """A PNG embedded in the page, in a ``<figure>`` with an optional caption."""
    text = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}" />{text}</figure>'


def figure_png(size: tuple[float, float], draw: Callable[[Any], None]) -> bytes:
    """PNG bytes of a figure of ``size`` inches whose axes ``draw(axes)`` fills (the project's figure set-up)."""
    from physiofm.train.plots import figure

    buffer = io.BytesIO()
    with figure(buffer, size) as axes:
        draw(axes)
    return buffer.getvalue()


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)
