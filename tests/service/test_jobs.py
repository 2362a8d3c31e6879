"""The embedded job backend: re-index jobs in a background thread of this process.

The queue logic runs real re-indexes with the tiny encoder; tests/service/
test_reindex_in_process.py covers the API's own reindexer (its model, served once done).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from index.layout import read_current
from service.jobs import (
    JobOutcome,
    JobState,
    ProgressCallback,
    ThreadJobQueue,
    create_job_queue,
)
from service.reindex import ReindexRequest, reindex
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings
from tests.service.jobs_support import wait_for_status, wait_until_finished

BUILD_TIMEOUT_S = 60  # 12 recipes, tiny encoder, shared 2-core CPU


@pytest.fixture()
def thread_queue(tmp_path: Path, tiny_encoder: TinyEncoder) -> Iterator[ThreadJobQueue]:
    settings = make_settings(tmp_path / "index")

    def run(request: ReindexRequest, progress: ProgressCallback) -> JobOutcome:
        return JobOutcome.of(reindex(request, settings, tiny_encoder, progress))

    queue = create_job_queue(settings, run)
    assert isinstance(queue, ThreadJobQueue)
    yield queue
    queue.close()


def test_reindex_job_succeeds_and_publishes(
    thread_queue: ThreadJobQueue, kfood_sample: Path, tmp_path: Path
) -> None:
    job_id = thread_queue.enqueue_reindex(ReindexRequest(source=kfood_sample, format="kfood"))
    first = thread_queue.status(job_id)
    assert first is not None and first.state in (JobState.QUEUED, JobState.RUNNING)

    status = wait_until_finished(thread_queue, job_id, timeout_s=BUILD_TIMEOUT_S)

    assert status.state is JobState.SUCCEEDED, status.error
    assert status.progress == 1.0
    assert status.error is None
    assert status.index_version is not None
    assert status.index_version == read_current(tmp_path / "index")


@pytest.mark.parametrize(
    ("source_name", "fmt", "expected"),
    [("missing-dir", "kfood", "missing-dir"), (None, "no-such-format", "no-such-format")],
)
def test_failing_job_reports_a_short_error(
    thread_queue: ThreadJobQueue,
    kfood_sample: Path,
    tmp_path: Path,
    source_name: str | None,
    fmt: str,
    expected: str,
) -> None:
    source = tmp_path / source_name if source_name else kfood_sample
    job_id = thread_queue.enqueue_reindex(ReindexRequest(source=source, format=fmt))

    status = wait_until_finished(thread_queue, job_id, timeout_s=60)

    assert status.state is JobState.FAILED
    assert status.error is not None and expected in status.error
    assert "Traceback" not in status.error and "\n" not in status.error
    assert status.index_version is None
    assert read_current(tmp_path / "index") is None


def test_jobs_run_one_after_another(tmp_path: Path) -> None:
    calls: list[str] = []

    def fake_reindex(request: ReindexRequest, progress: ProgressCallback) -> JobOutcome:
        progress(1, 2)
        calls.append(request.format)
        return JobOutcome(f"v-{request.format}")

    queue = ThreadJobQueue(fake_reindex)
    try:
        ids = [queue.enqueue_reindex(ReindexRequest(tmp_path, fmt)) for fmt in ("a", "b", "c")]
        statuses = [wait_until_finished(queue, job_id, timeout_s=10) for job_id in ids]
    finally:
        queue.close()
    assert calls == ["a", "b", "c"]
    assert [s.index_version for s in statuses] == ["v-a", "v-b", "v-c"]
    assert all(s.state is JobState.SUCCEEDED and s.progress == 1.0 for s in statuses)


def test_close_stops_a_running_job_at_its_next_progress_report(tmp_path: Path) -> None:
    def endless_reindex(request: ReindexRequest, progress: ProgressCallback) -> JobOutcome:
        done = 0
        while True:
            done += 1
            progress(done, None)

    queue = ThreadJobQueue(endless_reindex)
    job_id = queue.enqueue_reindex(ReindexRequest(tmp_path, "kfood"))
    wait_for_status(queue, job_id, lambda s: s.state is JobState.RUNNING, timeout_s=10)

    queue.close(timeout=10)

    status = queue.status(job_id)
    assert status is not None and status.state is JobState.FAILED
    assert status.error is not None and "shut down" in status.error
    with pytest.raises(RuntimeError):
        queue.enqueue_reindex(ReindexRequest(tmp_path, "kfood"))


def test_unknown_job_has_no_status(thread_queue: ThreadJobQueue) -> None:
    assert thread_queue.status("no-such-job") is None
