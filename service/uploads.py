"""Photos uploaded by item changes: stored once by content, deleted once unused.

An upserted item's photo is stored under ``<index_dir>/uploads/``, named by its
sha256, where every worker sharing the index storage can read it; the catalog
record refers to that file, as a re-index's records refer to the dataset's files.

Once no snapshot folder's catalog and no pending change names an upload, nothing
will read it again: :func:`remove_orphan_uploads` deletes it after each publish and
prune. An upload younger than :data:`UPLOAD_GRACE_S` stays whatever: the API saves
the photo *before* it records the change, so a fresh file may belong to a change
that is being recorded right now (saving an existing file again refreshes its time).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from PIL import Image

from index.catalog import recorded_image_paths
from index.changes import ItemChange
from index.layout import atomic_write_bytes, list_versions, publish_lock
from index.snapshot import CATALOG_FILE
from models.images import decode_image

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"
UPLOAD_GRACE_S = 3600.0


def save_upload(index_dir: Path, data: bytes, max_pixels: int) -> Path:
    """Check that ``data`` decodes as an image, then store it once by content."""
    decode_image(data, max_pixels=max_pixels).close()
    with Image.open(io.BytesIO(data)) as image:  # header only: the format names the suffix
        suffix = f".{(image.format or 'img').lower()}".replace(".jpeg", ".jpg")
    folder = Path(index_dir).absolute() / UPLOADS_DIR
    path = folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    try:
        os.utime(path)  # in use again: not an orphan for another grace period
        return path
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def remove_orphan_uploads(
    index_dir: Path,
    pending: Callable[[], Sequence[ItemChange]],
    *,
    grace_s: float = UPLOAD_GRACE_S,
) -> list[Path]:
    """Delete the uploads that no snapshot folder and no ``pending()`` change names,
    older than ``grace_s``; returns them. Nothing is deleted when a catalog cannot be
    read (what it names is unknown)."""
    folder = Path(index_dir) / UPLOADS_DIR
    if not folder.is_dir():
        return []
    # Pending first, then the snapshots: an apply publishes its snapshot before it
    # forgets the changes, so a change is in one or the other whenever it is read.
    in_use = _file_names(c.record.image_path for c in pending() if c.record is not None)
    with publish_lock(index_dir):  # no prune deletes a catalog while it is read
        for version in list_versions(index_dir):
            catalog = Path(index_dir) / version / CATALOG_FILE
            try:
                in_use |= _file_names(recorded_image_paths(catalog))
            except (sqlite3.Error, OSError) as exc:  # what it names is unknown: keep all
                logger.warning("uploads not cleaned: %s unreadable: %s", catalog, exc)
                return []
        return _remove_unused(folder, in_use, time.time() - grace_s)


def _file_names(paths: Iterable[str | Path | None]) -> set[str]:
    # By name, not by full path: another process may mount the index folder elsewhere.
    return {Path(path).name for path in paths if path is not None}


def _remove_unused(folder: Path, in_use: set[str], older_than: float) -> list[Path]:
    removed = []
    for path in sorted(folder.iterdir()):
        try:
            if path.name in in_use or path.stat().st_mtime > older_than:
                continue
            path.unlink()
        except FileNotFoundError:  # removed meanwhile by another cleaner
            continue
        except OSError as exc:  # housekeeping: the next cleaning tries again
            logger.warning("upload %s not removed: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d upload(s) no snapshot or pending change uses", len(removed))
    return removed
