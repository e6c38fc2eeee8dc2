"""All file access goes through fsspec, so a local path and an ``s3://`` URL behave the same.

Writes that must never be seen half-done go through :func:`atomic_write`: on a local
filesystem the bytes go to a temporary name in the same folder and are renamed into place;
on object stores (S3) an object only becomes visible when its upload completes, so the
final key is written directly.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

StorageOptions = dict[str, Any]


def url_to_fs(url: str, storage_options: StorageOptions | None = None):
    """Return ``(filesystem, path)`` for a local path or any fsspec URL."""
    return fsspec.core.url_to_fs(str(url), **(storage_options or {}))


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` (works for paths and for URLs)."""
    out = str(base).rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def find_files(fs, base: str, suffix: str = "", *, maxdepth: int | None = None) -> list[str]:
    """Every file below ``base`` whose name ends with ``suffix`` (case as written), sorted.

    ``maxdepth`` counts levels as fsspec does (files directly in ``base`` are at depth 1). One
    listing of the tree.  Locally it is ``os.walk`` (symbolic links to folders are followed, as a
    user who links a dataset folder in expects, each folder listed once, under its first name in
    sorted order; a folder is never reported as a file), about 8x faster than fsspec's ``find``,
    which stats every entry; elsewhere (S3, ...) ``fs.find``.
    """
    base = str(base).rstrip("/") or "/"
    if not is_local(fs):
        return sorted(p for p in fs.find(base, maxdepth=maxdepth) if p.endswith(suffix))
    base = fs._strip_protocol(base)
    found: list[str] = []
    seen: set[tuple[int, int]] = set()  # folders already listed: a link back up is not a loop
    prefix = len(base.rstrip("/"))
    for folder, dirs, files in os.walk(base, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()  # the same walk every time: a folder reached twice is listed under its first name
        if maxdepth is not None and folder[prefix:].count(os.sep) + 1 >= maxdepth:
            dirs[:] = []  # the files here are at maxdepth; nothing below is
        folder = folder.replace(os.sep, "/")
        found.extend(f"{folder}/{name}" for name in files if name.endswith(suffix))
    return sorted(found)


def read_bytes(fs, path: str) -> bytes:
    """A whole file's bytes (``fs.cat_file``); locally a plain ``open``, a third of fsspec's cost
    for the small files of a record (FileNotFoundError either way when it is missing)."""
    if is_local(fs):
        with open(fs._strip_protocol(path), "rb") as handle:
            return handle.read()
    return fs.cat_file(path)


def read_head(fs, path: str, size: int) -> bytes:
    """The first ``size`` bytes of a file (fewer if it is shorter); locally without fsspec's file object."""
    if is_local(fs):
        with open(fs._strip_protocol(path), "rb") as handle:
            return handle.read(size)
    with fs.open(path, "rb") as handle:
        return handle.read(size)


def full_url(fs, path: str) -> str:
    """A URL for ``path`` on ``fs`` that other processes can open (``s3://bucket/key``)."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


@contextmanager
def atomic_write(fs, path: str, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open ``path`` for writing so that it appears complete or not at all.

    Locally, ``durable`` also flushes the bytes to the disk (``fsync``) before the rename, so that
    even a crash of the machine leaves the old file or the new one.  Without it, a killed process
    still leaves the old or the new file; only the operating system's crash can leave a renamed
    file short (ext4 and xfs write a file's data before its size, so it is short, not wrong): large
    files whose writer checks their size when it resumes (the build's shards) use that, since
    waiting for the disk costs about 2 ms per MB.
    """
    if is_local(fs):
        folder = os.path.dirname(path)
        os.makedirs(folder or ".", exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, mode) as handle:
                yield handle
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        handle = fs.open(path, mode)
        try:
            yield handle
        except BaseException:
            if hasattr(handle, "discard"):
                handle.discard()  # abandon the upload: the object never appears
                handle.closed = True  # and never upload on garbage collection
            raise
        handle.close()


def write_bytes(fs, path: str, data: bytes, *, durable: bool = True) -> None:
    with atomic_write(fs, path, durable=durable) as handle:
        handle.write(data)


def parse_storage_options(pairs: list[str] | None) -> StorageOptions:
    """``["endpoint_url=http://127.0.0.1:5000", "anon=false"]`` → a storage-options dict."""
    options: StorageOptions = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"storage option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        lowered = value.lower()
        options[key] = True if lowered == "true" else False if lowered == "false" else value
    return options


def json_bytes(obj) -> bytes:
    """Canonical JSON (sorted keys, no spaces, no NaN): the bytes of sample metadata and build markers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
