"""One hashing stream: sha256 and byte count of what is written through it, or read through it."""

from __future__ import annotations

import hashlib
import io


class HashingStream(io.RawIOBase):
    """Wrap ``handle`` for writing (``mode="wb"``) or reading (``"rb"``), hashing every byte that passes.

    Reading, :meth:`seek` only goes forward, by reading (and hashing) the bytes skipped, so a
    reader that skips members still hashes the whole file.
    """

    def __init__(self, handle, mode: str = "rb") -> None:
        self.handle = handle
        self.mode = mode
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return self.mode == "rb"

    def writable(self) -> bool:
        return self.mode == "wb"

    def seekable(self) -> bool:
        return self.mode == "rb"

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self.sha.hexdigest()

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.handle.write(data)
        return len(data)

    def readinto(self, buffer) -> int:
        data = self.handle.read(len(buffer))
        buffer[: len(data)] = data
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.size + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self.size:
            raise io.UnsupportedOperation("a hashing stream only seeks forward")
        while self.size < target and self.read(min(target - self.size, 1 << 22)):
            pass
        return self.size

    def drain(self) -> None:
        """Read (and hash) to the end."""
        while self.read(1 << 22):
            pass
