"""Where a snapshot's vectors are searched: FAISS (the default) or Milvus.

Everything else of a snapshot (the SQLite catalog, the prototypes, ``vectors.npy``)
stays in its folder whatever the backend, so filters, kinds, one result per item and
prototypes work the same; only the row search moves. A snapshot's manifest records
its backend (``faiss`` for manifests older than this field) and, for Milvus, its
collection, so a process configured for Milvus still serves older FAISS snapshots.
Snapshots made by item changes share their base's collection (:mod:`index.milvus_changes`),
so pruning drops a collection only once no kept snapshot names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from index.autotune import AUTO
from index.layout import CorruptSnapshotError, SnapshotError, list_versions, prune
from index.manifest import Manifest
from index.milvus_index import (
    CURRENT_ALIAS,
    MILVUS_FACTORY,
    MilvusStore,
    MilvusUnavailableError,
    MilvusVectorIndex,
    collection_name,
    read_keys,
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
        keys = read_keys(path, manifest.n_vectors)
        return self._store.open(manifest.collection, manifest.dim, keys)

    def published(self, manifest: Manifest) -> None:
        """The snapshot became CURRENT: point the Milvus alias at its collection.

        AliasNotMovedError when Milvus refuses: the snapshot is live all the same."""
        if self._store is not None and manifest.collection is not None:
            try:
                self._store.point_alias(manifest.collection)
            except MilvusUnavailableError as exc:
                raise AliasNotMovedError(
                    f"snapshot {manifest.version} is live, but the Milvus alias "
                    f"{CURRENT_ALIAS} was not moved to its collection {manifest.collection} "
                    f"(the next publish moves it): {exc}"
                ) from exc

    def prune(self, index_dir: Path, keep_older: int) -> list[str]:
        """:func:`index.layout.prune`, then drop the collections of the pruned snapshots
        that no kept snapshot shares. Call it under :func:`index.layout.publish_lock`."""
        named = _collections_named(index_dir)
        pruned = prune(index_dir, keep_older)
        if self._store is not None:
            kept = {name for version, name in named.items() if version not in pruned}
            # A folder whose manifest could not be read may still have had its own.
            gone = {named.get(version, collection_name(version)) for version in pruned}
            self._store.drop_collections(sorted(gone - kept))
        return pruned

    @contextmanager
    def dropped_on_failure(self, index_dir: Path, version: str) -> Iterator[None]:
        """A build that fails after writing its collection leaves none behind, unless
        its snapshot got installed first (a failure after publishing, such as the alias
        update): that snapshot, CURRENT maybe, searches the collection, so it stays."""
        try:
            yield
        except BaseException:
            if self._store is not None:
                self._drop_unless_named(index_dir, version)
            raise

    def _drop_unless_named(self, index_dir: Path, version: str) -> None:
        assert self._store is not None
        collection = collection_name(version)
        if collection in _collections_named(index_dir).values():
            logger.warning(
                "build %s failed after its snapshot was installed: its collection %s stays",
                version,
                collection,
            )
            return
        try:
            self._store.drop_collections([collection])
        except MilvusUnavailableError as exc:  # the build's own error matters more
            logger.warning("collection of failed build %s not dropped: %s", version, exc)


class AliasNotMovedError(MilvusUnavailableError):
    """A snapshot was published, but the Milvus alias still names an older collection."""


def _collections_named(index_dir: Path) -> dict[str, str]:
    """The Milvus collection of each snapshot in ``index_dir`` that names one."""
    named = {}
    for version in list_versions(index_dir):
        try:
            manifest = Manifest.read(Path(index_dir) / version)
        except SnapshotError:  # a broken folder is pruned like any other
            continue
        if manifest.collection is not None:
            named[version] = manifest.collection
    return named


def check_backend_factory(backend: str, factory: str) -> None:
    """Milvus collections are built FLAT (exact) for now; other factories are FAISS's."""
    if backend == MILVUS and factory not in (AUTO, MILVUS_FACTORY):
        raise ValueError(
            f"factory {factory!r} is a FAISS index; the milvus backend builds "
            f"{MILVUS_FACTORY!r} (exact) collections only: use 'auto' or 'Flat'"
        )
