"""MilvusVectorIndex (Milvus Lite, embedded) against FAISS Flat on the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

import index.milvus_index as milvus_index
from index.milvus_index import (
    MilvusStore,
    MilvusUnavailableError,
    MilvusVectorIndex,
    collection_name,
    row_filter,
)
from index.vector_index import DimensionMismatchError, VectorIndex
from tests.index.test_vector_index import DIM, clustered


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return clustered(1000, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(20, seed=2)


@pytest.fixture(scope="module")
def flat(base: np.ndarray) -> VectorIndex:
    index = VectorIndex.create(DIM, "Flat")
    index.add(base)
    return index


@pytest.fixture(scope="module")
def milvus(milvus_uri: str, base: np.ndarray) -> MilvusVectorIndex:
    return MilvusStore(milvus_uri).create("20261201T000000000Z-abc123", base)


def test_collection_name_is_milvus_safe():
    assert collection_name("20261201T000000000Z-abc123") == "mmsearch_20261201T000000000Z_abc123"


def test_row_filter_picks_the_shorter_expression():
    assert row_filter(np.array([5, 0, 5, 99]), 10) == "row in [0, 5]"
    assert row_filter(np.arange(1, 10), 10) == "row not in [0]"


def test_same_top_k_as_faiss_flat(flat, milvus, queries):
    assert (milvus.ntotal, milvus.dim, milvus.is_exact) == (flat.ntotal, DIM, True)
    want_scores, want_rows = flat.search(queries, 10)
    scores, rows = milvus.search(queries, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_allowed", [25, 900])  # `row in` and `row not in`
def test_allowed_rows_respected_like_faiss(flat, milvus, queries, n_allowed):
    allowed = np.sort(np.random.default_rng(n_allowed).choice(1000, n_allowed, replace=False))
    _, want_rows = flat.search(queries, 10, allowed)
    _, rows = milvus.search(queries, 10, allowed)
    np.testing.assert_array_equal(rows, want_rows)
    assert np.isin(rows, allowed).all()


def test_missing_hits_are_minus_one(milvus, queries):
    scores, rows = milvus.search(queries[:2], 10, np.array([3, 7, 11]))
    assert (rows[:, :3] >= 0).all() and (rows[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all()
    scores, rows = milvus.search(queries[:2], 5, np.array([], dtype=np.int64))
    assert (rows == -1).all() and np.isneginf(scores).all()


def test_reconstruct_returns_the_stored_vectors(milvus, base):
    np.testing.assert_allclose(milvus.reconstruct(np.array([7, 2])), base[[7, 2]], atol=1e-6)


def test_bad_queries_are_refused(milvus):
    with pytest.raises(DimensionMismatchError):
        milvus.search(np.ones(DIM + 1, np.float32), 5)
    with pytest.raises(ValueError, match="k must be positive"):
        milvus.search(np.ones(DIM, np.float32), 0)


def test_missing_collection_is_a_snapshot_error(milvus_uri, milvus):
    store = MilvusStore(milvus_uri)
    with pytest.raises(MilvusUnavailableError):
        MilvusVectorIndex(store.client, "mmsearch_nothing_here", DIM, np.arange(1)).search(
            np.ones(DIM, np.float32), 3
        )


def test_reads_are_tried_twice_and_writes_once(monkeypatch):
    exceptions = pytest.importorskip("pymilvus.exceptions")
    monkeypatch.setattr(milvus_index, "_RETRY_PAUSE_S", 0.0)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise exceptions.MilvusException(message="GOAWAY: too_many_pings")
        return "ok"

    assert milvus_index._milvus_call("search", flaky, idempotent=True) == "ok"
    calls.clear()
    with pytest.raises(MilvusUnavailableError, match="insert failed"):
        milvus_index._milvus_call("insert", flaky)
    assert len(calls) == 1
