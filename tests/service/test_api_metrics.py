"""GET /metrics, the OpenAPI document and the demo page."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, or None when it is absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    before = client.get("/metrics").text
    start = (
        _sample(before, "mmsearch_http_requests_total", route="/items/{item_id:path}", status="404")
        or 0.0
    )
    client.get("/items/no-such-dish")
    client.get("/items/another/missing")
    client.get("/healthz")
    client.get("/no/such/route")

    text = client.get("/metrics").text
    items_404 = _sample(
        text, "mmsearch_http_requests_total", route="/items/{item_id:path}", status="404"
    )
    assert items_404 == start + 2
    assert _sample(
        text, "mmsearch_http_requests_total", route="/healthz", method="GET", status="200"
    )
    assert _sample(text, "mmsearch_http_requests_total", route="unmatched", status="404")
    assert _sample(text, "mmsearch_http_request_duration_seconds_count", route="/healthz")


def test_metrics_expose_the_live_snapshot(client: TestClient) -> None:
    version = client.get("/readyz").json()["index_version"]
    response = client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain")
    assert _sample(response.text, "mmsearch_index_items") == 12.0
    assert _sample(response.text, "mmsearch_index_info", version=version) == 1.0


def test_openapi_documents_every_route_with_summary_and_tag(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]

    assert {"/embed", "/embed/image", "/search", "/search/image", "/items/{item_id}"} <= set(
        spec["paths"]
    )
    assert all(op.get("summary") and op.get("tags") for op in operations)
    search_ok = spec["paths"]["/search"]["post"]["responses"]["200"]
    assert "SearchResponse" in str(search_ok)
    assert client.get("/docs").status_code == 200


def test_demo_page_is_served_without_external_resources(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "search/image" in response.text
    assert not re.search(r"(src|href)=\"(https?:)?//", response.text)
