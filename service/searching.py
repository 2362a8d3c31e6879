"""Search on one snapshot: query vectors from raw vectors or stored items, the
k / kinds checks that depend on settings, the FAISS call (on the event loop or in
the threadpool: :mod:`service.search_placement`) and the class (prototype) matches
beside the items. Building a query vector from a request (compose, tag) is
:mod:`service.queries`."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.catalog import compile_filters
from index.prototypes import ClassMatch
from index.ranking import Ranking
from index.snapshot import ItemMatch, Snapshot
from models.calibration import ANY, Calibration
from models.encoders import l2_normalize
from service.errors import InvalidQueryError, ItemNotFoundError
from service.schemas import KINDS, ClassMatchOut, Match
from service.search_placement import SearchPlacement


@dataclass(frozen=True)
class SearchParams:
    k: int
    kinds: tuple[str, ...] | None = None
    filters: dict[str, Any] | None = None
    ranking: Ranking = field(default_factory=Ranking)
    top_classes: int = 3
    min_confidence: float | None = None


@dataclass(frozen=True)
class ConfidenceScorer:
    """Confidence of a match for one query: the model's curve for (query kind, row kind).

    Without a calibration (offline, open_clip) confidence is None and
    ``min_confidence`` keeps every match: it cannot judge what it cannot estimate.
    """

    calibration: Calibration | None
    query_kind: str = ANY

    def of(self, row_kind: str, similarity: float, rank: int) -> float | None:
        if self.calibration is None:
            return None
        curve = self.calibration.curve(self.query_kind, row_kind)
        return float(curve(np.asarray([similarity]), rank)[0])

    def keeps(self, confidence: float | None, minimum: float | None) -> bool:
        return minimum is None or confidence is None or confidence >= minimum


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


def raw_query_vector(vector: Sequence[float] | np.ndarray, dim: int) -> np.ndarray:
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
    placement: SearchPlacement,
    exclude_ids: tuple[str, ...] = (),
    confidence: ConfidenceScorer = ConfidenceScorer(None),
) -> list[Match]:
    def run() -> list[ItemMatch]:
        filter_check.check(snapshot, params.filters)
        return snapshot.search(
            vector[0],
            params.k,
            kinds=params.kinds,
            filters=params.filters,
            exclude_ids=exclude_ids,
            ranking=params.ranking,
        )

    restricted = params.kinds is not None or bool(params.filters)
    found = await placement.run(snapshot.manifest.version, restricted, run)
    matches = [match_out(match, confidence) for match in found]
    return [m for m in matches if confidence.keeps(m.confidence, params.min_confidence)]


def match_out(match: ItemMatch, confidence: ConfidenceScorer) -> Match:
    """The HTTP form of the index's item match: the one place the two meet."""
    # Curves were fitted on cosine similarities: hybrid scores are judged by their item term.
    similarity = match.item_score if match.item_score is not None else match.score
    return Match(
        id=match.item_id,
        score=float(match.score),
        rank=match.rank,
        kind=match.kind,
        label=match.label,
        class_name=match.class_name,
        item_score=match.item_score,
        class_score=match.class_score,
        confidence=confidence.of(match.kind, float(similarity), match.rank),
        metadata=match.metadata,
    )


def class_matches(snapshot: Snapshot, vector: np.ndarray, n: int) -> list[ClassMatchOut]:
    """The n best class prototypes for a (1, dim) query (one small matrix product)."""
    return [class_match_out(match) for match in snapshot.match_classes(vector[0], n)]


def class_match_out(match: ClassMatch) -> ClassMatchOut:
    info = match.info
    return ClassMatchOut(
        name=info.name, score=match.score, members=info.members, zero_shot=info.zero_shot
    )
