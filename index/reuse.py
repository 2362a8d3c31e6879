"""Incremental re-index: copy the live snapshot's vectors of items whose inputs are unchanged.

Every catalog item records a content hash (:func:`content_hash`): sha256 over a
canonical JSON of exactly what the encoder is given, the image file's bytes, the
non-blank texts in order and the recipe's fields. A re-index whose encoder has
the live snapshot's model fingerprint and dimension looks each record's hash up
in the live catalog; on a match it copies that item's vector rows from the live
``vectors.npy`` instead of decoding and encoding it again. Everything else (new
items, changed ones, items whose image was unreadable last time) is encoded.
Items gone from the source are simply not in the new snapshot, which is built
whole as before: only the encoding is skipped, so prototypes, FAISS index and
catalog always describe the new snapshot alone.

The hash is taken before the image is decoded, so a file replaced in between is
stored with its older hash and re-encoded next time, never reused stale. Live
snapshots written before hashes existed, or by another model, reuse nothing.
The live snapshot is leased (:class:`index.layout.SnapshotLease`) while it is
read, so a concurrent publish cannot prune it from under the build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from index.catalog import Catalog
from index.layout import SnapshotError, SnapshotLease, read_current
from index.manifest import Manifest
from index.set_reuse import LiveSets, open_live_sets, set_encoder_of
from index.snapshot import CATALOG_FILE, VECTORS_FILE
from models.encoders.base import Encoder
from models.types import CatalogRecord, Recipe

logger = logging.getLogger(__name__)

HASH_SCHEME = "mmsearch-inputs/1"  # changing what is hashed must change this
_READ_CHUNK = 1 << 20


@dataclass
class ChangeCounts:
    """What a build encoded, what it copied, and what it dropped from the live snapshot."""

    items_embedded: int = 0
    vectors_embedded: int = 0
    items_reused: int = 0
    vectors_reused: int = 0
    items_removed: int = 0  # live items that the new snapshot no longer has

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                digest.update(chunk)
    except OSError:  # unreadable now: the build skips it, and nothing is reused for it
        return None
    return digest.hexdigest()


def _recipe_fields(recipe: Recipe | None) -> dict[str, object] | None:
    if recipe is None:
        return None
    return {
        "title": recipe.title,
        "ingredients": list(recipe.ingredients),
        "instructions": list(recipe.instructions),
    }


def content_hash(record: CatalogRecord) -> str:
    """sha256 of every input the encoder would see for this record (not label or metadata)."""
    canonical = {
        "scheme": HASH_SCHEME,
        "image": None if record.image_path is None else _file_sha256(Path(record.image_path)),
        "has_image": record.image_path is not None,
        "texts": [text for text in record.texts if text.strip()],
        "recipe": _recipe_fields(record.recipe),
    }
    text = json.dumps(canonical, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def expected_kinds(record: CatalogRecord) -> list[str]:
    """Kinds of the rows a full encode of this record makes, in row order."""
    kinds = ["image"] if record.image_path is not None else []
    kinds += ["text" for text in record.texts if text.strip()]
    kinds += ["recipe"] if record.recipe is not None else []
    return kinds


@dataclass(frozen=True)
class ReusedItem:
    kinds: list[str]  # kind of each row, in the live snapshot's row order
    vectors: np.ndarray  # (len(kinds), dim)


@dataclass
class BatchPlan:
    """A batch's content hashes, the items whose vectors are copied, and how many of
    its records the live snapshot already had."""

    hashes: dict[str, str]
    reused: dict[str, ReusedItem] = field(default_factory=dict)
    in_live: set[str] = field(default_factory=set)


class LiveVectors:
    """The live snapshot's catalog and vectors, read to copy unchanged items' rows."""

    def __init__(
        self,
        manifest: Manifest,
        catalog: Catalog,
        vectors: np.ndarray,
        reusable: bool,
        sets: LiveSets | None = None,
    ):
        self.manifest = manifest
        self.catalog = catalog
        self.vectors = vectors
        self.reusable = reusable  # same model and dim, and the live catalog has hashes
        self.sets = sets  # its set rows, when reusable and made by the encoder's set heads

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    def plan(self, batch: Sequence[CatalogRecord], hashes: dict[str, str]) -> BatchPlan:
        """Which records of ``batch`` can take their live vectors."""
        ids = [record.id for record in batch]
        live_hashes = self.catalog.content_hashes(ids)
        plan = BatchPlan(hashes, in_live=set(live_hashes))
        if not self.reusable:
            return plan
        same = [r for r in batch if live_hashes.get(r.id) == hashes[r.id]]
        live_rows = self.catalog.rows_of_items([r.id for r in same])
        for record in same:
            rows = live_rows.get(record.id, [])
            kinds = [kind for _, kind in rows]
            # An image unreadable last time left no row: try it again rather than copy less.
            if kinds != expected_kinds(record):
                continue
            vectors = np.asarray(self.vectors[[row for row, _ in rows]], dtype=np.float32)
            plan.reused[record.id] = ReusedItem(kinds, vectors)
        return plan


def plan_batch(batch: Sequence[CatalogRecord], live: LiveVectors | None) -> BatchPlan:
    """Hash every record of ``batch`` (before any image is decoded) and look them up."""
    hashes = {record.id: content_hash(record) for record in batch}
    return BatchPlan(hashes) if live is None else live.plan(batch, hashes)


def _open_live(path: Path, encoder: Encoder) -> LiveVectors:
    manifest = Manifest.read(path)
    catalog = Catalog.open(path / CATALOG_FILE)
    try:
        vectors = np.load(path / VECTORS_FILE, mmap_mode="r")
        if vectors.shape != (catalog.n_vectors, manifest.dim):
            raise ValueError(f"{VECTORS_FILE} is {vectors.shape}, catalog has {catalog.n_vectors}")
    except BaseException:
        catalog.close()
        raise
    same_model = (manifest.model_fingerprint, manifest.dim) == (encoder.fingerprint, encoder.dim)
    reusable = same_model and catalog.has_content_hashes
    sets = open_live_sets(path, set_encoder_of(encoder), manifest.dim) if reusable else None
    return LiveVectors(manifest, catalog, vectors, reusable, sets)


@contextmanager
def live_vectors(index_dir: Path, encoder: Encoder) -> Iterator[LiveVectors | None]:
    """The live snapshot of ``index_dir`` for reuse, leased until exit; None when there is
    none or it cannot be read (then everything is encoded, as in a first build)."""
    try:
        version = read_current(index_dir)
        lease = SnapshotLease(index_dir / version) if version is not None else None
    except (SnapshotError, OSError) as exc:
        logger.warning("not reusing vectors: cannot read CURRENT: %s", exc)
        version, lease = None, None
    if version is None or lease is None:
        yield None
        return
    try:
        live: LiveVectors | None = _open_live(index_dir / version, encoder)
    except (SnapshotError, OSError, ValueError, sqlite3.Error) as exc:
        logger.warning("not reusing vectors of snapshot %s: %s", version, exc)
        live = None
    try:
        if live is not None and not live.reusable:
            logger.info("snapshot %s: other model or no content hashes; encoding all", version)
        yield live
    finally:
        if live is not None:
            live.catalog.close()
        lease.release()
