"""VectorIndex against exact numpy search on seeded synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.vector_index import DimensionMismatchError, VectorIndex

DIM = 32


def clustered(n: int, seed: int, n_clusters: int = 40) -> np.ndarray:
    """Unit vectors around random centres, like embeddings of a real catalog."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, DIM))
    points = centres[rng.integers(0, n_clusters, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(2000, seed=1), clustered(50, seed=2)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None):
    candidates = np.arange(len(base)) if rows is None else rows
    scores = queries @ base[candidates].T
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), candidates[order]


def built(factory: str, base: np.ndarray) -> VectorIndex:
    index = VectorIndex.create(DIM, factory)
    if index.needs_training:
        index.train(base)
    index.add(base)
    return index


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def test_flat_equals_exact_search(data):
    base, queries = data
    scores, rows = built("Flat", base).search(queries, 10)
    want_scores, want_rows = exact_top(base, queries, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", ["HNSW32", "IVF32,Flat"])
def test_approximate_recall_at_10(data, factory):
    base, queries = data
    _, rows = built(factory, base).search(queries, 10)
    _, truth = exact_top(base, queries, 10)
    assert recall_at(rows, truth) >= 0.9


def test_ivf_pq_builds_and_finds_neighbours(data):
    base, queries = data
    index = built("IVF16,PQ8x4", base)
    _, rows = index.search(queries, 10)
    _, truth = exact_top(base, queries, 10)
    assert index.ntotal == len(base) and (rows >= 0).all()
    assert recall_at(rows, truth) >= 0.15  # 4-bit codes are lossy; chance is 0.005


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF32,Flat"])
def test_selector_returns_only_allowed_rows_and_still_k(data, factory):
    base, queries = data
    allowed = np.arange(3, len(base), 7)
    _, rows = built(factory, base).search(queries, 10, allowed_rows=allowed)
    assert (rows >= 0).all(), "a filtered search must still fill k slots"
    assert np.isin(rows, allowed).all()
    _, truth = exact_top(base, queries, 10, allowed)
    assert recall_at(rows, truth) >= (1.0 if factory == "Flat" else 0.9)


def test_flat_filtered_matches_exact_on_subset(data):
    base, queries = data
    allowed = np.random.default_rng(5).choice(len(base), 300, replace=False)
    scores, rows = built("Flat", base).search(queries, 5, allowed_rows=allowed)
    want_scores, want_rows = exact_top(base, queries, 5, allowed)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_missing_hits_are_padded(data):
    base, queries = data
    index = built("Flat", base[:3])
    scores, rows = index.search(queries[:1], 5)
    assert list(rows[0][3:]) == [-1, -1] and np.isneginf(scores[0][3:]).all()
    scores, rows = index.search(queries[:1], 2, allowed_rows=np.array([], np.int64))
    assert (rows == -1).all()


def test_ids_are_insertion_order_rows(data):
    base, _ = data
    index = built("Flat", base[:10])
    index.add(base[10:20])
    _, rows = index.search(base[[0, 15]], 1)
    assert rows.ravel().tolist() == [0, 15]


def test_save_load_round_trip_is_atomic(tmp_path: Path, data):
    base, queries = data
    index = built("HNSW32", base)
    path = tmp_path / "index.faiss"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temp files left
    loaded = VectorIndex.load(path, "HNSW32")
    assert loaded.ntotal == len(base) and loaded.dim == DIM
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])


@pytest.mark.parametrize("factory", ["Nope", "IVF,Flat", "IDMap,Flat", ""])
def test_bad_factory_is_a_clear_value_error(factory):
    with pytest.raises(ValueError, match="factory"):
        VectorIndex.create(DIM, factory)


def test_ivf_with_too_few_training_vectors_fails_clearly(data):
    base, _ = data
    index = VectorIndex.create(DIM, "IVF64,Flat")
    with pytest.raises(ValueError, match=r"64 inverted lists but only 10 training vectors"):
        index.train(base[:10])
    with pytest.raises(ValueError, match="must be trained"):
        index.add(base[:10])


def test_dimension_mismatch(data):
    base, _ = data
    index = built("Flat", base[:10])
    with pytest.raises(DimensionMismatchError) as caught:
        index.search(np.ones((1, DIM + 1), np.float32), 3)
    assert (caught.value.expected, caught.value.got) == (DIM, DIM + 1)
    with pytest.raises(DimensionMismatchError):
        index.add(np.ones((2, 8), np.float32))


def test_enable_gpu_is_a_no_op_without_gpus(data):
    base, queries = data
    index = built("Flat", base[:100])
    if index.enable_gpu():  # only on a machine with a GPU build and a GPU
        np.testing.assert_array_equal(
            index.search(queries, 5)[1], exact_top(base[:100], queries, 5)[1]
        )
    else:
        assert index.search(queries, 1)[1].shape == (50, 1)
