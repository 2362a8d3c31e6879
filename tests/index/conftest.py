"""Fixtures for index tests: a tiny encoder and small synthetic catalogs on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from index.build import build_snapshot
from index.manifest import Manifest
from models.types import CatalogRecord
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder


@pytest.fixture(scope="session")
def encoder() -> TinyEncoder:
    return TinyEncoder(dim=32, seed=0)


@pytest.fixture()
def built(tmp_path: Path, encoder: TinyEncoder) -> tuple[Path, Manifest, list[CatalogRecord]]:
    """A published Flat snapshot of 30 four-row items."""
    records = make_records(tmp_path / "images", 30)
    index_dir = tmp_path / "index"
    manifest = build_snapshot(records, encoder, index_dir, batch_size=8, source="synthetic")
    return index_dir, manifest, records
