"""Shared fixtures: where the sample data lives, a real Redis, small samples."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The sample datasets: MMSEARCH_SHARED_DATA, else ../shared/data beside the repo."""
    configured = os.environ.get("MMSEARCH_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


# Fixtures that load the real offline model (about 30 s on this machine, once per
# session) or train: a test that uses one is slow, and `make test-fast` leaves it out.
SLOW_FIXTURES = {
    ("tests.conftest", "offline_encoder"),
    ("tests.service.conftest", "encoder"),
    ("tests.service.test_cli", "indexed"),  # mmsearch index with the offline model
    ("tests.training.test_synthetic_bench", "short_run"),
}


def _uses_a_slow_fixture(item: pytest.Item) -> bool:
    fixture_defs = getattr(item, "_fixtureinfo", None)
    if fixture_defs is None:
        return False
    return any(
        (defs[-1].func.__module__, name) in SLOW_FIXTURES
        for name, defs in fixture_defs.name2fixturedefs.items()
        if defs
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" not in item.keywords and _uses_a_slow_fixture(item):
            item.add_marker(pytest.mark.slow)


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


# --------------------------------------------------------------------------- the real offline model
# Session-wide, for the models and training tests alike: loading it is costly.
@pytest.fixture(scope="session")
def offline_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the ImageNet label vectors go: MMSEARCH_TEST_CACHE_DIR, else a fresh tmp dir.

    A fresh dir means the 1000 label texts are embedded once per session
    (about 6-30 s on a 2-core CPU).
    """
    configured = os.environ.get("MMSEARCH_TEST_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("mmsearch-cache")


@pytest.fixture(scope="session")
def offline_encoder(offline_cache_dir: Path):  # type: ignore[no-untyped-def]
    from models.encoders.offline import OfflineEncoder

    started = time.perf_counter()
    encoder = OfflineEncoder(device="cpu", cache_dir=offline_cache_dir)
    encoder.test_load_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
    return encoder


@pytest.fixture(scope="session")
def burrito_paths(shared_data: Path) -> list[Path]:
    """The first ten breakfast_burrito photos of the food101 sample.

    'burrito' is an ImageNet class, so these photos check the vision weights.
    """
    paths = sorted((shared_data / "food101-10" / "images" / "breakfast_burrito").glob("*.jpg"))[:10]
    assert len(paths) == 10
    return paths


# --------------------------------------------------------------------------- Milvus Lite
@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded Milvus Lite file per session (its start-up is paid once); each
    snapshot gets its own collection in it. Skipped without the ``milvus`` extra."""
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")
