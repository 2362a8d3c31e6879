"""``manifest.json``: what a snapshot holds and which model built it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from index.layout import CorruptSnapshotError, atomic_write_text

MANIFEST_FILE = "manifest.json"
LAYOUT_VERSION = 1


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Manifest:
    version: str
    model_fingerprint: str
    dim: int
    factory: str
    n_items: int
    n_vectors: int
    kinds: dict[str, int]
    skipped: int = 0  # unreadable inputs (images) left out of the snapshot
    n_classes: int = 0  # prototypes in the table (zero-shot ones included)
    n_zero_shot_classes: int = 0  # classes whose prototype is their embedded name alone
    class_field: str | None = None  # metadata field naming the class; None: item labels
    # Items/vectors encoded vs copied from the live snapshot, and live items dropped
    # (index.reuse.ChangeCounts); empty for snapshots built before it was counted.
    changes: dict[str, int] = field(default_factory=dict)
    reused_from: str | None = None  # the snapshot whose vectors were copied, if any
    created_at: str = field(default_factory=utc_now_iso)
    # When the re-index was asked for (ISO 8601, UTC): publishing is ordered by it,
    # so an older request that finishes late never replaces a newer one's snapshot.
    requested_at: str | None = None
    source: str | None = None
    format: str | None = None
    metric: str = "ip"
    layout: int = LAYOUT_VERSION
    # Search knobs tuned at build time (index.autotune). None: the index has no such
    # knob, or an older snapshot that predates tuning; VectorIndex's defaults apply then.
    ef_search: int | None = None
    nprobe: int | None = None
    recall_at_10: float | None = None  # against exact search; None: never measured
    target_recall: float | None = None
    recall_queries: int = 0  # queries recall_at_10 was measured on; 0: exact or unknown
    # Where the vectors are searched (index.backends): "faiss" (index.faiss in this folder;
    # every manifest older than this field) or "milvus" (the collection named here).
    backend: str = "faiss"
    collection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: Path) -> None:
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=True)
        atomic_write_text(directory / MANIFEST_FILE, text + "\n")

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CorruptSnapshotError(f"snapshot {directory} has no {MANIFEST_FILE}") from exc
        except (OSError, ValueError) as exc:
            raise CorruptSnapshotError(f"unreadable manifest {path}: {exc}") from exc
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, where: Path | str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise CorruptSnapshotError(f"{where}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a required field is missing
            raise CorruptSnapshotError(f"{where}: {exc}") from exc
        if manifest.layout > LAYOUT_VERSION:
            raise CorruptSnapshotError(
                f"{where}: snapshot layout {manifest.layout} is newer than this code "
                f"understands ({LAYOUT_VERSION}); upgrade mmsearch"
            )
        if manifest.backend not in ("faiss", "milvus"):
            raise CorruptSnapshotError(f"{where}: unknown index backend {manifest.backend!r}")
        if manifest.metric != "ip":
            raise CorruptSnapshotError(f"{where}: unsupported metric {manifest.metric!r}")
        return manifest
