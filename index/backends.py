"""Where a snapshot's vectors are searched: FAISS (the default) or Milvus.

Everything else of a snapshot (the SQLite catalog, the prototypes, ``vectors.npy``)
stays in its folder whatever the backend, so filters, kinds, one result per item and
prototypes work the same; only the row search moves. A snapshot's manifest records
its backend (``faiss`` for manifests older than this field) and, for Milvus, its
collection, so a process configured for Milvus still serves older FAISS snapshots.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from index.autotune import AUTO
from index.layout import CorruptSnapshotError
from index.manifest import Manifest
from index.milvus_index import (
    MILVUS_FACTORY,
    MilvusStore,
    MilvusUnavailableError,
    MilvusVectorIndex,
)

logger = logging.getLogger(__name__)

FAISS = "faiss"
MILVUS = "milvus"
BACKENDS = (FAISS, MILVUS)


class IndexBackend:
    """The configured backend; for Milvus, one connection opened on first use."""

    def __init__(self, name: str = FAISS, milvus_uri: str | None = None) -> None:
        if name not in BACKENDS:
            raise ValueError(f"unknown index backend {name!r}; expected one of {BACKENDS}")
        if name == MILVUS and not milvus_uri:
            raise ValueError("the milvus backend needs a URI (MMSEARCH_MILVUS_URI)")
        self.name = name
        self._store = MilvusStore(milvus_uri) if name == MILVUS and milvus_uri else None

    @property
    def milvus(self) -> MilvusStore | None:
        return self._store

    def check_factory(self, factory: str) -> None:
        check_backend_factory(self.name, factory)

    def open(self, path: Path, manifest: Manifest) -> MilvusVectorIndex:
        """The Milvus index of a snapshot whose manifest says ``milvus``."""
        if self._store is None or manifest.collection is None:
            raise CorruptSnapshotError(
                f"snapshot {path} keeps its vectors in Milvus collection "
                f"{manifest.collection}; serve it with MMSEARCH_INDEX_BACKEND=milvus "
                "and MMSEARCH_MILVUS_URI"
            )
        return self._store.open(manifest.collection, manifest.dim)

    def published(self, manifest: Manifest) -> None:
        """The snapshot became CURRENT: point the Milvus alias at its collection."""
        if self._store is not None and manifest.collection is not None:
            self._store.point_alias(manifest.collection)

    def pruned(self, versions: Iterable[str]) -> None:
        """These snapshot folders were deleted: drop their collections too."""
        if self._store is not None:
            self._store.drop_versions(versions)

    @contextmanager
    def dropped_on_failure(self, version: str) -> Iterator[None]:
        """A build that fails after writing its collection leaves none behind."""
        try:
            yield
        except BaseException:
            if self._store is not None:
                try:
                    self._store.drop_versions([version])
                except MilvusUnavailableError as exc:  # the build's own error matters more
                    logger.warning("collection of failed build %s not dropped: %s", version, exc)
            raise


def check_backend_factory(backend: str, factory: str) -> None:
    """Milvus collections are built FLAT (exact) for now; other factories are FAISS's."""
    if backend == MILVUS and factory not in (AUTO, MILVUS_FACTORY):
        raise ValueError(
            f"factory {factory!r} is a FAISS index; the milvus backend builds "
            f"{MILVUS_FACTORY!r} (exact) collections only: use 'auto' or 'Flat'"
        )
