"""CURRENT, publish, prune and staging clean-up on a real directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import index.layout as layout
from index.layout import (
    CorruptSnapshotError,
    SnapshotLease,
    claim_staging,
    clean_stale_staging,
    is_version_name,
    list_versions,
    new_version,
    prune,
    publish,
    read_current,
    set_current,
    staging_dir,
)


def staged(index_dir: Path, version: str) -> Path:
    path = staging_dir(index_dir, version)
    path.mkdir(parents=True)
    (path / "manifest.json").write_text("{}")
    return path


def versions(n: int) -> list[str]:
    return sorted(f"2026010{i}T000000Z-abcdef" for i in range(1, n + 1))


def test_version_names_sort_by_time():
    name = new_version()
    assert is_version_name(name)
    assert not is_version_name("../etc") and not is_version_name("CURRENT")


def test_publish_replaces_current_and_leaves_no_temp_files(tmp_path: Path):
    v1, v2 = versions(2)
    assert read_current(tmp_path) is None
    publish(tmp_path, staged(tmp_path, v1), v1)
    publish(tmp_path, staged(tmp_path, v2), v2)
    assert read_current(tmp_path) == v2
    assert {p.name for p in tmp_path.iterdir()} == {"CURRENT", v1, v2}


def test_crash_before_current_is_replaced_keeps_the_old_one(tmp_path: Path, monkeypatch):
    v1, v2 = versions(2)
    publish(tmp_path, staged(tmp_path, v1), v1)

    def crash(src, dst):
        raise OSError("simulated crash before os.replace")

    monkeypatch.setattr(layout.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        publish(tmp_path, staged(tmp_path, v2), v2)
    assert read_current(tmp_path) == v1
    assert (tmp_path / v1 / "manifest.json").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"CURRENT", v1, v2}  # temp removed


def test_publish_refuses_to_overwrite_a_version(tmp_path: Path):
    (v1,) = versions(1)
    publish(tmp_path, staged(tmp_path, v1), v1)
    with pytest.raises(FileExistsError):
        publish(tmp_path, staged(tmp_path, v1), v1)
    with pytest.raises(FileNotFoundError):
        set_current(tmp_path, versions(2)[1])
    with pytest.raises(ValueError, match="invalid snapshot version"):
        set_current(tmp_path, "../../elsewhere")


def test_garbage_in_current_is_an_error(tmp_path: Path):
    (tmp_path / "CURRENT").write_text("../../etc\n")
    with pytest.raises(CorruptSnapshotError):
        read_current(tmp_path)


def test_prune_keeps_the_live_one_and_the_newest_others(tmp_path: Path):
    names = versions(5)
    for name in names:
        publish(tmp_path, staged(tmp_path, name), name)
    set_current(tmp_path, names[0])
    removed = prune(tmp_path, keep_older=2)
    assert removed == names[1:3]
    assert list_versions(tmp_path) == [names[0], *names[3:]]
    assert prune(tmp_path, keep_older=0) == names[3:]
    assert list_versions(tmp_path) == [names[0]]
    with pytest.raises(ValueError):
        prune(tmp_path, keep_older=-1)


def test_prune_skips_a_version_still_leased_until_it_is_released(tmp_path: Path):
    names = versions(3)
    for name in names:
        publish(tmp_path, staged(tmp_path, name), name)
    lease = SnapshotLease(tmp_path / names[0])  # a request somewhere still uses it

    assert prune(tmp_path, keep_older=0) == [names[1]]
    assert list_versions(tmp_path) == [names[0], names[2]]
    lease.release()
    assert prune(tmp_path, keep_older=0) == [names[0]]
    assert list_versions(tmp_path) == [names[2]]


def test_clean_stale_staging_removes_a_dead_builds_dir_at_once(tmp_path: Path):
    dead, alive = versions(2)
    dead_dir = staged(tmp_path, dead)  # never locked: its builder is gone
    with claim_staging(tmp_path, alive) as alive_dir:
        (alive_dir / "vectors.f32").write_bytes(b"x")
        assert clean_stale_staging(tmp_path) == [dead_dir]
        assert alive_dir.exists() and not dead_dir.exists()
    assert clean_stale_staging(tmp_path) == [alive_dir]  # its builder let go unpublished


def test_a_claim_cut_short_is_removed_only_when_old(tmp_path: Path):
    old, fresh = versions(2)
    old_claim, fresh_claim = tmp_path / f".claim-{old}", tmp_path / f".claim-{fresh}"
    old_claim.mkdir()
    fresh_claim.mkdir()
    long_ago = time.time() - 7200
    os.utime(old_claim, (long_ago, long_ago))
    assert clean_stale_staging(tmp_path) == [old_claim]
    assert fresh_claim.exists()
