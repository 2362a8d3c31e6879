"""Why a build fails: errors the index pipeline raises, and the full-disk translation.

Shared by every way a snapshot is written (:mod:`index.build`, :mod:`index.chunks`,
:mod:`index.changes`), so they raise and catch one family of errors.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BuildError(Exception):
    """The dataset cannot be turned into a snapshot (empty, duplicate ids, ...)."""


class DiskFullError(BuildError):
    """The file system holding the index filled up while the snapshot was written."""


_LOW_SPACE_BYTES = 1 << 20


def _is_disk_full(exc: BaseException, index_dir: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return True  # SQLite: "database or disk is full"
    if not isinstance(exc, RuntimeError):
        return False
    # FAISS reports a failed fwrite as a RuntimeError; the errno text is not guaranteed.
    return "No space left" in str(exc) or shutil.disk_usage(index_dir).free < _LOW_SPACE_BYTES


@contextmanager
def full_disk_reported(index_dir: Path) -> Iterator[None]:
    """A full disk fails the build with a message an admin can act on; nothing is written
    through a memory map (see :mod:`index.spool`), so it is always an exception, never SIGBUS."""
    try:
        yield
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        if not _is_disk_full(exc, index_dir):
            raise
        free_mib = shutil.disk_usage(index_dir).free / (1 << 20)
        raise DiskFullError(
            f"the disk holding the index folder is full ({free_mib:.1f} MiB free while "
            f"writing the new snapshot: {exc}); the live snapshot is untouched: free some "
            "space (or lower MMSEARCH_KEEP_SNAPSHOTS) and re-index again"
        ) from exc
