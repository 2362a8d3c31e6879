"""On-disk layout of an index directory and the atomic publish protocol.

::

    <index_dir>/CURRENT                 name of the live version (one line)
    <index_dir>/<version>/              an immutable snapshot
    <index_dir>/.staging-<version>/     a snapshot being built (never loaded)
    <index_dir>/.chunks-<build>/        vectors of a chunked build, one file pair per
                                        chunk, until its merge job assembles them

A build writes everything into its staging directory, renames that directory to
``<version>`` (an atomic rename within one filesystem) and only then replaces
``CURRENT`` (temp file, fsync, ``os.replace``, fsync of the directory). A crash
before the final replace leaves ``CURRENT`` and the snapshot it names untouched;
the leftovers are a staging directory or an unreferenced version directory,
which :func:`clean_stale_staging` and :func:`prune` remove later.

Locks (``flock``; the kernel drops them when their process dies, however it dies):

- a build holds an exclusive lock on its staging directory while it writes, so
  :func:`clean_stale_staging` removes the staging directory of a dead build at
  once (an unlocked one), never a live build's;
- every loaded snapshot holds a shared lock on its version directory
  (:class:`SnapshotLease`), and :func:`prune` deletes only versions it can lock
  exclusively, so a version that a request anywhere still holds is never deleted
  from under it: it is pruned by a later publish instead;
- publishers take ``<index_dir>/.publish.lock`` around install, CURRENT and prune
  (:func:`publish_lock`), so these steps of two builders never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
STAGING_PREFIX = ".staging-"
CLAIM_PREFIX = ".claim-"  # a staging directory before it is locked (see claim_staging)
PUBLISH_LOCK_FILE = ".publish.lock"
CHUNKS_PREFIX = ".chunks-"
STALE_STAGING_AGE_S = 3600.0  # only for unlockable leftovers (older code, a claim cut short)
# Chunk folders are written by many processes over a long build and locked by none, so
# only age says one is abandoned (its merge job failed for good, or was never enqueued).
STALE_CHUNKS_AGE_S = 24 * 3600.0
# Milliseconds since this version: prune keeps the newest by name, and tests build
# several snapshots a second. Names without them (older snapshots) stay valid.
_VERSION_NAME = re.compile(r"^\d{8}T\d{6}(\d{3})?Z-[0-9a-f]{6}$")


class SnapshotError(Exception):
    """Base of the errors about snapshots on disk."""


class NoSnapshotError(SnapshotError):
    """No snapshot has been published in this index directory yet."""


class CorruptSnapshotError(SnapshotError):
    """A snapshot's files are missing, unreadable or inconsistent with each other."""


def new_version(now: datetime | None = None) -> str:
    """A sortable, unique version name such as ``20261122T053000123Z-3fa2c1``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"
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
    """Write ``text`` (UTF-8) to a temp file beside ``path``, fsync, then os.replace."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
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


def prune(index_dir: Path | str, keep_older: int) -> list[str]:
    """Delete versions beyond the live one and the ``keep_older`` newest others.

    Never deletes CURRENT's version, nor one that any process still holds
    (a :class:`SnapshotLease`): that one stays until a later prune finds it free.
    Call it under :func:`publish_lock`, so CURRENT cannot move meanwhile.
    """
    if keep_older < 0:
        raise ValueError(f"keep_older must be at least 0, got {keep_older}")
    current = read_current(index_dir)
    others = [v for v in list_versions(index_dir) if v != current]
    doomed = others[: max(0, len(others) - keep_older)]
    pruned = []
    for version in doomed:
        if _delete_unless_held(Path(index_dir) / version):
            logger.info("pruned snapshot %s", version)
            pruned.append(version)
        else:
            logger.info("kept snapshot %s: still in use; a later publish prunes it", version)
    return pruned


def _delete_unless_held(path: Path) -> bool:
    with _locked_dir(path, fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
        if locked:
            shutil.rmtree(path)
        return locked


@contextlib.contextmanager
def _locked_dir(path: Path, operation: int) -> Iterator[bool]:
    """Yields whether ``flock(operation)`` on the directory succeeded (False: held)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:  # removed meanwhile (published, or pruned by another)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class SnapshotLease:
    """A shared lock on a version directory while a process uses that snapshot.

    Taken before the snapshot's files are read; :func:`prune` skips leased
    versions. Released by :meth:`release` or when the process ends.
    """

    def __init__(self, path: Path) -> None:
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        # Blocks only while a prune deletes this very version (then the files are
        # gone and loading fails as a missing snapshot), or for the moment between
        # a build's publish and the release of its staging lock.
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def publish_lock(index_dir: Path | str) -> contextlib.AbstractContextManager[None]:
    """Exclusive across processes: one publisher at a time in ``index_dir``."""
    return exclusive_lock(Path(index_dir) / PUBLISH_LOCK_FILE)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """``flock`` on the file ``path`` (created if missing), held until exit; the kernel
    drops it when the process dies, however it dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def staging_dir(index_dir: Path | str, version: str) -> Path:
    _check_version_name(version)
    return Path(index_dir) / f"{STAGING_PREFIX}{version}"


def chunks_dir(index_dir: Path | str, build: str) -> Path:
    """Where the chunk jobs of chunked build ``build`` (a version-like name) leave
    their vectors; not a staging directory, so no build's clean-up takes it."""
    _check_version_name(build)
    return Path(index_dir) / f"{CHUNKS_PREFIX}{build}"


@contextlib.contextmanager
def claim_staging(index_dir: Path | str, version: str) -> Iterator[Path]:
    """Create ``.staging-<version>`` and hold an exclusive lock on it until exit.

    The directory is made and locked under a claim name, then renamed: a cleaner
    never sees an unlocked staging directory of a live build. On an exception
    the staging directory is removed; the lock is released on any exit.
    """
    index_dir = Path(index_dir)
    staging = staging_dir(index_dir, version)
    claim = index_dir / f"{CLAIM_PREFIX}{version}"
    claim.mkdir()
    fd = os.open(claim, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(claim, staging)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # re-raised: cleanup only
            raise
    finally:
        os.close(fd)
        shutil.rmtree(claim, ignore_errors=True)  # only if the rename never happened


def _last_modified(path: Path) -> float:
    times = [path.stat().st_mtime]
    times += [child.stat().st_mtime for child in path.iterdir()]
    return max(times)


def clean_stale_staging(
    index_dir: Path | str, older_than_s: float = STALE_STAGING_AGE_S
) -> list[Path]:
    """Remove the staging directories of builds that died.

    A staging directory nobody holds locked belongs to a dead build (every
    builder locks its own, see :func:`claim_staging`) and goes at once. Claim
    directories, left only by a build killed in its first instant, go once
    untouched for ``older_than_s``; chunk folders (:func:`chunks_dir`) once
    untouched for ``STALE_CHUNKS_AGE_S``.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        return []
    removed = []
    for path in sorted(index_dir.glob(f"{STAGING_PREFIX}*")):
        if _remove_if_unlocked(path):
            removed.append(path)
    for path in sorted(index_dir.glob(f"{CLAIM_PREFIX}*")):
        if _remove_if_old(path, older_than_s):
            removed.append(path)
    for path in sorted(index_dir.glob(f"{CHUNKS_PREFIX}*")):
        if _remove_if_old(path, STALE_CHUNKS_AGE_S):
            removed.append(path)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        with _locked_dir(path, fcntl.LOCK_EX | fcntl.LOCK_NB) as unlocked:
            if unlocked:
                shutil.rmtree(path, ignore_errors=True)
                logger.info("removed the staging directory of a dead build: %s", path)
            return unlocked
    except NotADirectoryError:
        return False


def _remove_if_old(path: Path, older_than_s: float) -> bool:
    try:
        stale = path.is_dir() and time.time() - _last_modified(path) > older_than_s
    except FileNotFoundError:  # renamed or removed meanwhile
        return False
    if stale:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed stale directory %s", path)
    return stale
