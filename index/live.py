"""The serving process's view of CURRENT, hot-swapped when a new version is published.

Requests take ``live.current`` once and use that reference to the end; a swap
only rebinds the attribute, so in-flight requests finish on the old snapshot.
The old snapshot is never closed explicitly: it is released (catalog
connection, memory map, FAISS index) when the last request holding it drops
its reference.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from index.backends import IndexBackend
from index.layout import SnapshotError, read_current
from index.snapshot import Snapshot

logger = logging.getLogger(__name__)


class LiveSnapshot:
    """Holds the live snapshot of ``index_dir``; loads CURRENT on construction.

    A version that fails to open (fingerprint mismatch, corrupt files) is logged
    once and not retried until CURRENT names another version; the previous
    snapshot stays live meanwhile and ``last_error`` says what went wrong.
    """

    def __init__(
        self,
        index_dir: Path | str,
        expected_fingerprint: str | None,
        *,
        use_gpu: bool = False,
        backend: IndexBackend | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.expected_fingerprint = expected_fingerprint
        self.use_gpu = use_gpu
        self.backend = backend
        self._snapshot: Snapshot | None = None
        self._failed_version: str | None = None
        self.last_error: str | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.refresh()

    @property
    def current(self) -> Snapshot | None:
        return self._snapshot

    @property
    def version(self) -> str | None:
        snapshot = self._snapshot
        return snapshot.version if snapshot is not None else None

    def refresh(self) -> bool:
        """Re-read CURRENT and swap to it if it changed; True when a swap happened."""
        with self._refresh_lock:
            try:
                version = read_current(self.index_dir)
            except (SnapshotError, OSError) as exc:
                return self._failed(None, exc)
            if version is None or version in (self.version, self._failed_version):
                return False
            try:
                snapshot = Snapshot.open(
                    self.index_dir / version,
                    self.expected_fingerprint,
                    use_gpu=self.use_gpu,
                    backend=self.backend,
                )
            except (SnapshotError, OSError) as exc:
                return self._failed(version, exc)
            self._snapshot = snapshot
            self._failed_version = None
            self.last_error = None
            logger.info("serving snapshot %s from %s", version, self.index_dir)
            return True

    def _failed(self, version: str | None, exc: Exception) -> bool:
        self._failed_version = version
        self.last_error = str(exc)
        logger.warning(
            "keeping snapshot %s; cannot load %s: %s", self.version, version or "CURRENT", exc
        )
        return False

    @property
    def is_polling(self) -> bool:
        return self._poller is not None

    def start_polling(self, interval_s: float = 5.0) -> None:
        """Call :meth:`refresh` every ``interval_s`` seconds in a daemon thread."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        if self._poller is not None:
            return
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll, args=(interval_s,), name="snapshot-poller", daemon=True
        )
        self._poller.start()

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.refresh()

    def stop(self) -> None:
        """Stop polling (idempotent); the live snapshot stays usable."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
