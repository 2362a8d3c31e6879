"""Incremental re-index: unchanged items take the live snapshot's vectors, only the rest
is encoded (index/reuse.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from index.build import build_snapshot
from index.layout import read_current
from index.manifest import Manifest
from index.prototypes import PROTOTYPES_FILE
from index.reuse import content_hash
from index.snapshot import CATALOG_FILE, VECTORS_FILE, load_current
from models.types import CatalogRecord
from tests.index.sample_records import make_records, write_image
from tests.index.tiny_encoder import CountingEncoder, TinyEncoder

ROWS_PER_ITEM = 4  # image, two captions, recipe


def _build(records: list[CatalogRecord], encoder: TinyEncoder, index_dir: Path) -> Manifest:
    return build_snapshot(records, encoder, index_dir, batch_size=8, keep_older=2)


def _vectors(index_dir: Path, version: str) -> np.ndarray:
    return np.load(index_dir / version / VECTORS_FILE)


@pytest.fixture()
def first(tmp_path: Path) -> tuple[Path, list[CatalogRecord], Manifest]:
    records = make_records(tmp_path / "images", 20)
    index_dir = tmp_path / "index"
    return index_dir, records, _build(records, CountingEncoder(), index_dir)


def test_first_build_embeds_everything(first: tuple[Path, list[CatalogRecord], Manifest]) -> None:
    _, _, manifest = first
    assert manifest.changes == {
        "items_embedded": 20,
        "vectors_embedded": 20 * ROWS_PER_ITEM,
        "items_reused": 0,
        "vectors_reused": 0,
        "items_removed": 0,
    }
    assert manifest.reused_from is None


def test_unchanged_source_encodes_nothing(
    first: tuple[Path, list[CatalogRecord], Manifest],
) -> None:
    index_dir, records, before = first
    encoder = CountingEncoder()
    after = _build(records, encoder, index_dir)
    assert encoder.total == 0
    assert after.changes["items_reused"] == 20
    assert after.changes["vectors_reused"] == 20 * ROWS_PER_ITEM
    assert after.changes["items_embedded"] == after.changes["items_removed"] == 0
    assert after.reused_from == before.version
    np.testing.assert_array_equal(
        _vectors(index_dir, after.version), _vectors(index_dir, before.version)
    )
    assert (after.n_items, after.n_vectors, after.kinds) == (
        before.n_items,
        before.n_vectors,
        before.kinds,
    )


def test_a_changed_item_alone_is_encoded_again(
    first: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    index_dir, records, _ = first
    changed = list(records)
    changed[3] = replace(changed[3], texts=("a new caption", changed[3].texts[1]))
    changed[7] = replace(changed[7], image_path=write_image(tmp_path / "new-7.png", seed=999))
    encoder = CountingEncoder()
    after = _build(changed, encoder, index_dir)
    # A changed item is encoded whole: all four rows of each of the two.
    assert encoder.inputs == {"image": 2, "text": 4, "recipe": 2}
    assert after.changes["items_embedded"] == 2
    assert after.changes["vectors_embedded"] == 2 * ROWS_PER_ITEM
    assert after.changes["items_reused"] == 18
    fresh_dir = tmp_path / "fresh"
    full = _build(changed, TinyEncoder(), fresh_dir)
    np.testing.assert_allclose(
        _vectors(index_dir, after.version), _vectors(fresh_dir, full.version), atol=1e-6
    )
    # Prototypes are built from the new snapshot's vectors: the same as a full build's.
    np.testing.assert_allclose(
        np.load(index_dir / after.version / PROTOTYPES_FILE),
        np.load(fresh_dir / full.version / PROTOTYPES_FILE),
        atol=1e-6,
    )


def test_metadata_change_reuses_vectors_but_stores_new_metadata(
    first: tuple[Path, list[CatalogRecord], Manifest],
) -> None:
    index_dir, records, _ = first
    changed = [replace(records[0], metadata={"cuisine": "fusion"}), *records[1:]]
    encoder = CountingEncoder()
    after = _build(changed, encoder, index_dir)
    assert encoder.total == 0 and after.changes["items_reused"] == 20
    snapshot = load_current(index_dir)
    item = snapshot.get_item("item-0")
    assert item is not None and item.metadata == {"cuisine": "fusion"}
    snapshot.close()


def test_removed_item_is_dropped_and_counted(
    first: tuple[Path, list[CatalogRecord], Manifest],
) -> None:
    index_dir, records, _ = first
    encoder = CountingEncoder()
    after = _build(records[:5] + records[6:], encoder, index_dir)
    assert encoder.total == 0
    assert after.changes["items_removed"] == 1
    assert after.n_items == 19
    snapshot = load_current(index_dir)
    assert snapshot.get_item("item-5") is None
    assert snapshot.catalog.rows_of_item("item-5").size == 0
    snapshot.close()


def test_new_items_are_encoded_and_old_ones_reused(
    first: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    index_dir, records, _ = first
    added = make_records(tmp_path / "more", 3, prefix="extra")
    encoder = CountingEncoder()
    after = _build(records + added, encoder, index_dir)
    assert encoder.inputs == {"image": 3, "text": 6, "recipe": 3}
    assert after.changes["items_embedded"] == 3 and after.changes["items_reused"] == 20


def test_another_model_re_embeds_everything(
    first: tuple[Path, list[CatalogRecord], Manifest],
) -> None:
    index_dir, records, _ = first
    other = CountingEncoder(seed=1)  # another fingerprint, same dim
    after = _build(records, other, index_dir)
    assert other.inputs == {"image": 20, "text": 40, "recipe": 20}
    assert after.changes["items_embedded"] == 20 and after.changes["items_reused"] == 0
    assert after.reused_from is None


def test_snapshot_without_hashes_is_re_embedded(
    first: tuple[Path, list[CatalogRecord], Manifest],
) -> None:
    index_dir, records, before = first
    live_catalog = index_dir / before.version / CATALOG_FILE
    with sqlite3.connect(live_catalog) as db:  # as written before hashes existed
        db.execute("ALTER TABLE items DROP COLUMN content_hash")
    encoder = CountingEncoder()
    after = _build(records[1:], encoder, index_dir)
    assert encoder.inputs == {"image": 19, "text": 38, "recipe": 19}
    assert after.changes["items_reused"] == 0
    assert after.changes["items_removed"] == 1
    assert read_current(index_dir) == after.version


def test_unreadable_image_is_tried_again(tmp_path: Path) -> None:
    records = make_records(tmp_path / "images", 4)
    broken = records[2].image_path
    assert broken is not None
    broken.write_bytes(b"not an image")
    index_dir = tmp_path / "index"
    assert _build(records, CountingEncoder(), index_dir).skipped == 1
    encoder = CountingEncoder()
    after = _build(records, encoder, index_dir)
    # Tried again (it may have been fixed), still unreadable: its texts are encoded anew.
    assert encoder.inputs == {"image": 0, "text": 2, "recipe": 1}
    assert after.changes["items_embedded"] == 1 and after.skipped == 1


def test_content_hash_covers_encoded_inputs_only(tmp_path: Path) -> None:
    record = make_records(tmp_path, 1)[0]
    assert content_hash(record) == content_hash(replace(record, metadata={}, label="x"))
    assert content_hash(record) != content_hash(replace(record, texts=record.texts[:1]))
    assert content_hash(record) != content_hash(replace(record, recipe=None))
    before = content_hash(record)
    assert record.image_path is not None
    write_image(record.image_path, seed=123)
    assert content_hash(record) != before
