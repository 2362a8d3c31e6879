"""GET /: the demo page (static HTML that calls the JSON API with fetch)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["demo"])


def _demo_page() -> str:
    return resources.files("service").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/", summary="Demo page: search by photo or text", response_class=HTMLResponse)
def demo_page() -> HTMLResponse:
    return HTMLResponse(_demo_page())
