"""The builder: streaming, skipped inputs, refusals, and a build killed mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from index.build import BuildError, SupersededError, build_snapshot
from index.layout import PUBLISH_LOCK_FILE, list_versions, read_current
from index.snapshot import load_current
from tests.index.sample_records import make_records

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path, encoder):
    records = make_records(tmp_path / "img", 6)
    (tmp_path / "img" / "item-1.png").write_bytes(b"this is not a PNG")
    (tmp_path / "img" / "item-2.png").unlink()
    records[3] = replace(records[3], texts=(), recipe=None)  # only an image, a broken one
    (tmp_path / "img" / "item-3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    manifest = build_snapshot(records, encoder, tmp_path / "ix", batch_size=4)
    assert manifest.skipped == 3
    assert manifest.n_items == 5  # item-3 had nothing readable left
    assert manifest.kinds == {"image": 3, "recipe": 5, "text": 10}
    snap = load_current(tmp_path / "ix", encoder.fingerprint)
    assert snap.get_item("item-3") is None
    assert snap.get_item("item-1").kinds == ["recipe", "text"]
    # Only photos that were read and encoded are recorded for display.
    assert snap.image_path("item-0") == (tmp_path / "img" / "item-0.png").absolute()
    assert snap.image_path("item-1") is None and snap.image_path("item-2") is None


def test_progress_callback_and_returned_manifest(tmp_path, encoder):
    calls: list[tuple[int, int | None]] = []
    records = make_records(tmp_path / "img", 10)
    manifest = build_snapshot(
        iter(records), encoder, tmp_path / "ix", batch_size=4, total=10,
        progress=lambda done, total: calls.append((done, total)), source="s", fmt="synthetic",
    )  # fmt: skip
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]
    assert (manifest.source, manifest.format, manifest.n_vectors) == ("s", "synthetic", 40)
    assert read_current(tmp_path / "ix") == manifest.version
    hidden = [p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith(".")]
    assert hidden == [PUBLISH_LOCK_FILE]  # no staging or temp files left


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (lambda recs: recs + recs[:1], "duplicate item id 'item-0'"),
        (lambda recs: [], "no records"),
        (lambda recs: [replace(r, image_path=None, texts=(), recipe=None) for r in recs], "none"),
    ],
)
def test_refused_datasets_publish_nothing(tmp_path, encoder, records, message):
    index_dir = tmp_path / "ix"
    with pytest.raises(BuildError, match=message):
        build_snapshot(records(make_records(tmp_path / "img", 3)), encoder, index_dir)
    assert read_current(index_dir) is None
    assert list(index_dir.iterdir()) == []  # staging removed


def test_factory_errors(tmp_path, encoder):
    records = make_records(tmp_path / "img", 3)
    with pytest.raises(ValueError, match="invalid FAISS factory"):
        build_snapshot(records, encoder, tmp_path / "ix", factory="Bogus42")
    with pytest.raises(BuildError, match="inverted lists"):
        build_snapshot(records, encoder, tmp_path / "ix", factory="IVF64,Flat")
    assert read_current(tmp_path / "ix") is None


def test_ivf_build_and_unpublished_install(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    first = build_snapshot(make_records(tmp_path / "img", 20), encoder, index_dir)
    second = build_snapshot(
        make_records(tmp_path / "img", 40), encoder, index_dir, factory="IVF4,Flat",
        publish_snapshot=False,
    )  # fmt: skip
    assert read_current(index_dir) == first.version  # installed, not live
    assert list_versions(index_dir) == sorted([first.version, second.version])
    assert second.factory == "IVF4,Flat" and second.n_vectors == 160


CRASHING_BUILD = """
import os, sys
from pathlib import Path
from index.build import build_snapshot
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder

def records():
    for i, record in enumerate(make_records(Path(sys.argv[2]), 100, prefix="new")):
        if i == 40:  # five batches of 8 are written to staging by now
            os._exit(17)
        yield record

build_snapshot(records(), TinyEncoder(), Path(sys.argv[1]), batch_size=8)
"""


def test_build_killed_midway_leaves_current_untouched_then_resumes(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    old = build_snapshot(make_records(tmp_path / "img", 12), encoder, index_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    script = textwrap.dedent(CRASHING_BUILD)
    argv = [sys.executable, "-c", script, str(index_dir), str(tmp_path / "new-img")]
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 17, done.stderr.decode()[-2000:]

    staging = [p for p in index_dir.iterdir() if p.name.startswith(".staging-")]
    assert len(staging) == 1 and (staging[0] / "catalog.sqlite").exists()  # died mid-build
    assert read_current(index_dir) == old.version
    snap = load_current(index_dir, encoder.fingerprint)
    assert snap.search(encoder.encode_texts(["pasta"])[0], 5)[0].item_id.startswith("item-")

    # Its lock died with it: the next build removes the leftovers at once, not an hour later.
    new = build_snapshot(make_records(tmp_path / "new-img", 50, prefix="new"), encoder, index_dir)
    assert read_current(index_dir) == new.version != old.version
    assert not staging[0].exists()
    fresh = load_current(index_dir, encoder.fingerprint)
    assert fresh.manifest.n_items == 50 and fresh.get_item("new-49") is not None
    assert snap.search(encoder.encode_texts(["pasta"])[0], 3)  # the old one still answers


def test_an_older_request_never_replaces_a_newer_ones_snapshot(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    records = make_records(tmp_path / "img", 6)
    now = datetime.now(UTC)
    newer = build_snapshot(records, encoder, index_dir, requested_at=now)

    with pytest.raises(SupersededError, match="superseded"):
        build_snapshot(records, encoder, index_dir, requested_at=now - timedelta(seconds=79))

    assert read_current(index_dir) == newer.version
    assert list_versions(index_dir) == [newer.version]  # the older build left nothing
    later = build_snapshot(records, encoder, index_dir, requested_at=now + timedelta(seconds=1))
    assert read_current(index_dir) == later.version
    assert (later.requested_at or "") > (newer.requested_at or "") != ""


def test_publish_prunes_to_the_live_one_plus_keep_older_sparing_loaded_ones(tmp_path, encoder):
    index_dir = tmp_path / "ix"
    records = make_records(tmp_path / "img", 6)
    first = build_snapshot(records, encoder, index_dir, keep_older=1)
    held = load_current(index_dir, encoder.fingerprint)  # a request still using the first
    built = [build_snapshot(records, encoder, index_dir, keep_older=1) for _ in range(4)]

    assert list_versions(index_dir) == sorted([first.version, *(m.version for m in built[-2:])])
    assert held.search(encoder.encode_texts(["pasta"])[0], 3)
    del held  # the last reference: its lease goes with it
    build_snapshot(records, encoder, index_dir, keep_older=1)
    assert first.version not in list_versions(index_dir)
    assert len(list_versions(index_dir)) == 2
