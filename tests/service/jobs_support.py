"""Helpers for the job, worker and CLI tests: bounded waits and worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from service.jobs import JobQueue, JobState, JobStatus
from service.settings import Settings
from tests.polling import poll

FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


def wait_for_status(
    queue: JobQueue,
    job_id: str,
    until: Callable[[JobStatus], bool],
    *,
    timeout_s: float,
    what: str = "the expected job state",
) -> JobStatus:
    """Poll ``queue.status(job_id)`` until ``until`` holds; fail after ``timeout_s``."""
    status = poll(
        lambda: queue.status(job_id),
        lambda s: s is not None and until(s),
        timeout_s=timeout_s,
        interval_s=0.1,
    )
    if status is not None and until(status):
        return status
    raise AssertionError(f"job {job_id}: no {what} within {timeout_s:.0f}s; last status {status}")


def wait_until_finished(queue: JobQueue, job_id: str, *, timeout_s: float) -> JobStatus:
    return wait_for_status(
        queue, job_id, lambda s: s.state in FINISHED, timeout_s=timeout_s, what="finish"
    )


def mmsearch_command() -> list[str]:
    """The venv's ``mmsearch`` script, else ``python -m service.cli``."""
    script = Path(sys.executable).parent / "mmsearch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def service_env(settings: Settings) -> dict[str, str]:
    """A child process environment that reproduces ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        MMSEARCH_MODEL=settings.model,
        MMSEARCH_DEVICE=settings.device,
        MMSEARCH_INDEX_DIR=str(settings.index_dir),
        MMSEARCH_QUEUE_NAME=settings.queue_name,
        MMSEARCH_LOG_LEVEL="info",
    )
    if settings.redis_url:
        env["MMSEARCH_REDIS_URL"] = settings.redis_url
    if settings.cache_dir:
        env["MMSEARCH_CACHE_DIR"] = str(settings.cache_dir)
    if settings.admin_token:
        env["MMSEARCH_ADMIN_TOKEN"] = settings.admin_token.get_secret_value()
    if "MMSEARCH_SHARED_DATA" in os.environ:
        env["MMSEARCH_SHARED_DATA"] = os.environ["MMSEARCH_SHARED_DATA"]
    return env


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so it can be killed as a group), logging to a file."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Terminate, then kill the child's whole process group if it lingers."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)
    process.wait(grace_s)


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child and everything in its process group, like a lost machine."""
    _signal_group(process, signal.SIGKILL)
    process.wait(10)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, sig)


@contextlib.contextmanager
def running(
    args: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is always stopped on exit, even when the test fails."""
    process = start_process(args, env, log_path)
    try:
        yield process
    finally:
        stop_process(process)


@contextlib.contextmanager
def worker_log_on_failure(log_path: Path) -> Iterator[None]:
    """A failed wait inside shows the tail of the worker's log in its message."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{log_tail(log_path)}") from exc


def log_tail(log_path: Path, chars: int = 3000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else ""
