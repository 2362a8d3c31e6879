"""A build with a set-head encoder writes each item's sets as set rows; without one, none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from index.build import build_snapshot
from index.set_build import PENDING_FILE
from index.set_search import SET_ROWS_FILE, SET_VECTORS_FILE
from index.snapshot import load_current
from models.set_similarity import smooth_chamfer
from tests.index.sample_records import make_records
from tests.index.set_encoder import SLOTS, SetTinyEncoder


def item_sets(encoder: SetTinyEncoder, record) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """The oracle's sets of one record, encoded directly: its photo, each text, its recipe."""
    with Image.open(record.image_path) as image:
        sets = [encoder.sets.image_sets([image.convert("RGB")])[0]]
    sets += list(encoder.sets.text_sets(list(record.texts)))
    return [*sets, encoder.sets.recipe_sets([record.recipe])[0]]


def test_set_build_writes_every_set_and_search_ranks_by_exact_smooth_chamfer(
    tmp_path: Path,
) -> None:
    encoder = SetTinyEncoder()
    records = make_records(tmp_path / "images", 12)
    manifest = build_snapshot(records, encoder, tmp_path / "index", batch_size=5)
    snap = load_current(tmp_path / "index")
    assert snap.sets is not None and not (snap.path / PENDING_FILE).exists()
    # One set per image, text and recipe row, K rows each; kinds of their own.
    assert snap.sets.vectors.shape[0] == manifest.n_vectors * SLOTS
    assert snap.sets.index.ntotal == manifest.n_vectors  # one mean per set
    kinds = {kind for _, kind in snap.sets.entries}
    assert kinds == {"image_set", "text_set", "recipe_set"}
    # Plain search is untouched by them.
    query_vector = encoder.encode_texts(["bibimbap number 3"])[0]
    assert not any(m.kind.endswith("_set") for m in snap.search(query_vector, k=12))
    # Set search: every item (the table is small), by its best set's exact score.
    query = encoder.sets.text_sets(["bibimbap number 3"])[0]
    matches = snap.search_sets(query, k=12)
    truth = {
        r.id: max(
            float(smooth_chamfer(torch.from_numpy(query), torch.from_numpy(s[None]))[0])
            for s in item_sets(encoder, r)
        )
        for r in records
    }
    assert [m.item_id for m in matches] == sorted(truth, key=lambda i: -truth[i])
    np.testing.assert_allclose([m.score for m in matches], sorted(truth.values())[::-1], rtol=1e-4)
    snap.close()


def test_build_without_set_heads_writes_no_set_files(built) -> None:  # type: ignore[no-untyped-def]
    index_dir, _, _ = built
    snap = load_current(index_dir)
    assert snap.sets is None
    for name in (SET_ROWS_FILE, SET_VECTORS_FILE, PENDING_FILE):
        assert not (snap.path / name).exists()
    snap.close()
