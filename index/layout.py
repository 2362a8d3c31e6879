"""On-disk layout of an index directory and the atomic publish protocol.

::

    <index_dir>/CURRENT                 name of the live version (one line)
    <index_dir>/<version>/              an immutable snapshot
    <index_dir>/.staging-<version>/     a snapshot being built (never loaded)

A build writes everything into its staging directory, renames that directory to
``<version>`` (an atomic rename within one filesystem) and only then replaces
``CURRENT`` (temp file, fsync, ``os.replace``, fsync of the directory). A crash
before the final replace leaves ``CURRENT`` and the snapshot it names untouched;
the leftovers are a staging directory or an unreferenced version directory,
which :func:`clean_stale_staging` and :func:`prune` remove later.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
STAGING_PREFIX = ".staging-"
STALE_STAGING_AGE_S = 3600.0
_VERSION_NAME = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


class SnapshotError(Exception):
    """Base of the errors about snapshots on disk."""


class NoSnapshotError(SnapshotError):
    """No snapshot has been published in this index directory yet."""


class CorruptSnapshotError(SnapshotError):
    """A snapshot's files are missing, unreadable or inconsistent with each other."""


def new_version(now: datetime | None = None) -> str:
    """A sortable, unique version name such as ``20261122T053000Z-3fa2c1``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def is_version_name(name: str) -> bool:
    return bool(_VERSION_NAME.match(name))


def _check_version_name(version: str) -> None:
    # Also keeps names like "../x" out of path joins.
    if not is_version_name(version):
        raise ValueError(f"invalid snapshot version name {version!r}")


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames, new files) on POSIX filesystems."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync, then os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def read_current(index_dir: Path | str) -> str | None:
    """The live version name, or None when nothing was published yet."""
    try:
        name = (Path(index_dir) / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not is_version_name(name):
        raise CorruptSnapshotError(f"{index_dir}/{CURRENT_FILE} holds {name!r}, not a version")
    return name


def set_current(index_dir: Path | str, version: str) -> None:
    """Point CURRENT at an installed version, atomically."""
    _check_version_name(version)
    index_dir = Path(index_dir)
    if not (index_dir / version).is_dir():
        raise FileNotFoundError(f"cannot publish {version}: {index_dir / version} does not exist")
    atomic_write_text(index_dir / CURRENT_FILE, version + "\n")
    logger.info("published snapshot %s in %s", version, index_dir)


def install(index_dir: Path | str, staged_dir: Path, version: str) -> Path:
    """Rename a fully written staging dir to ``<index_dir>/<version>``."""
    _check_version_name(version)
    index_dir = Path(index_dir)
    target = index_dir / version
    if target.exists():
        raise FileExistsError(f"snapshot {target} already exists")
    os.rename(staged_dir, target)
    fsync_dir(index_dir)
    return target


def publish(index_dir: Path | str, staged_dir: Path, version: str) -> None:
    """Install a staged snapshot, then make it CURRENT (see module docstring)."""
    install(index_dir, staged_dir, version)
    set_current(index_dir, version)


def list_versions(index_dir: Path | str) -> list[str]:
    """Installed version names, oldest first."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        return []
    return sorted(p.name for p in index_dir.iterdir() if p.is_dir() and is_version_name(p.name))


def prune(index_dir: Path | str, keep: int = 3) -> list[str]:
    """Delete all but the newest ``keep`` versions; CURRENT's is never deleted.

    Processes that still hold a pruned snapshot open keep working on POSIX (open
    files and mappings survive unlinking); keep > 1 leaves slow starters room.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    current = read_current(index_dir)
    versions = list_versions(index_dir)
    doomed = [v for v in versions[:-keep] if v != current]
    for version in doomed:
        shutil.rmtree(Path(index_dir) / version)
        logger.info("pruned snapshot %s", version)
    return doomed


def staging_dir(index_dir: Path | str, version: str) -> Path:
    _check_version_name(version)
    return Path(index_dir) / f"{STAGING_PREFIX}{version}"


def _last_modified(path: Path) -> float:
    times = [path.stat().st_mtime]
    times += [child.stat().st_mtime for child in path.iterdir()]
    return max(times)


def clean_stale_staging(
    index_dir: Path | str, older_than_s: float = STALE_STAGING_AGE_S
) -> list[Path]:
    """Remove staging dirs untouched for ``older_than_s`` (builds that died)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        return []
    removed = []
    now = time.time()
    for path in index_dir.glob(f"{STAGING_PREFIX}*"):
        try:
            stale = path.is_dir() and now - _last_modified(path) > older_than_s
        except FileNotFoundError:  # another builder finished or removed it meanwhile
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed stale staging directory %s", path)
            removed.append(path)
    return removed
