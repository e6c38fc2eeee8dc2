"""Level-5 MAT files (DREAMER, AMIGOS) read through fsspec, with reasons a person can act on."""

from __future__ import annotations

import struct
from typing import Any

from fsspec import AbstractFileSystem

from physiofm.corpora import mat5


def load_mat(fs: AbstractFileSystem, path: str) -> dict[str, Any]:
    """``scipy.io.loadmat`` of a level-5 MAT file through fsspec (raw, not squeezed).

    Little-endian files of numeric, char, cell and struct arrays (DREAMER's, AMIGOS's) are read by
    :mod:`physiofm.corpora.mat5` (the same result, one inflate into one buffer); anything else by
    ``loadmat`` itself.  Raises ``ValueError`` with a reason a person can act on for v4, v7.3
    (HDF5), truncated or otherwise unreadable files.
    """
    with fs.open(path, "rb") as fh:
        if mat5.is_level5_le(fh.read(128)):
            fh.seek(0)
            try:
                return mat5.read(fh)
            except mat5.Unsupported:
                pass  # loadmat reads it below
            except (ValueError, struct.error) as exc:
                raise ValueError(f"truncated or corrupt MAT file ({type(exc).__name__}: {exc})") from exc
        from scipy.io import loadmat
        from scipy.io.matlab import matfile_version

        fh.seek(0)
        try:
            major, _ = matfile_version(fh)
        except Exception as exc:  # scipy raises several types for non-MAT content
            raise ValueError(f"not a MAT file ({exc})") from exc
        if major == 0:
            raise ValueError("MATLAB v4 MAT-file; expected a level-5 (v5/v7) MAT-file")
        if major == 2:
            raise ValueError("MATLAB v7.3 (HDF5) MAT-file; expected a level-5 (v5/v7) MAT-file")
        fh.seek(0)
        try:
            return loadmat(fh)
        except Exception as exc:
            raise ValueError(f"truncated or corrupt MAT file ({type(exc).__name__}: {exc})") from exc
