"""A build split into chunks that separate processes encode, then one merge.

The single build (:func:`index.build.build_snapshot`) reads records, encodes them
a batch at a time and writes the catalog and ``vectors.npy`` as it goes. A
chunked build does the encoding part elsewhere: :func:`plan_chunks` cuts the
records into ranges, :func:`encode_chunk` (one call per chunk, in any process on
any machine sharing the index folder) encodes one range into the build's chunk
folder (:func:`index.layout.chunks_dir`), and :func:`merge_chunks` assembles the
chunk files in order into a snapshot, through the same catalog and vector
writing and the same prototypes, index, manifest and ordered publish as the
single build (:func:`index.build.build_with`).

Same result: chunk boundaries fall on multiples of the batch size, so every
batch is the batch the single build would encode, and rows come out in the
single build's order (an identical ``vectors.npy`` and catalog for the same
source). Incremental reuse works per chunk: each chunk copies its unchanged
items' vectors from the live snapshot (:mod:`index.reuse`). With a set-head encoder
(DivE) each chunk also writes its items' set rows (``chunk-<i>.sets.npy`` and
``.sets.json``, before the commit mark), and the merge concatenates them in chunk
order: the single build's set files (:mod:`index.set_build`).

Nothing twice, nothing missing: chunk ``i`` writes ``chunk-<i>.npy`` and then
``chunk-<i>.json`` (the commit mark, with the row count), each to a temporary
name and renamed into place, so an attempt killed mid-way leaves no file under
the final names, and a retried or duplicated attempt replaces the file rather
than adding rows. The merge reads chunks ``0 .. n-1`` by index, refuses to
start while any is missing, and the catalog's unique item ids catch any overlap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from index.batches import (
    BatchRows,
    BuildCounts,
    batch_rows,
    batched,
    check_not_empty,
    check_unique,
    count_batch,
    encode_batch,
    write_rows,
)
from index.build import build_with
from index.build_errors import BuildError
from index.catalog import CatalogWriter
from index.layout import atomic_write_text, chunks_dir
from index.manifest import Manifest
from index.reuse import live_vectors
from index.set_build import SetSpool, merge_set_parts
from index.set_reuse import set_encoder_of
from index.snapshot import CATALOG_FILE, VECTORS_FILE
from index.spool import NpySpool
from models.encoders.base import Encoder
from models.images import DEFAULT_MAX_PIXELS
from models.types import CatalogRecord, ProgressCallback

logger = logging.getLogger(__name__)

MAX_CHUNKS = 1024  # more jobs than any pool needs; each chunk re-reads the records before it


@dataclass(frozen=True)
class Chunk:
    """Records ``start`` to ``stop`` (exclusive; None: to the end) of a build's source."""

    index: int
    start: int
    stop: int | None

    def size(self, total: int) -> int:
        return max(0, (total if self.stop is None else min(self.stop, total)) - self.start)


def plan_chunks(
    total: int, batch_size: int, *, chunks: int | None = None, chunk_size: int | None = None
) -> list[Chunk]:
    """Cut ``total`` records into at most ``chunks`` chunks, or chunks of about
    ``chunk_size`` records (exactly one of the two), on batch boundaries.

    The last chunk runs to the end of the source, so records added after it was
    counted are still indexed once.
    """
    if (chunks is None) == (chunk_size is None):
        raise ValueError("give exactly one of chunks and chunk_size")
    if batch_size < 1 or (chunks or chunk_size or 0) < 1:
        raise ValueError("chunks, chunk_size and batch_size must be positive")
    size = math.ceil(max(total, 1) / chunks) if chunks is not None else int(chunk_size or 1)
    size = math.ceil(size / batch_size) * batch_size  # a chunk is whole batches
    n = max(1, math.ceil(total / size))
    if n > MAX_CHUNKS:
        raise ValueError(f"{n} chunks of {size} records; at most {MAX_CHUNKS} are allowed")
    return [Chunk(i, i * size, None if i == n - 1 else (i + 1) * size) for i in range(n)]


def _vectors_file(folder: Path, index: int) -> Path:
    return folder / f"chunk-{index:05d}.npy"


def _summary_file(folder: Path, index: int) -> Path:
    return folder / f"chunk-{index:05d}.json"


def _set_files(folder: Path, index: int) -> tuple[Path, Path]:
    """A chunk's set rows (DivE), when the encoder has set heads: vectors and entries."""
    return folder / f"chunk-{index:05d}.sets.npy", folder / f"chunk-{index:05d}.sets.json"


def encode_chunk(
    records: Iterable[CatalogRecord],
    encoder: Encoder,
    index_dir: Path,
    build: str,
    chunk: Chunk,
    *,
    batch_size: int = 32,
    total: int | None = None,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    progress: ProgressCallback | None = None,
) -> int:
    """Encode ``chunk`` of ``records`` (the whole source, in order) into the chunk folder
    of ``build``; returns the number of records it held. ``total``: the source's
    record count, for progress."""
    folder = chunks_dir(index_dir, build)
    folder.mkdir(parents=True, exist_ok=True)
    expected = chunk.size(total) if total is not None else None
    tmp = folder / f".chunk-{chunk.index:05d}.npy.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    spool = NpySpool(tmp, encoder.dim)
    sets = set_encoder_of(encoder)
    set_tmps = tuple(Path(f"{tmp}.sets{suffix}") for suffix in (".npy", ".json"))
    set_spool: SetSpool | None = None
    counts, batches, seen = BuildCounts(), [], set[str]()
    try:
        with live_vectors(Path(index_dir), encoder) as live:
            if sets is not None:
                names = (set_tmps[0].name, set_tmps[1].name)
                live_sets = live.sets if live is not None else None
                set_spool = SetSpool(folder, sets, encoder.dim, live_sets, names)
            if progress is not None:
                progress(0, expected)
            for batch in batched(islice(records, chunk.start, chunk.stop), batch_size):
                check_unique(batch, seen)
                encoded = encode_batch(batch, encoder, max_image_pixels, live)
                rows = batch_rows(batch, encoded)
                for block in encoded.vectors:
                    spool.append(block)
                if set_spool is not None:
                    stored = {item_id for item_id, _ in encoded.rows}
                    reused = encoded.plan.reused.keys()
                    set_spool.add_batch(batch, stored, max_image_pixels, reused)
                count_batch(batch, encoded, len(rows.items), counts)
                batches.append(rows)
                if progress is not None:
                    progress(counts.records, expected)
            live_of = (live.version, live.n_items) if live is not None else (None, 0)
        summary = _summary(chunk, encoder, spool.n_rows, counts, batches, live_of)
        spool.finish()
        os.replace(tmp, _vectors_file(folder, chunk.index))
        if set_spool is not None:
            set_spool.finish()
            for written, final in zip(set_tmps, _set_files(folder, chunk.index), strict=True):
                os.replace(written, final)
        atomic_write_text(_summary_file(folder, chunk.index), summary)  # the commit mark
    finally:
        spool.close()
        tmp.unlink(missing_ok=True)
        if set_spool is not None:
            set_spool.close()
        for written in set_tmps:
            written.unlink(missing_ok=True)
    logger.info("chunk %d of build %s: %d records encoded", chunk.index, build, counts.records)
    return counts.records


def _summary(
    chunk: Chunk,
    encoder: Encoder,
    n_rows: int,
    counts: BuildCounts,
    batches: list[BatchRows],
    live_of: tuple[str | None, int],
) -> str:
    values = {
        "chunk": chunk.index,
        "start": chunk.start,
        "fingerprint": encoder.fingerprint,
        "dim": encoder.dim,
        "set_heads": getattr(set_encoder_of(encoder), "digest", None),  # None: no set rows
        "n_rows": n_rows,
        "records": counts.records,
        "items": counts.items,
        "skipped": counts.skipped,
        "kinds": dict(counts.kinds),
        "changes": counts.changes.as_dict(),
        "kept_from_live": counts.kept_from_live,
        "live_version": live_of[0],
        "live_items": live_of[1],
        "batches": [
            {
                "items": [list(item) for item in rows.items],
                "rows": [list(row) for row in rows.rows],
                "images": [[item_id, str(path)] for item_id, path in rows.images],
                "hashes": rows.hashes,
            }
            for rows in batches
        ],
    }
    try:
        return json.dumps(values, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BuildError(f"chunk {chunk.index}: item metadata is not plain JSON: {exc}") from exc


def _read_summaries(folder: Path, n_chunks: int, encoder: Encoder) -> list[dict[str, Any]]:
    missing = [i for i in range(n_chunks) if not _summary_file(folder, i).is_file()]
    if missing:
        raise BuildError(
            f"chunked build {folder.name}: chunk(s) {missing} of {n_chunks} were never "
            "written (their jobs failed for good); re-index again"
        )
    summaries = []
    for i in range(n_chunks):
        summary = json.loads(_summary_file(folder, i).read_text(encoding="utf-8"))
        if (summary["fingerprint"], summary["dim"]) != (encoder.fingerprint, encoder.dim):
            raise BuildError(f"chunk {i} was encoded by model {summary['fingerprint']}")
        summaries.append(summary)
    return summaries


def _add_counts(counts: BuildCounts, summary: dict[str, Any]) -> None:
    counts.records += summary["records"]
    counts.items += summary["items"]
    counts.skipped += summary["skipped"]
    counts.kinds.update(Counter(summary["kinds"]))
    counts.kept_from_live += summary["kept_from_live"]
    for name, value in summary["changes"].items():
        setattr(counts.changes, name, getattr(counts.changes, name) + value)


def _set_live_counts(counts: BuildCounts, summaries: list[dict[str, Any]]) -> None:
    """Items removed and the snapshot reused from, as the chunks saw the live snapshot.

    Chunks normally all read one live snapshot; if another build published between
    them, the counts are taken against the newest one they read."""
    seen = {(s["live_version"], s["live_items"]) for s in summaries if s["live_version"]}
    if not seen:
        return
    if len(seen) > 1:
        logger.warning("the chunks read different live snapshots: %s", sorted(seen))
    version, n_items = max(seen)
    counts.changes.items_removed = max(0, n_items - counts.kept_from_live)
    counts.reused_from = version if counts.changes.items_reused else None


def _rows(batch: dict[str, Any]) -> BatchRows:
    return BatchRows(
        items=[(item_id, label, metadata) for item_id, label, metadata in batch["items"]],
        rows=[(item_id, kind) for item_id, kind in batch["rows"]],
        images=[(item_id, Path(path)) for item_id, path in batch["images"]],
        hashes=batch["hashes"],
    )


def _assemble(
    folder: Path,
    summaries: list[dict[str, Any]],
    dim: int,
    staging: Path,
    progress: ProgressCallback | None,
) -> tuple[BuildCounts, np.ndarray]:
    """The chunks' catalog rows and vectors, in chunk order, into ``staging``."""
    counts = BuildCounts()
    writer = CatalogWriter(staging / CATALOG_FILE)
    spool = NpySpool(staging / VECTORS_FILE, dim)
    try:
        for done, summary in enumerate(summaries, start=1):
            vectors = np.load(_vectors_file(folder, summary["chunk"]), mmap_mode="r")
            if vectors.shape != (summary["n_rows"], dim):
                raise BuildError(f"chunk {summary['chunk']}: vectors are {vectors.shape}")
            offset = 0
            for batch in summary["batches"]:
                rows = _rows(batch)
                write_rows(rows, [vectors[offset : offset + len(rows.rows)]], writer, spool)
                offset += len(rows.rows)
            _add_counts(counts, summary)
            if progress is not None:
                progress(done, len(summaries))
        check_not_empty(counts, spool.n_rows)
        _set_live_counts(counts, summaries)
        writer.finish()
        vectors = spool.finish()
        _assemble_sets(folder, summaries, dim, staging)
        return counts, vectors
    finally:
        spool.close()
        writer.abort()


def _assemble_sets(folder: Path, summaries: list[dict[str, Any]], dim: int, staging: Path) -> None:
    """The chunks' set rows into ``staging``, when every chunk wrote them with the same set
    heads; else the snapshot has none (set search answers 422 until a full re-index)."""
    heads = {summary.get("set_heads") for summary in summaries}
    if heads == {None}:
        return
    if len(heads) > 1:
        logger.warning("the chunks' set rows come from different set heads (%s): none kept", heads)
        return
    parts = [_set_files(folder, summary["chunk"]) for summary in summaries]
    try:
        merge_set_parts(parts, staging, dim)
    except (OSError, ValueError, KeyError) as exc:
        raise BuildError(f"chunked build {folder.name}: set rows cannot be merged: {exc}") from exc


def merge_chunks(
    encoder: Encoder,
    index_dir: Path,
    build: str,
    n_chunks: int,
    *,
    progress: ProgressCallback | None = None,
    **publish: Any,
) -> Manifest:
    """Assemble the ``n_chunks`` chunks of ``build`` into a snapshot, as
    :func:`index.build.build_with` (``publish``: its keyword arguments) does with
    a single build's; then remove the chunk folder. BuildError while a chunk is
    missing (the folder is kept: a retried chunk may still come)."""
    folder = chunks_dir(index_dir, build)
    summaries = _read_summaries(folder, n_chunks, encoder)
    manifest = build_with(
        lambda staging: _assemble(folder, summaries, encoder.dim, staging, progress),
        encoder,
        index_dir,
        **publish,
    )
    remove_chunks(index_dir, build)
    return manifest


def remove_chunks(index_dir: Path, build: str) -> None:
    shutil.rmtree(chunks_dir(index_dir, build), ignore_errors=True)
