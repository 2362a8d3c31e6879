"""The demo page and /docs in a real browser: Debian's chromium driven by playwright.

The app runs under uvicorn on a loopback port with the tiny encoder and a few kfood
recipes copied into the test's folder. No browser download happens
(``playwright install`` is never run): the system ``chromium`` is used, and missing
it fails the test under CI and skips it elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from index.build import build_snapshot
from models.datasets import open_dataset
from service.app import create_app
from tests.conftest import write_kfood_sample
from tests.e2e.test_end_to_end import free_port
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("MMSEARCH_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_RECIPES = 6
GONE = "kfood-5"  # its photo is deleted after indexing: the card must show a placeholder
START_TIMEOUT_S = 30
UI_TIMEOUT_MS = 30_000
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI needs it for the browser tests (.ci/run installs chromium)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def recipes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kfood_sample(
        shared_data / "kfood", tmp_path_factory.mktemp("kfood-demo"), N_RECIPES
    )


@pytest.fixture(scope="module")
def base_url(recipes: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The whole app under uvicorn in a thread, on a free loopback port."""
    encoder = TinyEncoder(dim=32, seed=0)
    index_dir = tmp_path_factory.mktemp("demo-index")
    build_snapshot(open_dataset(recipes, "kfood"), encoder, index_dir)
    # A photo that disappears after indexing (a moved or pruned file).
    shutil.move(recipes / "images" / f"{GONE}.jpg", recipes / f"{GONE}-moved.jpg")
    port = free_port()
    app = create_app(make_settings(index_dir), encoder=encoder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _wait_ready(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert thread.is_alive(), "uvicorn exited during start-up"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    raise AssertionError(f"{url}/readyz not OK within {START_TIMEOUT_S}s")


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)
    yield opened
    context.close()


def _remote_requests(page: Any) -> list[str]:
    """Filled with every network request the page makes to a non-loopback host
    (``blob:`` and ``data:`` URLs stay in the browser)."""
    remote: list[str] = []

    def check(request: Any) -> None:
        url = urlsplit(request.url)
        if url.scheme not in ("blob", "data") and url.hostname not in LOOPBACK:
            remote.append(request.url)

    page.on("request", check)
    return remote


def _titles(recipes: Path) -> dict[str, str]:
    lines = (recipes / "recipes.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r["title"] for r in map(json.loads, lines)}


def _loaded_photos(page: Any) -> int:
    """Cards whose photo finished loading with real pixels."""
    count: int = page.eval_on_selector_all(
        ".card .photo img",
        "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length",
    )
    return count


def test_photo_search_shows_recipe_cards(
    page: Any, base_url: str, recipes: Path, tmp_path: Path
) -> None:
    remote = _remote_requests(page)
    page.goto(base_url)
    page.wait_for_selector("#status .model")

    page.set_input_files("#photo", str(recipes / "images" / "kfood-2.jpg"))
    page.wait_for_selector(".card")
    page.wait_for_function("document.querySelectorAll('.card .photo img').length > 0")
    page.wait_for_function(
        "[...document.querySelectorAll('.card .photo img')]"
        ".every(i => i.complete) && document.querySelector('.placeholder') !== null"
    )

    cards = page.locator(".card")
    assert cards.count() == N_RECIPES  # k = 8 by default
    first = cards.first
    assert first.locator("h3").inner_text() == _titles(recipes)["kfood-2"]  # finds itself
    assert first.locator("ul.ingredients li").count() > 0
    assert first.locator("ul.ingredients .amount").count() > 0
    assert first.locator(".confidence").is_visible()
    assert first.locator("details ol.steps li").count() > 0
    assert _loaded_photos(page) >= 3
    assert page.locator(".placeholder").count() == 1  # kfood-5's file is gone
    page.screenshot(path=str(tmp_path / "demo-photo-search.png"), full_page=True)
    assert remote == []


def test_text_search_from_an_example(page: Any, base_url: str) -> None:
    page.goto(base_url)
    page.get_by_role("button", name="김치찌개").click()

    page.wait_for_selector(".card h3")
    assert page.locator(".card").count() >= 1
    assert "김치찌개" in page.locator("#summary").inner_text()


def test_confidence_is_shown_as_a_percentage(page: Any, base_url: str) -> None:
    """Calibrated models add ``confidence`` to each match; others leave it out or null."""

    def with_confidence(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["matches"][0]["confidence"] = 0.734
        body["matches"][1]["confidence"] = None
        route.fulfill(response=response, json=body)

    page.route("**/search", with_confidence)
    page.goto(base_url)
    page.fill("#text", "bibimbap")
    page.press("#text", "Enter")

    page.wait_for_selector(".card .confidence")
    badges = page.locator(".card .confidence")
    assert badges.nth(0).inner_text() == "73% match"
    assert badges.nth(0).locator(".meter span").get_attribute("style") == "width: 73%;"
    assert badges.nth(1).inner_text() == "confidence n/a"


def test_docs_render_offline(page: Any, base_url: str, tmp_path: Path) -> None:
    remote = _remote_requests(page)
    page.goto(f"{base_url}/docs")

    page.wait_for_selector(".swagger-ui .info", state="visible")
    page.wait_for_selector(".opblock-tag", state="visible")
    assert "mmsearch" in page.locator(".swagger-ui .info").inner_text()
    page.screenshot(path=str(tmp_path / "docs.png"))
    assert remote == []
