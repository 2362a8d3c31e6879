"""Set rows (DivE) follow the snapshot through item changes and incremental re-indexes:
untouched and re-used items' sets are copied byte for byte, only changed items' sets
are encoded, and the result holds the same sets as a full build of the same records."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index.backends import IndexBackend
from index.build import build_snapshot
from index.changes import ApplyOptions, ItemChange, apply_changes
from index.chunks import plan_chunks
from index.set_search import SET_ROWS_FILE, SET_VECTORS_FILE, SetRows
from index.snapshot import load_current
from models.types import CatalogRecord
from tests.index.sample_records import jeon_record, make_records
from tests.index.set_encoder import SLOTS, CountingSetTinyEncoder, SetTinyEncoder
from tests.index.test_chunks import BATCH, chunked_build
from tests.index.tiny_encoder import TinyEncoder

N_ITEMS = 12


def _sets_by_key(sets: SetRows) -> dict[tuple[str, str, int], np.ndarray]:
    """Each set's (K, dim) rows by (item, kind, n-th set of that kind of the item)."""
    out: dict[tuple[str, str, int], np.ndarray] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, (item_id, kind) in enumerate(sets.entries):
        nth = seen[item_id, kind] = seen.get((item_id, kind), -1) + 1
        out[item_id, kind, nth] = np.array(sets.vectors[number * SLOTS : (number + 1) * SLOTS])
    return out


def _built_sets(
    records: list[CatalogRecord], index_dir: Path
) -> dict[tuple[str, str, int], np.ndarray]:
    """Build ``records`` with the set encoder and return the live snapshot's sets by key."""
    build_snapshot(records, SetTinyEncoder(), index_dir, batch_size=5)
    live = load_current(index_dir)
    assert live.sets is not None
    try:
        return _sets_by_key(live.sets)
    finally:
        live.close()


def _change(item_id: str, record: CatalogRecord | None) -> ItemChange:
    return ItemChange(item_id, record, datetime.now(UTC))


@pytest.fixture()
def records(tmp_path: Path) -> list[CatalogRecord]:
    return make_records(tmp_path / "images", N_ITEMS)


def test_item_changes_copy_untouched_sets_and_encode_only_the_changed(
    tmp_path: Path, records: list[CatalogRecord]
) -> None:
    index_dir = tmp_path / "index"
    before = _built_sets(records, index_dir)
    fish = CatalogRecord("item-3", texts=("grilled mackerel with rice",), label="fish")
    edited = replace(records[7], metadata={"cuisine": "fusion"})  # inputs unchanged
    changes = [
        _change("new-1", jeon_record(tmp_path)),
        _change("item-3", fish),
        _change("item-5", None),
        _change("item-7", edited),
    ]
    encoder = CountingSetTinyEncoder()

    apply_changes(index_dir, encoder, changes)

    # Only the new item's photo and text and item-3's new text went through the set heads.
    assert encoder.set_inputs == {"image": 1, "text": 2, "recipe": 0}
    snap = load_current(index_dir)
    assert snap.sets is not None
    after = _sets_by_key(snap.sets)
    assert not any(key[0] == "item-5" for key in after)
    for key, rows in before.items():
        if key[0] not in ("item-3", "item-5"):
            assert after[key].tobytes() == rows.tobytes(), key  # copied, not re-encoded
    # The same sets a full build of the changed catalog makes.
    final = [jeon_record(tmp_path), fish] + [r for r in records if r.id not in ("item-3", "item-5")]
    build_snapshot(final, SetTinyEncoder(), tmp_path / "full", batch_size=5)
    full = load_current(tmp_path / "full")
    assert full.sets is not None
    expected = _sets_by_key(full.sets)
    assert sorted(after) == sorted(expected)
    for key, rows in expected.items():
        np.testing.assert_allclose(after[key], rows, rtol=1e-5, atol=1e-6)
    # The new item is found by set search with its own photo's and text's sets.
    with Image.open(tmp_path / "jeon.png") as photo:
        photo_set = encoder.sets.image_sets([photo.convert("RGB")])[0]
    assert snap.search_sets(photo_set, k=1)[0].item_id == "new-1"
    text_set = encoder.sets.text_sets(["zucchini pancake, crispy and golden"])[0]
    assert snap.search_sets(text_set, k=1)[0].item_id == "new-1"
    snap.close()
    full.close()


def test_incremental_re_index_copies_reused_items_sets(
    tmp_path: Path, records: list[CatalogRecord]
) -> None:
    index_dir = tmp_path / "index"
    before = _built_sets(records, index_dir)
    changed = replace(records[2], texts=("a new caption for two",))
    encoder = CountingSetTinyEncoder()

    build_snapshot([*records[:2], changed, *records[3:]], encoder, index_dir, batch_size=5)

    assert encoder.set_inputs == {"image": 1, "text": 1, "recipe": 1}  # item-2 alone
    snap = load_current(index_dir)
    assert snap.sets is not None
    after = _sets_by_key(snap.sets)
    assert len(after) == len(before) - 1  # item-2 has one caption now, not two
    for key, rows in before.items():
        if key[0] != "item-2":
            assert after[key].tobytes() == rows.tobytes(), key
    snap.close()


def test_other_set_heads_are_not_copied(tmp_path: Path, records: list[CatalogRecord]) -> None:
    """Set heads lie outside the model fingerprint: sets of other heads are encoded again
    by a re-index, and item changes then publish no set rows."""
    index_dir = tmp_path / "index"
    build_snapshot(records, SetTinyEncoder(), index_dir, batch_size=5)
    other = CountingSetTinyEncoder()
    for head in other.sets.heads.values():
        head.out.bias.data += 0.1
    assert other.fingerprint == TinyEncoder(32, 0).fingerprint

    apply_changes(index_dir, other, [_change("item-5", None)])

    snap = load_current(index_dir)
    assert snap.sets is None and not (snap.path / SET_ROWS_FILE).exists()
    snap.close()
    build_snapshot(records, other, index_dir, batch_size=5)
    assert other.set_inputs["image"] == N_ITEMS  # every set encoded again
    snap = load_current(index_dir)
    assert snap.sets is not None and len(snap.sets.entries) == N_ITEMS * 4
    snap.close()


def test_milvus_builds_and_changes_write_the_set_files(
    tmp_path: Path, records: list[CatalogRecord], milvus_uri: str
) -> None:
    """The set files are FAISS files beside the snapshot on the Milvus backend too."""
    backend = IndexBackend("milvus", str(tmp_path / "sets.db"))
    index_dir = tmp_path / "milvus"
    build_snapshot(records, SetTinyEncoder(), index_dir, batch_size=5, backend=backend)
    fingerprint = SetTinyEncoder().fingerprint
    snap = load_current(index_dir, fingerprint, backend=backend)
    assert snap.sets is not None and len(snap.sets.entries) == N_ITEMS * 4
    snap.close()
    changes = [_change("new-1", jeon_record(tmp_path)), _change("item-5", None)]
    encoder = CountingSetTinyEncoder()

    apply_changes(index_dir, encoder, changes, ApplyOptions(batch_size=5, backend=backend))

    assert encoder.set_inputs == {"image": 1, "text": 1, "recipe": 0}
    snap = load_current(index_dir, fingerprint, backend=backend)
    assert snap.sets is not None
    ids = {item_id for item_id, _ in snap.sets.entries}
    assert "new-1" in ids and "item-5" not in ids and len(ids) == N_ITEMS
    text_set = encoder.sets.text_sets(["zucchini pancake, crispy and golden"])[0]
    assert snap.search_sets(text_set, k=1)[0].item_id == "new-1"
    snap.close()


def test_a_chunked_build_writes_the_single_builds_set_files(
    tmp_path: Path, records: list[CatalogRecord]
) -> None:
    encoder = SetTinyEncoder()
    single = build_snapshot(records, encoder, tmp_path / "single", batch_size=BATCH)
    # Chunk 1 twice: a retried attempt replaces its set files, adds nothing.
    merged = chunked_build(
        records, encoder, tmp_path / "chunked", plan_chunks(N_ITEMS, BATCH, chunks=3), [2, 1, 0, 1]
    )

    single_dir = tmp_path / "single" / single.version
    merged_dir = tmp_path / "chunked" / merged.version
    assert (merged_dir / SET_ROWS_FILE).is_file()
    assert np.array_equal(
        np.load(single_dir / SET_VECTORS_FILE), np.load(merged_dir / SET_VECTORS_FILE)
    )
    single_rows = json.loads((single_dir / SET_ROWS_FILE).read_text())
    assert json.loads((merged_dir / SET_ROWS_FILE).read_text()) == single_rows
    assert single_rows["heads"] == encoder.sets.digest


def test_each_chunk_copies_the_live_sets_of_unchanged_items(
    tmp_path: Path, records: list[CatalogRecord]
) -> None:
    index_dir = tmp_path / "index"
    build_snapshot(records, SetTinyEncoder(), index_dir, batch_size=BATCH)
    live = load_current(index_dir)
    assert live.sets is not None
    before = _sets_by_key(live.sets)
    live.close()
    changed = [*records[:9], replace(records[9], texts=("a new caption for nine",)), *records[10:]]
    encoder = CountingSetTinyEncoder()

    chunked_build(changed, encoder, index_dir, plan_chunks(N_ITEMS, BATCH, chunks=3))

    assert encoder.set_inputs == {"image": 1, "text": 1, "recipe": 1}  # item-9 alone
    snap = load_current(index_dir)
    assert snap.sets is not None
    after = _sets_by_key(snap.sets)
    for key, rows in before.items():
        if key[0] != "item-9":
            assert after[key].tobytes() == rows.tobytes(), key
    snap.close()
