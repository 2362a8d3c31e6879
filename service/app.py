"""The app factory: assembles settings, state, middleware, error handlers, routers."""

from __future__ import annotations

from fastapi import FastAPI

from models.encoders import Encoder
from service.errors import register_error_handlers
from service.limits import RequestBodyLimitMiddleware, request_body_limit
from service.metrics import RequestMetricsMiddleware
from service.routes import (
    admin,
    admin_items,
    classes,
    demo,
    docs,
    embed,
    health,
    images,
    items,
    metrics,
    search,
    tag,
)
from service.settings import Settings
from service.state import AppState, make_lifespan

DESCRIPTION = (
    "Multimodal retrieval over a food catalog: embed texts, photos and recipes into "
    "one space and search the live FAISS index snapshot."
)


def create_app(settings: Settings | None = None, *, encoder: Encoder | None = None) -> FastAPI:
    """Build the API. ``encoder`` (tests) skips loading ``settings.model``."""
    # Field defaults are given positionally, which mypy without the pydantic plugin
    # reads as required arguments.
    settings = settings if settings is not None else Settings()  # type: ignore[call-arg]
    app = FastAPI(
        title="mmsearch",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=make_lifespan(settings, encoder),
        # Served by service.routes.docs from local assets instead of a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=docs.OAUTH2_REDIRECT_URL,
    )
    state = AppState(settings=settings)
    app.state.mmsearch = state
    register_error_handlers(app)
    # Added last = outermost: the metrics see the limit's 413s too.
    app.add_middleware(
        RequestBodyLimitMiddleware, max_body_bytes=request_body_limit(settings.max_upload_bytes)
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    routers = (health, embed, search, tag, classes, items, images, admin, admin_items, metrics)
    for module in (*routers, demo, docs):
        app.include_router(module.router)
    docs.mount_assets(app)
    return app
