"""Prototype tables in snapshots: built from the catalog, saved, loaded, rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index.build import build_snapshot
from index.layout import CorruptSnapshotError
from index.prototypes import (
    CLASSES_FILE,
    PROTOTYPES_FILE,
    ROW_CLASSES_FILE,
    PrototypeOptions,
    PrototypeOptionsError,
    build_prototype_table,
    read_zero_shot_classes,
)
from index.snapshot import Snapshot, load_current
from models.encoders.base import l2_normalize
from models.images import load_image
from models.prototype_math import class_prototypes
from models.types import CatalogRecord
from tests.index.sample_records import DISHES, make_records
from tests.index.tiny_encoder import TinyEncoder


def image_vectors(encoder: TinyEncoder, records: list[CatalogRecord]) -> np.ndarray:
    return encoder.encode_images([load_image(r.image_path) for r in records if r.image_path])


def build(tmp_path: Path, encoder: TinyEncoder, records, **options) -> Snapshot:
    index_dir = tmp_path / "index"
    build_snapshot(records, encoder, index_dir, prototypes=PrototypeOptions(**options))
    return load_current(index_dir, encoder.fingerprint)


def test_prototypes_equal_the_mean_of_their_members_images(built, encoder) -> None:
    index_dir, manifest, records = built
    snap = load_current(index_dir, manifest.model_fingerprint)

    assert manifest.n_classes == len(DISHES) and manifest.n_zero_shot_classes == 0
    assert [info.name for info in snap.prototypes.classes] == sorted(DISHES)
    for info in snap.prototypes.classes:
        members = [r for r in records if r.label == info.name]
        expected = l2_normalize(image_vectors(encoder, members).mean(axis=0, keepdims=True))[0]
        np.testing.assert_allclose(snap.prototypes.vector_of(info.name), expected, atol=1e-5)
        assert (info.members, info.support, info.zero_shot) == (len(members), len(members), False)


def test_k_shot_support_is_the_seeded_draw_of_models_prototypes(tmp_path, encoder) -> None:
    records = make_records(tmp_path / "img", 30)
    snap = build(tmp_path, encoder, records, shots=2, seed=5)

    classes, expected = class_prototypes(
        image_vectors(encoder, records), [r.label for r in records], k=2, seed=5
    )
    for name, prototype in zip(classes, expected, strict=True):
        np.testing.assert_allclose(snap.prototypes.vector_of(name), prototype, atol=1e-5)
        assert snap.prototypes.get(name).support == 2


def test_items_without_an_image_use_the_mean_of_all_their_rows(tmp_path, encoder) -> None:
    records = [
        CatalogRecord(id=f"t{i}", texts=(f"pasta number {i}", f"pasta {i} with basil"),
                      label="pasta") for i in range(3)
    ]  # fmt: skip
    snap = build(tmp_path, encoder, records)

    item_means = [encoder.encode_texts(list(r.texts)).mean(axis=0) for r in records]
    expected = l2_normalize(np.mean(item_means, axis=0, keepdims=True))[0]
    np.testing.assert_allclose(snap.prototypes.vector_of("pasta"), expected, atol=1e-5)


def test_a_zero_shot_class_is_found_from_its_name(tmp_path, encoder) -> None:
    records = make_records(tmp_path / "img", 14)
    extra = {"tteokbokki": "spicy rice cakes"}
    snap = build(tmp_path, encoder, records, zero_shot_classes=extra)

    info = snap.prototypes.get("tteokbokki")
    assert info is not None and info.zero_shot and info.members == 0
    expected = encoder.encode_texts(["tteokbokki: spicy rice cakes"])[0]
    np.testing.assert_allclose(snap.prototypes.vector_of("tteokbokki"), expected, atol=1e-5)
    best = snap.match_classes(encoder.encode_texts(["tteokbokki"])[0], 3)
    assert best[0].info.name == "tteokbokki"
    assert snap.manifest.n_zero_shot_classes == 1


def test_text_weight_mixes_the_name_into_member_prototypes(tmp_path, encoder) -> None:
    records = make_records(tmp_path / "img", 14)
    snap = build(tmp_path, encoder, records, text_weight=0.25)

    members = [r for r in records if r.label == "pasta"]
    shot = l2_normalize(image_vectors(encoder, members).mean(axis=0, keepdims=True))[0]
    text = encoder.encode_texts(["pasta"])[0]
    expected = l2_normalize((0.75 * shot + 0.25 * text)[None, :])[0]
    np.testing.assert_allclose(snap.prototypes.vector_of("pasta"), expected, atol=1e-5)


def test_class_field_names_classes_by_a_metadata_field(tmp_path, encoder) -> None:
    records = make_records(tmp_path / "img", 12)
    snap = build(tmp_path, encoder, records, class_field="cuisine")

    assert {i.name: i.members for i in snap.prototypes.classes} == {"한식": 4, "양식": 4, "중식": 4}
    for row in range(snap.manifest.n_vectors):
        item_id = snap.catalog.item_ids_of_rows([row])[0]
        expected = snap.get_item(item_id).metadata["cuisine"]
        assert snap.prototypes.class_name_of_row(row) == expected
    assert snap.manifest.class_field == "cuisine"


def test_prototypes_survive_save_and_load(built, encoder) -> None:
    index_dir, manifest, _ = built
    snap = load_current(index_dir, manifest.model_fingerprint)

    rebuilt = build_prototype_table(snap.catalog, snap.vectors, encoder, PrototypeOptions())

    assert snap.prototypes.classes == rebuilt.classes
    np.testing.assert_array_equal(snap.prototypes.vectors, rebuilt.vectors)
    np.testing.assert_array_equal(snap.prototypes.row_classes, rebuilt.row_classes)


def test_prototypes_are_rebuilt_on_reindex(tmp_path, encoder) -> None:
    index_dir = tmp_path / "index"
    build_snapshot(make_records(tmp_path / "a", 12), encoder, index_dir)
    first = load_current(index_dir, encoder.fingerprint)
    options = PrototypeOptions(class_field="cuisine", zero_shot_classes={"한정식": None})
    build_snapshot(make_records(tmp_path / "b", 9), encoder, index_dir, prototypes=options)
    second = load_current(index_dir, encoder.fingerprint)

    assert {i.name for i in first.prototypes.classes} == set(DISHES)
    assert {i.name: i.members for i in second.prototypes.classes} == {
        "한식": 3, "양식": 3, "중식": 3, "한정식": 0,
    }  # fmt: skip
    assert second.prototypes.options.class_field == "cuisine"


def test_a_snapshot_without_prototype_files_loads_with_an_empty_table(built, encoder) -> None:
    index_dir, manifest, _ = built
    for name in (CLASSES_FILE, PROTOTYPES_FILE, ROW_CLASSES_FILE):
        (index_dir / manifest.version / name).unlink()

    snap = load_current(index_dir, manifest.model_fingerprint)

    assert len(snap.prototypes) == 0
    assert snap.match_classes(encoder.encode_texts(["pasta"])[0], 3) == []
    assert snap.search(encoder.encode_texts(["pasta"])[0], 3)


def test_prototypes_of_the_wrong_shape_are_refused(built) -> None:
    index_dir, manifest, _ = built
    np.save(index_dir / manifest.version / PROTOTYPES_FILE, np.zeros((2, 5), np.float32))

    with pytest.raises(CorruptSnapshotError, match="prototypes"):
        load_current(index_dir, manifest.model_fingerprint)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shots": 0}, "shots"),
        ({"text_weight": 1.5}, "text weight"),
        ({"class_field": "1st"}, "class field"),
        ({"zero_shot_classes": {" ": None}}, "empty"),
    ],
)
def test_bad_prototype_options_are_refused(options, message) -> None:
    with pytest.raises(PrototypeOptionsError, match=message):
        PrototypeOptions(**options)


def test_zero_shot_class_files(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"떡볶이": "매콤한 떡", "bibimbap": None}))
    (tmp_path / "b.json").write_text(json.dumps(["ramen", " udon "]))
    (tmp_path / "c.txt").write_text("ramen\tnoodle soup\n\nudon\n")
    (tmp_path / "d.json").write_text(json.dumps({"x": 3}))

    assert read_zero_shot_classes(tmp_path / "a.json") == {"떡볶이": "매콤한 떡", "bibimbap": None}
    assert read_zero_shot_classes(tmp_path / "b.json") == {"ramen": None, "udon": None}
    assert read_zero_shot_classes(tmp_path / "c.txt") == {"ramen": "noodle soup", "udon": None}
    with pytest.raises(PrototypeOptionsError):
        read_zero_shot_classes(tmp_path / "d.json")
