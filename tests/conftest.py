"""Shared fixtures: where the sample data lives, a real Redis, small samples."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The sample datasets: MMSEARCH_SHARED_DATA, else ../shared/data beside the repo."""
    configured = os.environ.get("MMSEARCH_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"sample data not found at {path} (set MMSEARCH_SHARED_DATA)")
        pytest.skip(f"sample data not found at {path}")
    return path


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis; absent Redis fails under CI and skips elsewhere."""
    import redis

    url = os.environ.get("MMSEARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required under CI but {url} is unreachable: {exc}")
        pytest.skip(f"Redis unreachable at {url}")
    return url


@pytest.fixture()
def clean_redis(redis_url: str) -> Iterator[str]:
    """The test Redis database, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()


def write_kfood_sample(source: Path, dest: Path, n: int) -> Path:
    """Copy the first ``n`` kfood recipes (and their photos) into ``dest``."""
    (dest / "images").mkdir(parents=True, exist_ok=True)
    lines = (source / "recipes.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    with open(dest / "recipes.jsonl", "w", encoding="utf-8") as out:
        for line in lines:
            recipe = json.loads(line)
            shutil.copy(source / recipe["image"], dest / recipe["image"])
            out.write(line + "\n")
    return dest


@pytest.fixture(scope="session")
def kfood_sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve kfood recipes with photos, in the kfood format."""
    return write_kfood_sample(shared_data / "kfood", tmp_path_factory.mktemp("kfood12"), 12)
