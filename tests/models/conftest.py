"""Fixtures for the models tests: one OfflineEncoder per session (loading is costly)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def offline_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the ImageNet label vectors go: MMSEARCH_TEST_CACHE_DIR, else a fresh tmp dir.

    A fresh dir means the 1000 label texts are embedded once per session
    (about 6-30 s on a 2-core CPU).
    """
    configured = os.environ.get("MMSEARCH_TEST_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("mmsearch-cache")


@pytest.fixture(scope="session")
def offline_encoder(offline_cache_dir: Path):  # type: ignore[no-untyped-def]
    from models.encoders.offline import OfflineEncoder

    started = time.perf_counter()
    encoder = OfflineEncoder(device="cpu", cache_dir=offline_cache_dir)
    encoder.test_load_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
    return encoder


@pytest.fixture(scope="session")
def burrito_paths(shared_data: Path) -> list[Path]:
    """The first ten breakfast_burrito photos of the food101 sample.

    'burrito' is an ImageNet class, so these photos check the vision weights.
    """
    paths = sorted((shared_data / "food101-10" / "images" / "breakfast_burrito").glob("*.jpg"))[:10]
    assert len(paths) == 10
    return paths
