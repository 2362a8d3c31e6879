"""Search on one snapshot: query vectors from raw vectors or stored items, the
k / kinds checks that depend on settings, and the FAISS call off the event loop."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from index.catalog import compile_filters
from index.snapshot import Match as SnapshotMatch
from index.snapshot import Snapshot
from models.encoders import l2_normalize
from service.embedding import Embedder
from service.errors import InvalidQueryError, ItemNotFoundError
from service.schemas import KINDS, Match, SearchQuery


@dataclass(frozen=True)
class SearchParams:
    k: int
    kinds: tuple[str, ...] | None = None
    filters: dict[str, Any] | None = None


def check_params(params: SearchParams, max_k: int) -> SearchParams:
    if not 1 <= params.k <= max_k:
        raise InvalidQueryError(f"k must be between 1 and {max_k} (got {params.k})")
    unknown = sorted(set(params.kinds or ()) - set(KINDS))
    if unknown:
        raise InvalidQueryError(f"unknown kinds {unknown}; known kinds are {list(KINDS)}")
    if params.kinds is not None and not params.kinds:
        raise InvalidQueryError("kinds must not be empty; omit it to search every kind")
    return params


def parse_kinds(value: str | None) -> tuple[str, ...] | None:
    """The multipart form's comma-separated kinds ('image,recipe')."""
    if value is None or not value.strip():
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


def raw_query_vector(vector: Sequence[float], dim: int) -> np.ndarray:
    if len(vector) != dim:
        raise InvalidQueryError(
            f"query vector has the wrong dimension: expected {dim}, got {len(vector)}"
        )
    return l2_normalize(np.asarray([vector], dtype=np.float32))


def item_query_vector(snapshot: Snapshot, item_id: str) -> np.ndarray:
    """The mean of an item's stored rows, normalised: the item 'as a whole'."""
    if snapshot.get_item(item_id) is None:
        raise ItemNotFoundError(item_id)
    rows = np.asarray(snapshot.item_vectors(item_id), dtype=np.float32)
    if rows.size == 0:
        raise ItemNotFoundError(item_id)
    return l2_normalize(rows.reshape(-1, rows.shape[-1]).mean(axis=0, keepdims=True))


async def query_vector(
    query: SearchQuery, embedder: Embedder, snapshot: Snapshot
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The (1, dim) query row and the item ids to leave out of the results."""
    if query.vector is not None:
        return raw_query_vector(query.vector, snapshot.manifest.dim), ()
    if query.item_id is not None:
        vector = await run_in_threadpool(item_query_vector, snapshot, query.item_id)
        return vector, (query.item_id,)
    return await embedder.embed([query]), ()


FIELD_SCAN_CHUNK = 10_000


def _metadata_fields(snapshot: Snapshot) -> frozenset[str]:
    """Top-level metadata keys over all items: one pass over the catalog.

    This belongs in the catalog (one ``json_each`` query); until it has such a call
    the service scans item metadata in chunks, once per snapshot version.
    """
    catalog = snapshot.catalog
    n_rows = snapshot.manifest.n_vectors
    fields: set[str] = set()
    for start in range(0, n_rows, FIELD_SCAN_CHUNK):
        rows = np.arange(start, min(start + FIELD_SCAN_CHUNK, n_rows))
        item_ids = list(dict.fromkeys(catalog.item_ids_of_rows(rows)))
        for item in catalog.get_items(item_ids).values():
            fields.update(item.metadata)
    return frozenset(fields)


@dataclass
class FilterFieldCheck:
    """Refuses filters on fields no item has (a typo would silently match nothing)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _version: str | None = None
    _fields: frozenset[str] = frozenset()

    def known_fields(self, snapshot: Snapshot) -> frozenset[str]:
        with self._lock:
            if self._version != snapshot.manifest.version:
                self._fields = _metadata_fields(snapshot)
                self._version = snapshot.manifest.version
            return self._fields

    def check(self, snapshot: Snapshot, filters: Mapping[str, object] | None) -> None:
        if not filters:
            return
        compile_filters(filters)  # malformed names and values first (FilterError)
        known = self.known_fields(snapshot)
        unknown = sorted(name for name in filters if name.split(".")[0] not in known)
        if unknown:
            raise InvalidQueryError(
                f"unknown filter field(s) {unknown}; items in this index have {sorted(known)}"
            )


async def search(
    snapshot: Snapshot,
    vector: np.ndarray,
    params: SearchParams,
    filter_check: FilterFieldCheck,
    exclude_ids: tuple[str, ...] = (),
) -> list[Match]:
    def run() -> list[SnapshotMatch]:
        filter_check.check(snapshot, params.filters)
        return snapshot.search(
            vector[0], params.k, kinds=params.kinds, filters=params.filters, exclude_ids=exclude_ids
        )

    found = await run_in_threadpool(run)
    return [
        Match(
            id=match.item_id,
            score=float(match.score),
            rank=match.rank,
            kind=match.kind,
            label=match.label,
            metadata=match.metadata,
        )
        for match in found
    ]
