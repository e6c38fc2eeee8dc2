"""An fsspec opener for webdataset's ``gopen``: ranged reads that survive dropped connections.

webdataset 1.0 has no ``s3://`` opener (and its ``pipe:``/``gs`` openers shell out); importing
this module registers :func:`gopen_fsspec` for ``s3`` in ``webdataset.gopen.gopen_schemes``
(:func:`register_opener` adds other fsspec protocols).  The returned :class:`RangeReader` reads
an object in blocks of ``block_size`` bytes, one ranged GET each; a failed block is requested
again from the first byte not yet delivered to the reader, at most ``retries`` more times, then
:class:`ShardReadError` names the object and the byte offset.  Endpoint and credentials come
from ``storage_options`` (``endpoint_url``, ``key``, ``secret``…) or the standard AWS variables.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from webdataset.gopen import gopen_schemes

from physiofm.io import StorageOptions, url_to_fs

BLOCK_SIZE = 8 << 20
RETRIES = 4
BACKOFF_S = 0.1
_T = TypeVar("_T")
_FATAL = (FileNotFoundError, PermissionError, IsADirectoryError)
_filesystems: dict[tuple[int, str, str], Any] = {}


class ShardReadError(OSError):
    """A shard could not be read, even after retries (the message names it)."""


def _filesystem(url: str, storage_options: StorageOptions | None):
    """This process's own filesystem for ``url``, with the filesystem's internal retries off.

    Our retry loop is then the only one, so ``retries`` is the real bound.  One instance per
    process and options: an instance made before a fork is never used after it.
    """
    options = dict(storage_options or {})
    key = (os.getpid(), url.split("://", 1)[0], repr(sorted(options.items())))
    if key not in _filesystems:
        fs, _ = url_to_fs(url, {**options, "skip_instance_cache": True})
        if hasattr(fs, "retries"):
            fs.retries = 1
        _filesystems[key] = fs
    fs = _filesystems[key]
    return fs, fs._strip_protocol(url)


class RangeReader(io.RawIOBase):
    """A seekable, read-only view of one remote object, fetched in retried ranged requests."""

    def __init__(
        self,
        fs,
        path: str,
        url: str,
        size: int | None = None,
        *,
        block_size: int = BLOCK_SIZE,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        super().__init__()
        self.fs, self.path, self.url = fs, path, url
        self.block_size, self.retries, self.backoff_s = block_size, retries, backoff_s
        self.size = size if size is not None else self._retry("size lookup", lambda: fs.size(path))
        self.pos = 0
        self._block = b""
        self._block_start = 0

    def __repr__(self) -> str:
        return f"RangeReader({self.url!r})"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target) and self.pos < self.size:
            offset = self.pos - self._block_start
            if not 0 <= offset < len(self._block):
                self._fetch()
                offset = 0
            part = memoryview(self._block)[offset : offset + len(target) - filled]
            target[filled : filled + len(part)] = part
            filled += len(part)
            self.pos += len(part)
        return filled

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        buffer = bytearray(max(0, n))
        return bytes(buffer[: self.readinto(buffer)])

    def _fetch(self) -> None:
        start, end = self.pos, min(self.pos + self.block_size, self.size)

        def get() -> bytes:
            data = self.fs.cat_file(self.path, start=start, end=end)
            if len(data) != end - start:
                raise OSError(f"short read: {len(data)} of {end - start} bytes")
            return data

        self._block = self._retry(f"read of bytes {start}-{end} (of {self.size})", get)
        self._block_start = start

    def _retry(self, what: str, call: Callable[[], _T]) -> _T:
        attempts = 0
        while True:
            attempts += 1
            try:
                return call()
            except _FATAL as error:
                raise ShardReadError(f"{self.url}: {what} failed: {error!r}") from error
            except Exception as error:  # transport errors differ per filesystem: retry them all
                if attempts > self.retries:
                    raise ShardReadError(f"{self.url}: {what} failed after {attempts} attempts: {error!r}") from error
                time.sleep(min(self.backoff_s * 2 ** (attempts - 1), 2.0))


def gopen_fsspec(
    url: str,
    mode: str = "rb",
    bufsize: int = 8192,
    *,
    storage_options: StorageOptions | None = None,
    size: int | None = None,
    retries: int = RETRIES,
    block_size: int = BLOCK_SIZE,
) -> RangeReader:
    """webdataset ``gopen`` handler for any fsspec URL (``size`` known in advance saves a HEAD)."""
    if mode != "rb":
        raise ValueError(f"{url}: only reading ('rb') is supported, not {mode!r}")
    fs, path = _filesystem(url, storage_options)
    return RangeReader(fs, path, url, size, block_size=block_size, retries=retries)


def register_opener(*protocols: str) -> None:
    """Open ``protocol://`` URLs in webdataset with :func:`gopen_fsspec`."""
    for protocol in protocols:
        gopen_schemes[protocol] = gopen_fsspec


register_opener("s3")
