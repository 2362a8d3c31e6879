"""NpySpool: rows appended with plain writes make a valid .npy, header rewritten in place."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from index.spool import HEADER_BYTES, NpySpool, _header


def test_appended_rows_read_back_as_one_npy_array_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 5)).astype(np.float32) for n in (3, 1, 7)]
    spool = NpySpool(tmp_path / "vectors.npy", dim=5)
    for batch in batches:
        spool.append(batch)

    vectors = spool.finish()

    np.testing.assert_array_equal(vectors, np.concatenate(batches))
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy"), np.concatenate(batches))
    assert (tmp_path / "vectors.npy").stat().st_size == HEADER_BYTES + 11 * 5 * 4


def test_float64_rows_are_stored_as_float32(tmp_path: Path) -> None:
    spool = NpySpool(tmp_path / "v.npy", dim=2)
    spool.append(np.array([[0.5, 1.5]], dtype=np.float64))
    vectors = spool.finish()
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, [[0.5, 1.5]])


def test_rows_of_the_wrong_width_are_refused(tmp_path: Path) -> None:
    spool = NpySpool(tmp_path / "v.npy", dim=4)
    with pytest.raises(ValueError, match="rows of 4 floats"):
        spool.append(np.zeros((2, 3), np.float32))
    spool.close()


def test_the_reserved_header_holds_any_realistic_shape() -> None:
    header = _header(10**15, 4096)
    stream = io.BytesIO(header)
    assert len(header) == HEADER_BYTES
    assert np.lib.format.read_magic(stream) == (1, 0)
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    assert (shape, fortran_order, dtype) == ((10**15, 4096), False, np.dtype("<f4"))
