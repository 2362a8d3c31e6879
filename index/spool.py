"""An append-only float32 ``.npy`` file written with plain ``write`` calls.

The build streams vectors to disk a batch at a time. Writing them through a
memory map (``np.lib.format.open_memmap``) is what numpy offers, but a store
into a mapped page of a full file system is not an error the program can catch:
the kernel sends SIGBUS and the process dies without a word, and with in-process
jobs that process is the API. Plain writes report a full disk as ``OSError``
(ENOSPC), which the build turns into a clear failure.

The file is a valid ``.npy`` from the start: a header of fixed length reserves
room for any shape, so finishing only rewrites the header in place; nothing is
copied, and the build needs the vectors' size on disk once, not twice.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0: a 2-byte header length
HEADER_BYTES = 128  # magic + length + the dict, padded; a multiple of 64 as numpy aligns


def _header(n_rows: int, dim: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n_rows}, {dim}), }}"
    room = HEADER_BYTES - len(_MAGIC) - 2
    if len(text) + 1 > room:  # unreachable for any real shape: 20-digit row counts fit
        raise ValueError(f"shape ({n_rows}, {dim}) does not fit the reserved .npy header")
    padded = text.ljust(room - 1) + "\n"
    return _MAGIC + struct.pack("<H", room) + padded.encode("latin1")


class NpySpool:
    """Rows appended to ``path``; :meth:`finish` makes it a complete, fsynced ``.npy``."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.n_rows = 0
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in finish()/close()
        self._fh.write(_header(0, dim))

    def append(self, vectors: np.ndarray) -> None:
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of {self.dim} floats, got shape {rows.shape}")
        self._fh.write(rows.tobytes())
        self.n_rows += rows.shape[0]

    def close(self) -> None:
        self._fh.close()

    def finish(self) -> np.ndarray:
        """Write the final header, flush and fsync; returns the vectors as a read-only map."""
        self._fh.seek(0)
        self._fh.write(_header(self.n_rows, self.dim))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return np.load(self.path, mmap_mode="r")
