"""LiveSnapshot: hot swap on publish, old references keep working, bad versions refused."""

from __future__ import annotations

import pytest

from index.build import build_snapshot
from index.live import LiveSnapshot
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder
from tests.polling import poll


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    return poll(condition, bool, timeout_s=timeout_s, interval_s=0.02)


def test_empty_directory_has_no_snapshot(tmp_path):
    live = LiveSnapshot(tmp_path / "nothing-yet", "fp")
    assert live.current is None and live.version is None
    assert live.refresh() is False


def test_refresh_swaps_and_old_reference_still_searches(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    v1 = build_snapshot(make_records(tmp_path / "a", 10, prefix="old"), encoder, index_dir)
    live = LiveSnapshot(index_dir, encoder.fingerprint)
    taken = live.current  # an in-flight request's reference
    assert taken is not None and taken.version == v1.version
    assert live.refresh() is False  # nothing changed

    v2 = build_snapshot(make_records(tmp_path / "b", 10, prefix="new"), encoder, index_dir)
    assert live.refresh() is True
    assert live.version == v2.version
    query = encoder.encode_texts(["pizza"])[0]
    assert {m.item_id[:3] for m in live.current.search(query, 10)} == {"new"}
    assert {m.item_id[:3] for m in taken.search(query, 10)} == {"old"}
    assert taken.get_item("old-1") is not None


def test_wrong_fingerprint_keeps_the_old_snapshot(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    v1 = build_snapshot(make_records(tmp_path / "a", 5), encoder, index_dir)
    live = LiveSnapshot(index_dir, encoder.fingerprint)
    other = TinyEncoder(dim=32, seed=1)
    v2 = build_snapshot(make_records(tmp_path / "b", 5), other, index_dir)
    assert live.refresh() is False
    assert live.version == v1.version
    assert v2.version in live.last_error and "re-index" in live.last_error
    assert live.refresh() is False  # not retried until CURRENT changes


def test_polling_picks_up_a_new_version(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    build_snapshot(make_records(tmp_path / "a", 5), encoder, index_dir)
    live = LiveSnapshot(index_dir, encoder.fingerprint)
    live.start_polling(0.05)
    assert live.is_polling
    try:
        v2 = build_snapshot(make_records(tmp_path / "b", 6), encoder, index_dir)
        assert wait_for(lambda: live.version == v2.version)
        assert live.current.manifest.n_items == 6
    finally:
        live.stop()
    assert not live.is_polling
    with pytest.raises(ValueError):
        live.start_polling(0)
