"""Item changes: one new snapshot from the live one, copying every untouched vector
(index/changes.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from index.build import BuildError, build_snapshot
from index.changes import (
    ApplyOptions,
    ChangesRefusedError,
    ItemChange,
    apply_changes,
    coalesce,
)
from index.layout import list_versions, read_current
from index.manifest import Manifest
from index.prototypes import PrototypeOptions
from index.snapshot import Snapshot, load_current
from models.types import CatalogRecord, Recipe
from tests.index.sample_records import jeon_record, make_records
from tests.index.tiny_encoder import CountingEncoder, TinyEncoder

N_ITEMS = 20


def _put(record: CatalogRecord) -> ItemChange:
    return ItemChange(record.id, record, datetime.now(UTC))


def _delete(item_id: str) -> ItemChange:
    return ItemChange(item_id, None, datetime.now(UTC))


@pytest.fixture()
def live(tmp_path: Path) -> tuple[Path, list[CatalogRecord], Manifest]:
    records = make_records(tmp_path / "images", N_ITEMS)
    index_dir = tmp_path / "index"
    return index_dir, records, build_snapshot(records, TinyEncoder(), index_dir, batch_size=8)


def _open(index_dir: Path) -> Snapshot:
    return load_current(index_dir, TinyEncoder().fingerprint)


def _top_item(snapshot: Snapshot, text: str) -> str:
    query = TinyEncoder().encode_texts([text])[0]
    return snapshot.search(query, 1, kinds=["text"])[0].item_id


def test_changes_make_one_snapshot_and_encode_only_what_changed(
    live: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    index_dir, records, before = live
    versions_before = list_versions(index_dir)
    changes = [
        _put(jeon_record(tmp_path)),
        _put(CatalogRecord("item-3", texts=("grilled mackerel with rice",), label="fish")),
        _delete("item-5"),
        _put(replace(records[7], metadata={"cuisine": "fusion"})),  # inputs unchanged
    ]
    encoder = CountingEncoder()

    after = apply_changes(index_dir, encoder, changes)

    assert list_versions(index_dir) == [*versions_before, after.version]
    assert read_current(index_dir) == after.version
    # Only the new item and item-3's new text were encoded; item-7 kept its vectors.
    assert encoder.inputs == {"image": 1, "text": 2, "recipe": 0}
    assert after.changes == {
        "items_embedded": 2,
        "vectors_embedded": 3,
        "items_reused": N_ITEMS - 2,
        "vectors_reused": before.n_vectors - 8,  # item-3's and item-5's four rows each
        "items_removed": 1,
    }
    assert after.n_items == N_ITEMS and after.reused_from == before.version
    snapshot = _open(index_dir)
    try:
        assert _top_item(snapshot, "zucchini pancake crispy") == "new-1"
        assert _top_item(snapshot, "grilled mackerel") == "item-3"
        assert snapshot.get_item("item-5") is None
        item_3, item_7 = snapshot.get_item("item-3"), snapshot.get_item("item-7")
        assert item_3 is not None and item_3.kinds == ["text"]
        assert item_7 is not None and item_7.metadata == {"cuisine": "fusion"}
    finally:
        snapshot.close()


def test_untouched_items_keep_their_exact_vectors(
    live: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    index_dir, _, before = live
    old = Snapshot.open(index_dir / before.version)
    apply_changes(index_dir, CountingEncoder(), [_delete("item-0"), _put(jeon_record(tmp_path))])
    new = _open(index_dir)
    try:
        for item_id in ("item-1", "item-10", "item-19"):
            np.testing.assert_array_equal(new.item_vectors(item_id), old.item_vectors(item_id))
    finally:
        new.close()
        old.close()


def test_prototypes_follow_the_items(
    live: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    index_dir, records, _ = live
    pizzas = [r.id for r in records if r.label == "pizza"]
    old = _open(index_dir)
    old_pasta = old.prototypes.vector_of("pasta")
    old.close()
    changes = [_delete(item_id) for item_id in pizzas]
    changes += [_put(jeon_record(tmp_path)), _put(replace(records[0], label="pasta"))]

    apply_changes(index_dir, TinyEncoder(), changes)

    new = _open(index_dir)
    try:
        assert new.prototypes.get("pizza") is None  # its last member went
        jeon = new.prototypes.get("jeon")
        assert jeon is not None and jeon.members == 1
        pasta = new.prototypes.get("pasta")
        assert pasta is not None and pasta.members == 4
        assert old_pasta is not None
        assert not np.allclose(new.prototypes.vector_of("pasta"), old_pasta)
    finally:
        new.close()


def test_zero_shot_classes_of_the_live_table_carry_over(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    options = PrototypeOptions(zero_shot_classes={"tteokbokki": "spicy rice cakes"})
    records = make_records(tmp_path / "images", 6)
    build_snapshot(records, TinyEncoder(), index_dir, prototypes=options)
    apply_changes(index_dir, TinyEncoder(), [_put(jeon_record(tmp_path))])
    snapshot = _open(index_dir)
    try:
        zero_shot = snapshot.prototypes.get("tteokbokki")
        assert zero_shot is not None and zero_shot.zero_shot
    finally:
        snapshot.close()


def test_the_last_change_of_an_item_wins(tmp_path: Path) -> None:
    record = jeon_record(tmp_path)
    upserts, deletes = coalesce(
        [_put(record), _delete(record.id), _delete("item-1"), _put(replace(record, id="item-1"))]
    )
    assert set(upserts) == {"item-1"} and deletes == {record.id}


def test_change_round_trips_through_json(tmp_path: Path) -> None:
    record = replace(
        jeon_record(tmp_path), recipe=Recipe("전", ("zucchini", "flour"), ("slice", "fry"))
    )
    for change in (_put(record), _delete("item-9")):
        assert ItemChange.from_json(change.to_json()) == change


def test_no_live_snapshot_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index").mkdir()
    with pytest.raises(ChangesRefusedError, match="no live snapshot"):
        apply_changes(tmp_path / "index", TinyEncoder(), [_put(jeon_record(tmp_path))])


def test_another_model_is_refused(
    live: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    index_dir, _, before = live
    with pytest.raises(ChangesRefusedError, match="another model"):
        apply_changes(index_dir, TinyEncoder(seed=1), [_put(jeon_record(tmp_path))])
    assert read_current(index_dir) == before.version


def test_deleting_every_item_is_refused(live: tuple[Path, list[CatalogRecord], Manifest]) -> None:
    index_dir, records, before = live
    with pytest.raises(BuildError, match="without any item"):
        apply_changes(index_dir, TinyEncoder(), [_delete(r.id) for r in records])
    assert read_current(index_dir) == before.version
    assert not list(index_dir.glob(".staging-*"))


def test_a_re_index_published_meanwhile_gets_the_changes_too(
    live: tuple[Path, list[CatalogRecord], Manifest], tmp_path: Path
) -> None:
    """A full re-index that publishes while changes are encoded: they go on top of it."""
    index_dir, records, _ = live

    class PublishingMidway(TinyEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.reindexed: str | None = None

        def encode_images(self, images):  # type: ignore[no-untyped-def]
            if self.reindexed is None:  # a re-index of fewer items lands now
                self.reindexed = build_snapshot(records[:10], TinyEncoder(), index_dir).version
            return super().encode_images(images)

    encoder = PublishingMidway()
    after = apply_changes(index_dir, encoder, [_put(jeon_record(tmp_path))], ApplyOptions())
    assert after.reused_from == encoder.reindexed
    assert after.n_items == 11
