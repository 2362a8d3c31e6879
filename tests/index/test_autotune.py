"""``auto``: the factory chosen by catalog size, search knobs tuned to a recall target."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from index.autotune import (
    TuningPolicy,
    choose_factory,
    exact_top_k,
    perturbed_queries,
    recall_at_k,
    tune,
)
from index.build import build_snapshot
from index.manifest import MANIFEST_FILE, Manifest
from index.snapshot import load_current
from index.vector_index import (
    DEFAULT_EF_SEARCH,
    FILTERED_MAX_EF_SEARCH,
    FILTERED_MIN_EF_SEARCH,
    VectorIndex,
)
from models.types import CatalogRecord
from tests.index.tiny_encoder import TinyEncoder

TUNING_FIELDS = ("ef_search", "nprobe", "recall_at_10", "target_recall", "recall_queries")
WORDS = tuple(f"w{i:03d}" for i in range(300))


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unclustered unit vectors: the hardest case for HNSW, so knobs matter."""
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def text_records(n: int, seed: int = 0) -> list[CatalogRecord]:
    """Text-only items of random word triples: thousands of rows without image files."""
    rng = np.random.default_rng(seed)
    return [
        CatalogRecord(id=f"t-{i}", texts=(" ".join(rng.choice(WORDS, 3)),), label=f"c{i % 5}")
        for i in range(n)
    ]


def hnsw_index(rows: np.ndarray, factory: str = "HNSW8") -> VectorIndex:
    index = VectorIndex.create(rows.shape[1], factory)
    index.add(rows)
    return index


@pytest.fixture(scope="module")
def ann_snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """2,000 text rows of dim 64, over a Flat budget of 100 x 384 = 600 such rows."""
    index_dir = tmp_path_factory.mktemp("ann-index")
    policy = TuningPolicy(flat_max_vectors=100, target_recall=0.95)
    manifest = build_snapshot(text_records(2000), TinyEncoder(dim=64), index_dir, tuning=policy)
    return index_dir, manifest


def test_auto_picks_flat_for_a_small_catalog(built):
    index_dir, manifest, _ = built  # 120 rows, built with the default factory

    assert manifest.factory == "Flat"
    assert (manifest.recall_at_10, manifest.recall_queries) == (1.0, 0)
    assert manifest.ef_search is None and manifest.nprobe is None
    assert load_current(index_dir).index.is_exact


def test_auto_picks_hnsw_for_a_large_catalog(ann_snapshot):
    index_dir, manifest = ann_snapshot

    assert manifest.factory == "HNSW32"
    assert manifest.ef_search is not None and manifest.nprobe is None
    assert manifest.recall_at_10 is not None and manifest.recall_at_10 >= 0.95
    assert (manifest.target_recall, manifest.recall_queries) == (0.95, 1000)
    assert not load_current(index_dir).index.is_exact


def test_flat_budget_scales_with_dimension():
    assert choose_factory(20_000, 384, 20_000) == "Flat"
    assert choose_factory(20_001, 384, 20_000) == "HNSW32"
    assert choose_factory(40_000, 192, 20_000) == "Flat"
    assert choose_factory(1_999_999, 384, 20_000) == "HNSW32"
    big = choose_factory(3_000_000, 384, 20_000)
    lists = int(re.fullmatch(r"IVF(\d+)_HNSW32,SQ8", big).group(1))  # type: ignore[union-attr]
    assert lists & (lists - 1) == 0 and 4_096 <= lists <= 8_192  # ~4 sqrt(3M) = 6,928
    assert VectorIndex.create(384, big).needs_training  # FAISS parses what auto names
    assert VectorIndex.create(385, choose_factory(3_000_000, 385, 20_000)).needs_training


def test_tuned_ef_search_is_applied_when_the_snapshot_loads(ann_snapshot):
    index_dir, manifest = ann_snapshot
    snap = load_current(index_dir)

    assert manifest.ef_search != DEFAULT_EF_SEARCH  # else applying it would go unseen
    assert snap.index.ef_search == manifest.ef_search
    on_disk = json.loads((index_dir / manifest.version / MANIFEST_FILE).read_text())
    assert {name: on_disk[name] for name in TUNING_FIELDS} == {
        name: getattr(manifest, name) for name in TUNING_FIELDS
    }


def test_recorded_recall_matches_fresh_queries(ann_snapshot):
    index_dir, manifest = ann_snapshot
    snap = load_current(index_dir)
    vectors = np.asarray(snap.vectors)
    queries = perturbed_queries(vectors, 1000, seed=12345)  # not the build's queries

    found = snap.index.search(queries, 10)[1]
    recall = recall_at_k(found, exact_top_k(vectors, queries, 10))

    assert manifest.recall_at_10 is not None
    assert abs(recall - manifest.recall_at_10) <= 0.02


def test_recorded_recall_matches_fresh_queries_on_hard_data():
    rows = unit_rows(4000, 64)
    index = hnsw_index(rows)
    tuning = tune(index, rows, TuningPolicy(target_recall=0.9))
    queries = perturbed_queries(rows, 1000, seed=99)

    recall = recall_at_k(index.search(queries, 10)[1], exact_top_k(rows, queries, 10))

    assert tuning.recall_at_10 >= 0.9
    assert abs(recall - tuning.recall_at_10) <= 0.02


def test_a_higher_target_never_gets_a_smaller_ef_search():
    rows = unit_rows(4000, 64)
    chosen = [
        tune(hnsw_index(rows), rows, TuningPolicy(target_recall=target)).ef_search
        for target in (0.7, 0.9, 0.99)
    ]

    assert all(ef is not None for ef in chosen)
    assert chosen == sorted(chosen)  # type: ignore[type-var]
    assert chosen[0] < chosen[-1]  # the data is hard enough for the target to matter


def test_a_rung_whose_mean_only_touches_the_target_is_not_enough():
    # The target is exactly the mean recall efSearch 32 gets on the tuning queries. The
    # mean is an estimate: a rung is taken only when its lower confidence bound reaches
    # the target, so tuning must climb past 32 (it stopped there when the mean sufficed).
    rows = unit_rows(4000, 64)
    index = hnsw_index(rows)
    policy = TuningPolicy(n_queries=200)
    queries = perturbed_queries(rows, policy.n_queries, policy.seed, policy.query_noise)
    index.ef_search = 32
    mean_at_32 = recall_at_k(index.search(queries, 10)[1], exact_top_k(rows, queries, 10))
    assert 0.5 < mean_at_32 < 0.99  # hard enough that queries differ

    tuning = tune(index, rows, TuningPolicy(target_recall=mean_at_32, n_queries=200))

    assert tuning.ef_search is not None and tuning.ef_search > 32
    assert tuning.recall_lower_bound >= mean_at_32
    assert tuning.recall_at_10 > tuning.recall_lower_bound  # the margin is real


def test_ivf_is_tuned_by_nprobe():
    rows = unit_rows(3000, 32)
    index = VectorIndex.create(32, "IVF32,Flat")
    index.train(rows)
    index.add(rows)

    tuning = tune(index, rows, TuningPolicy(target_recall=0.9))

    assert tuning.ef_search is None and tuning.nprobe is not None
    assert tuning.recall_at_10 >= 0.9 and index.nprobe == tuning.nprobe <= 32


def test_explicit_factory_is_tuned_and_reported_too(tmp_path):
    manifest = build_snapshot(
        text_records(300), TinyEncoder(dim=32), tmp_path / "ix", factory="HNSW16"
    )

    assert manifest.factory == "HNSW16"
    assert manifest.ef_search is not None and manifest.recall_at_10 is not None
    assert manifest.recall_queries == 300  # every row, when there are fewer than 1,000


def test_filtered_hnsw_search_keeps_a_wide_beam():
    index = hnsw_index(unit_rows(2000, 32), "HNSW32")
    index.ef_search = 16
    bitmap = index._row_bitmap(np.arange(0, 2000, 7))
    selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))

    assert index._search_params(None).efSearch == 16
    assert index._search_params(selector).efSearch == FILTERED_MIN_EF_SEARCH
    # The beam widens with the share of rows filtered out, up to the cap.
    assert index._search_params(selector, share=0.05).efSearch == 320
    assert index._search_params(selector, share=0.0001).efSearch == FILTERED_MAX_EF_SEARCH


def test_a_narrow_filter_keeps_its_recall_on_hnsw():
    # 2 % of 4,000 rows: the fixed beam of 64 alone found 0.89 of the true top 10 here.
    vectors = unit_rows(4000, 32)
    index = hnsw_index(vectors, "HNSW32")
    index.ef_search = 16
    allowed = np.arange(0, 4000, 50)
    queries = unit_rows(50, 32, seed=1)
    exact = allowed[np.argsort(-(queries @ vectors[allowed].T), axis=1)[:, :10]]

    _, found = index.search(queries, 10, allowed)

    hits = sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist(), strict=True))
    assert hits / exact.size >= 0.95


def test_old_manifests_without_tuning_fields_still_load(ann_snapshot, tmp_path):
    index_dir, manifest = ann_snapshot
    old_dir = tmp_path / "old"
    shutil.copytree(index_dir, old_dir)
    path = old_dir / manifest.version / MANIFEST_FILE
    data = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in data.items() if k not in TUNING_FIELDS}))

    snap = load_current(old_dir)

    assert snap.manifest.ef_search is None and snap.manifest.recall_at_10 is None
    assert snap.index.ef_search == DEFAULT_EF_SEARCH
    assert len(snap.search(snap.vectors[0], 5)) == 5


def test_an_hnsw_graph_gets_its_rows_in_one_add_and_flat_in_chunks(monkeypatch, tmp_path):
    # FAISS built a much worse HNSW graph from chunks (index/vector_index.py add_rows): at 100k
    # rows too slow to test here, so this checks the calls with a tiny chunk size.
    import index.build as build

    sizes: list[int] = []
    real_add = VectorIndex.add
    monkeypatch.setattr(build, "_COPY_CHUNK_ROWS", 100)
    monkeypatch.setattr(
        VectorIndex, "add", lambda self, v: (sizes.append(len(v)), real_add(self, v))
    )
    records = text_records(250)
    policy = TuningPolicy(target_recall=0.5)

    build_snapshot(records, TinyEncoder(dim=16), tmp_path / "h", factory="HNSW8", tuning=policy)
    hnsw_sizes, sizes[:] = list(sizes), []
    build_snapshot(records, TinyEncoder(dim=16), tmp_path / "f", factory="Flat", tuning=policy)

    assert hnsw_sizes == [250]
    assert sizes == [100, 100, 50]
