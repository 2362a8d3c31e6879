"""Milvus as a snapshot's vector index: one collection per snapshot version.

``pymilvus`` is imported inside the functions that talk to Milvus, never at module
level, so the default FAISS path does not load it (it comes with the ``milvus`` extra).

The URI says which Milvus: a path ending in ``.db`` is Milvus Lite, embedded in this
process (one process per file: a second process cannot open it, so API replicas and
workers on other machines need a server); ``http://host:19530`` is a Milvus standalone
or cluster, which shards and replicates the collection.

A collection holds an INT64 primary key ``row`` and a FLOAT_VECTOR ``vector`` under a
FLAT inner-product index, so its results equal exact search: recall 1.0, no knob to
tune. A full build numbers the keys as its catalog rows (key i = row i). Item changes
(:mod:`index.milvus_changes`) then change the collection in place, deleting the rows
of changed items and inserting new ones under fresh keys, while each snapshot's
catalog keeps its rows numbered from 0: such a snapshot stores its row -> key map
(:data:`KEYS_FILE`, strictly increasing), and a search maps the keys it finds back to
its own rows, skipping keys it does not know (rows inserted for a later snapshot, or
left by an apply that died). Reads use strong consistency, so a search sees every
insert and delete that returned before it.

The alias :data:`CURRENT_ALIAS` names the live snapshot's collection, for readers
outside mmsearch. The service itself searches the collection its snapshot's manifest
names, so the vectors it finds always match that snapshot's SQLite catalog.

Filters: the rows the SQLite catalog allows (kinds, metadata) reach Milvus as a
``row in [...]`` expression (``row not in [...]`` when that is shorter). Its length
grows with the set, a few bytes a row: fine up to some hundred thousand rows, but a
filter that keeps millions of rows of a larger catalog sends megabytes of expression
with every query, and Milvus caps request size. Such catalogs need the filtered fields
as Milvus scalar fields instead (not done yet).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index.layout import CorruptSnapshotError, SnapshotError
from index.vector_index import as_matrix, empty_result

logger = logging.getLogger(__name__)

COLLECTION_PREFIX = "mmsearch_"
CURRENT_ALIAS = "mmsearch_current"
ROW_FIELD = "row"
VECTOR_FIELD = "vector"
MILVUS_FACTORY = "Flat"  # what the manifest records: Milvus FLAT is exact search too
MAX_TOP_K = 16_384  # Milvus refuses a larger search limit
KEYS_FILE = "milvus_keys.npy"  # a snapshot's row -> collection key (absent: key = row)
_INSERT_CHUNK_ROWS = 4_096  # well under gRPC's message limit at 1024 float32 dims
_SEARCH_PARAMS = {"metric_type": "IP"}
_RETRY_PAUSE_S = 0.5

T = TypeVar("T")


class MilvusUnavailableError(SnapshotError):
    """Milvus could not be reached or refused a call; the service answers 503."""


def collection_name(version: str) -> str:
    """``mmsearch_<version>`` with the characters Milvus names refuse replaced by ``_``."""
    return COLLECTION_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", version)


def row_filter(allowed_rows: np.ndarray, ntotal: int, keys: np.ndarray | None = None) -> str:
    """A Milvus expression keeping ``allowed_rows`` (their ``keys``; default key = row):
    the shorter of in / not in."""
    rows = np.unique(np.asarray(allowed_rows, dtype=np.int64))
    rows = rows[(rows >= 0) & (rows < ntotal)]
    key_of = np.arange(ntotal, dtype=np.int64) if keys is None else keys
    if rows.size <= ntotal // 2:
        return f"{ROW_FIELD} in [{', '.join(map(str, key_of[rows].tolist()))}]"
    excluded = np.setdiff1d(np.arange(ntotal, dtype=np.int64), rows, assume_unique=True)
    return f"{ROW_FIELD} not in [{', '.join(map(str, key_of[excluded].tolist()))}]"


def read_keys(directory: Path, n_vectors: int) -> np.ndarray:
    """A snapshot's row -> key map; key = row when it has no :data:`KEYS_FILE`."""
    path = directory / KEYS_FILE
    if not path.exists():
        return np.arange(n_vectors, dtype=np.int64)
    try:
        keys = np.load(path)
    except (OSError, ValueError) as exc:
        raise CorruptSnapshotError(f"unreadable {path}: {exc}") from exc
    if keys.shape != (n_vectors,) or (keys.size > 1 and np.any(np.diff(keys) <= 0)):
        raise CorruptSnapshotError(
            f"{path} holds {keys.shape} keys, expected {n_vectors} increasing ones"
        )
    return keys.astype(np.int64, copy=False)


# pymilvus pings its channel every 10 s, idle or not. Milvus Lite's embedded gRPC server
# keeps gRPC's default policy (no pings without data more often than every 5 minutes,
# two strikes), so it answered an idle client with GOAWAY "too_many_pings" and the next
# call failed. Against Lite (same host, nothing between to drop a connection) pinging
# less often than that policy allows loses nothing; a real server keeps the defaults.
_LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 600_000, "grpc.keepalive_permit_without_calls": 0}


def is_lite_uri(uri: str) -> bool:
    """pymilvus opens Milvus Lite, embedded, for a path ending in .db; else a server."""
    return uri.endswith(".db")


def _milvus_call(what: str, call: Callable[[], T], *, idempotent: bool = False) -> T:
    """Run a client call; Milvus' own errors become MilvusUnavailableError.

    An ``idempotent`` call is tried once more after a failure, for a connection dropped
    in between (the "too many pings" GOAWAY that caused it against Milvus Lite is now
    avoided by :data:`_LITE_GRPC_OPTIONS`). Writes are never repeated: an insert that
    did land would be stored twice.
    """
    from pymilvus.exceptions import MilvusException

    attempts = 2 if idempotent else 1
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except MilvusException as exc:
            if attempt == attempts:
                raise MilvusUnavailableError(f"Milvus {what} failed: {exc}") from exc
            logger.warning("Milvus %s failed, trying once more: %s", what, exc)
            time.sleep(_RETRY_PAUSE_S)
    raise AssertionError("unreachable")


class MilvusVectorIndex:
    """One loaded collection, searched like :class:`~index.vector_index.VectorIndex`."""

    factory = MILVUS_FACTORY
    is_exact = True

    def __init__(self, client: Any, collection: str, dim: int, keys: np.ndarray) -> None:
        self._client = client
        self.collection = collection
        self._dim = dim
        self._keys = np.asarray(keys, dtype=np.int64)  # row -> key, strictly increasing

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ntotal(self) -> int:
        return int(self._keys.size)

    def search(
        self, queries: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows), both (q, k); missing hits are row -1, score -inf.

        At most :data:`MAX_TOP_K` hits a query come back, whatever ``k``.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        matrix = as_matrix(queries, self.dim)
        scores, rows = empty_result(matrix.shape[0], k)
        if self.ntotal == 0 or (allowed_rows is not None and np.size(allowed_rows) == 0):
            return scores, rows
        expression = self._expression(allowed_rows)
        limit = min(k, MAX_TOP_K)
        while True:
            results = self._search(matrix, limit, expression)
            # Keys this snapshot does not know (an apply's rows before it deletes the
            # ones they replace) are skipped; fetch that many more while there are more.
            unknown = self._fill(results, scores, rows)
            if unknown == 0 or limit == MAX_TOP_K:
                return scores, rows
            limit = min(limit + unknown, MAX_TOP_K)

    def _expression(self, allowed_rows: np.ndarray | None) -> str:
        # Keys above this snapshot's largest were inserted for a later one.
        newer = f"{ROW_FIELD} <= {int(self._keys[-1])}"
        if allowed_rows is None:
            return newer
        return f"{newer} and ({row_filter(allowed_rows, self.ntotal, self._keys)})"

    def _search(self, matrix: np.ndarray, limit: int, expression: str) -> Any:
        return _milvus_call(
            "search",
            lambda: self._client.search(
                self.collection,
                data=list(matrix),
                limit=limit,
                filter=expression,
                output_fields=[ROW_FIELD],
                anns_field=VECTOR_FIELD,
                search_params=_SEARCH_PARAMS,
            ),
            idempotent=True,
        )

    def _fill(self, results: Any, scores: np.ndarray, rows: np.ndarray) -> int:
        """Write the hits as rows of this snapshot; the most unknown keys a query had,
        counting only queries whose result was full (a short one is exhausted)."""
        k = rows.shape[1]
        most_unknown = 0
        for i, hits in enumerate(results):
            found = np.fromiter((int(hit.id) for hit in hits), dtype=np.int64, count=len(hits))
            distances = np.fromiter((float(hit.distance) for hit in hits), dtype=np.float32)
            known_rows = self._rows_of(found)
            known = known_rows >= 0
            n = min(int(known.sum()), k)
            rows[i, :n] = known_rows[known][:n]
            scores[i, :n] = distances[known][:n]
            if n < k and not known.all():
                most_unknown = max(most_unknown, int((~known).sum()))
        return most_unknown

    def _rows_of(self, keys: np.ndarray) -> np.ndarray:
        """This snapshot's row of each key; -1 for a key it does not hold."""
        at = np.searchsorted(self._keys, keys)
        at = np.minimum(at, self._keys.size - 1)
        return np.where(self._keys[at] == keys, at, -1)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of ``rows``, in their order (exact: FLAT keeps them whole)."""
        wanted = [int(key) for key in self._keys[np.asarray(rows, dtype=np.int64)]]
        found = _milvus_call(
            "get",
            lambda: self._client.get(self.collection, ids=wanted, output_fields=[VECTOR_FIELD]),
            idempotent=True,
        )
        by_key = {int(hit[ROW_FIELD]): hit[VECTOR_FIELD] for hit in found}
        return np.asarray([by_key[key] for key in wanted], dtype=np.float32).reshape(-1, self.dim)


class MilvusStore:
    """One Milvus deployment (a server URI or a Milvus Lite file), connected on first use."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from pymilvus import MilvusClient

            options = _LITE_GRPC_OPTIONS if is_lite_uri(self.uri) else {}
            connect = partial(MilvusClient, self.uri, grpc_options=options)
            self._client = _milvus_call("connect", connect, idempotent=True)
        return self._client

    def create(self, version: str, vectors: np.ndarray) -> MilvusVectorIndex:
        """A new collection for ``version`` holding ``vectors`` (row i = vectors[i])."""
        name = collection_name(version)
        dim = int(vectors.shape[1])
        _milvus_call("create_collection", lambda: self._create_collection(name, dim))
        self.insert(name, vectors, first_key=0)
        return self.open(name, dim, np.arange(vectors.shape[0], dtype=np.int64))

    def insert(self, collection: str, vectors: np.ndarray, first_key: int) -> None:
        """Add ``vectors`` under keys ``first_key``, ``first_key + 1``, ...; flushed."""
        for start in range(0, vectors.shape[0], _INSERT_CHUNK_ROWS):
            chunk = np.asarray(vectors[start : start + _INSERT_CHUNK_ROWS], dtype=np.float32)
            first = first_key + start
            batch = [{ROW_FIELD: first + i, VECTOR_FIELD: v} for i, v in enumerate(chunk)]
            _milvus_call("insert", partial(self.client.insert, collection, batch))
        _milvus_call("flush", lambda: self.client.flush(collection), idempotent=True)

    def delete(self, collection: str, keys: np.ndarray | None = None, from_key: int = 0) -> None:
        """Delete the rows with these ``keys``, or (no keys) every row from ``from_key``
        up; deleting a key twice does nothing, so it may be repeated."""
        if keys is not None and keys.size == 0:
            return
        call = (
            partial(self.client.delete, collection, filter=f"{ROW_FIELD} >= {int(from_key)}")
            if keys is None
            else partial(self.client.delete, collection, ids=[int(k) for k in keys])
        )
        _milvus_call("delete", call, idempotent=True)

    def _create_collection(self, name: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ROW_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name=VECTOR_FIELD, index_type="FLAT", metric_type="IP")
        self.client.create_collection(
            name, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    def open(self, collection: str, dim: int, keys: np.ndarray) -> MilvusVectorIndex:
        """Load ``collection`` for search as the rows whose keys are ``keys`` (loading is
        per process: a new one must load it)."""
        exists = _milvus_call(
            "has_collection", lambda: self.client.has_collection(collection), idempotent=True
        )
        if not exists:
            raise CorruptSnapshotError(f"Milvus collection {collection} does not exist")
        _milvus_call("load", lambda: self.client.load_collection(collection), idempotent=True)
        return MilvusVectorIndex(self.client, collection, dim, keys)

    def count(self, collection: str) -> int:
        """Rows in ``collection`` now (every snapshot sharing it, and any leftovers)."""
        counted = _milvus_call(
            "count",
            lambda: self.client.query(collection, filter="", output_fields=["count(*)"]),
            idempotent=True,
        )
        return int(counted[0]["count(*)"])

    def point_alias(self, collection: str) -> None:
        """Point :data:`CURRENT_ALIAS` at ``collection``; Milvus switches it atomically."""
        aliases = _milvus_call("list_aliases", self.client.list_aliases, idempotent=True)
        if CURRENT_ALIAS in aliases.get("aliases", []):
            _milvus_call("alter_alias", lambda: self.client.alter_alias(collection, CURRENT_ALIAS))
        else:
            _milvus_call(
                "create_alias", lambda: self.client.create_alias(collection, CURRENT_ALIAS)
            )
        logger.info("Milvus alias %s now names %s", CURRENT_ALIAS, collection)

    def drop_collections(self, names: Iterable[str]) -> None:
        """Drop these collections, those that exist."""
        for name in names:
            exists = partial(self.client.has_collection, name)
            if _milvus_call("has_collection", exists, idempotent=True):
                _milvus_call("drop_collection", partial(self.client.drop_collection, name))
                logger.info("dropped Milvus collection %s", name)
