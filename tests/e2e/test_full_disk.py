"""A disk that fills up during a re-index fails the job with a clear error; nothing dies.

Before, the vector spool was turned into ``vectors.npy`` through a memory map, and a
full disk killed the process with SIGBUS (exit 135): with in-process jobs, the API.
These tests fill a real tmpfs (mounted here, which needs root, as on this project's
machines and in CI) and check that the build raises DiskFullError instead, that the
live snapshot stays served, and that no staging folder is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from index.build import build_snapshot
from index.layout import read_current
from tests.conftest import REPO_ROOT, write_kfood_sample
from tests.e2e.test_end_to_end import free_port
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import ADMIN_TOKEN
from tests.service.jobs_support import log_tail, running

pytestmark = pytest.mark.e2e

DISK_KIB = 4096
DIM = 512  # 2 KiB per vector, 4 vectors per item: the disk fills after a few hundred items
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 120
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Builds a snapshot in a child process, so that a SIGBUS shows as a signal exit code
# instead of killing the test run.
BUILD_SCRIPT = """
import json, sys
from pathlib import Path
from index.build import DiskFullError, build_snapshot
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder
records = make_records(Path(sys.argv[1]), int(sys.argv[2]), prefix="new")
try:
    build_snapshot(records, TinyEncoder(dim=int(sys.argv[4])), Path(sys.argv[3]))
    print(json.dumps({"outcome": "built"}))
except DiskFullError as exc:
    print(json.dumps({"outcome": "disk full", "message": str(exc)}))
"""


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_KIB}k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_kib: int) -> None:
    """Leave about ``leave_kib`` free on ``disk``."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(bytes(max(free - leave_kib * 1024, 0)))


def staging_left(index_dir: Path) -> list[str]:
    return [p.name for p in index_dir.iterdir() if p.name.startswith((".staging", ".claim"))]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    return {**env, "PYTHONPATH": str(REPO_ROOT)}


# Free space chosen so that the disk fills (a) while the vectors are spooled, and
# (b) once they all fit but the FAISS index written after them does not: the
# memory-mapped copy that used to take the process down with SIGBUS.
@pytest.mark.parametrize("leave_kib", [500, 1300], ids=["while-spooling", "after-spooling"])
def test_a_build_on_a_full_disk_fails_with_a_clear_error_and_leaves_the_live_snapshot(
    small_disk: Path, tmp_path: Path, leave_kib: int
) -> None:
    index_dir = small_disk / "index"
    live = build_snapshot(make_records(tmp_path / "old", 4), TinyEncoder(dim=DIM), index_dir)
    fill(small_disk, leave_kib)

    args = [sys.executable, "-c", BUILD_SCRIPT, str(tmp_path / "new"), "120", str(index_dir)]
    done = subprocess.run(
        [*args, str(DIM)], capture_output=True, text=True, env=child_env(), timeout=300
    )

    assert done.returncode == 0, f"exit {done.returncode} (135 or -7: SIGBUS)\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "disk full", result
    assert "disk holding the index folder is full" in result["message"]
    assert read_current(index_dir) == live.version
    assert staging_left(index_dir) == []


@pytest.fixture()
def server_on_small_disk(small_disk: Path) -> Iterator[str]:
    """The tiny-encoder server (in-process jobs) with its index on the tmpfs."""
    port = free_port()
    log = small_disk.parent / "server.log"
    args = [sys.executable, "-m", "tests.e2e.tiny_server", str(port), str(small_disk)]
    with running(args, child_env(), log) as process:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, log_tail(log)
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready\n{log_tail(log)}"
            time.sleep(0.3)
        yield url
        assert process.poll() is None, f"the API died\n{log_tail(log)}"


def follow(http: httpx.Client, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = http.get(f"/admin/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {JOB_TIMEOUT_S}s")


def test_an_in_process_reindex_on_a_full_disk_fails_and_the_api_keeps_serving(
    server_on_small_disk: str, small_disk: Path, tmp_path: Path, shared_data: Path
) -> None:
    source = write_kfood_sample(shared_data / "kfood", tmp_path / "kfood40", 40)
    with httpx.Client(base_url=server_on_small_disk, timeout=30) as http:
        live = http.get("/readyz").json()["index_version"]
        fill(small_disk, leave_kib=48)

        accepted = http.post(
            "/admin/reindex", json={"source": str(source), "format": "kfood"}, headers=AUTH
        )
        assert accepted.status_code == 202, accepted.text
        job = follow(http, accepted.json()["job_id"])

        assert job["state"] == "failed", job
        assert "disk holding the index folder is full" in str(job["error"])
        assert http.get("/healthz").status_code == 200
        found = http.post("/search", json={"query": {"text": "kimchi stew"}, "k": 3})
        assert found.status_code == 200, found.text
        assert found.json()["index_version"] == live
    assert staging_left(small_disk / "index") == []
