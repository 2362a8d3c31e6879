"""/docs and /redoc load their scripts and styles from this server, never a CDN."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def asset_urls(html: str) -> list[str]:
    return ASSET_REFERENCE.findall(html)


@pytest.mark.parametrize(("page", "n_assets"), [("/docs", 3), ("/redoc", 2)])
def test_docs_pages_reference_only_local_assets(
    tiny_client: TestClient, page: str, n_assets: int
) -> None:
    response = tiny_client.get(page)

    assert response.status_code == 200
    html = response.text
    assert "//" not in "".join(asset_urls(html))  # no http://, https:// or //host
    assert not re.search(r"https?://", html.replace("window.location.origin", ""))
    urls = asset_urls(html)
    assert len(urls) == n_assets and all(url.startswith("/docs-assets/") for url in urls)
    for url in urls:
        asset = tiny_client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000


def test_swagger_ui_reads_this_apps_schema(tiny_client: TestClient) -> None:
    html = tiny_client.get("/docs").text

    assert "url: '/openapi.json'" in html
    assert "swagger-ui-bundle.js" in html
    assert tiny_client.get("/openapi.json").status_code == 200
    assert tiny_client.get("/docs/oauth2-redirect").status_code == 200


def test_docs_assets_serve_only_their_folder(tiny_client: TestClient) -> None:
    assert tiny_client.get("/docs-assets/..%2F__init__.py").status_code == 404
    assert tiny_client.get("/docs-assets/missing.js").status_code == 404


def test_docs_routes_stay_out_of_the_schema(tiny_client: TestClient) -> None:
    paths = tiny_client.get("/openapi.json").json()["paths"]

    assert not any(path.startswith(("/docs", "/redoc")) for path in paths)
    assert "/images/{item_id}" in paths
