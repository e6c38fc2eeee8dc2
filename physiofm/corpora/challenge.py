"""PhysioNet/CinC Challenge 2020/2021: ``.hea`` + MATLAB v4 ``.mat`` per record.

Headers are parsed by our own WFDB parser (``wfdb`` rejects real Georgia headers); labels
come from the ``#Dx`` (SNOMED-CT codes), ``#Age`` and ``#Sex`` comments, the subset from the
folder (``training/<subset>/g1/...``).
"""

from __future__ import annotations

from collections.abc import Iterator

from physiofm.corpora import wfdb_tree as wfdb_dir
from physiofm.corpora.base import Item, Record, Reject
from physiofm.io import find_files, url_to_fs

NAME = "challenge"


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    for header in find_files(fs, base, ".hea", maxdepth=6)[:5]:
        lines = [line for line in fs.cat_file(header).decode("latin-1").splitlines()[1:] if line.strip()]
        if lines and lines[0].split()[0].endswith(".mat"):
            return True
    return False


def list_items(root: str) -> list[Item]:
    """Every record with a header, and every ``.mat`` without one (rejected when read)."""
    fs, base = url_to_fs(root)
    items = wfdb_dir.list_headers(root)
    known = {item.id for item in items}
    for path in find_files(fs, base, ".mat"):
        rel = path[len(base.rstrip("/")) + 1 :]
        if rel[:-4] not in known:
            items.append(Item(id=rel[:-4], path=rel[:-4] + ".hea"))
    return sorted(items, key=lambda item: item.id)


def subset_of(item_id: str, root: str) -> str:
    parts = item_id.split("/")[:-1]
    if "training" in parts:
        parts = parts[parts.index("training") + 1 :]
    parts = [p for p in parts if not (p.startswith("g") and p[1:].isdigit())]
    return parts[0] if parts else root.rstrip("/").rsplit("/", 1)[-1]


def _age(value: str | None) -> float | None:
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if age != age else age


def _sex(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value if value in ("female", "male") else None


def _labels(root: str):
    def describe(item: Item, header) -> tuple[None, dict]:
        fields = header.comment_fields()
        dx = [code.strip() for code in fields.get("Dx", "").split(",") if code.strip()]
        return None, {
            "dx": dx,
            "age": _age(fields.get("Age")),
            "sex": _sex(fields.get("Sex")),
            "subset": subset_of(item.id, root),
        }

    return describe


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    return wfdb_dir.read_records(root, items, NAME, _labels(root))
