"""Request dependencies as ``Annotated`` aliases: routes declare what they need.

They are ``async def`` because they only read app state: FastAPI runs a plain
``def`` dependency in the threadpool, and each such hop costs two thread wake-ups
per request (tests/service/test_threadpool_hops.py counts them). One that blocks
(I/O, a lock held for long) must be a plain ``def``.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from index.snapshot import Snapshot
from models.encoders import Encoder
from service.embedding import Embedder
from service.errors import (
    AdminDisabledError,
    ModelNotReadyError,
    NotAuthenticatedError,
    SnapshotNotReadyError,
)
from service.jobs import JobQueue
from service.pending import PendingChanges
from service.settings import Settings
from service.state import AppState

# The request-scoped dependencies below read the request's app state themselves instead
# of depending on StateDep / EncoderDep: FastAPI resolves every Depends node of a route
# on every request (a cache key and a call each), and /search's chain was 9 nodes.


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.mmsearch
    return state


async def get_state(request: Request) -> AppState:
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def model_not_ready_message(state: AppState) -> str:
    if state.startup_error is not None:
        return f"the model failed to load ({state.startup_error}); see the server log"
    return f"the model {state.settings.model!r} is still loading; retry shortly"


def loaded_encoder(state: AppState) -> Encoder:
    if state.encoder is None:
        raise ModelNotReadyError(model_not_ready_message(state))
    return state.encoder


async def get_encoder(request: Request) -> Encoder:
    return loaded_encoder(app_state(request))


EncoderDep = Annotated[Encoder, Depends(get_encoder)]


async def get_embedder(request: Request) -> Embedder:
    state = app_state(request)
    encoder = loaded_encoder(state)
    settings = state.settings
    if state.batcher is None:
        raise ModelNotReadyError(model_not_ready_message(state))
    return Embedder(
        encoder=encoder,
        batcher=state.batcher,
        lock=state.encoder_lock,
        max_upload_bytes=settings.max_upload_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_text_chars=settings.max_request_text_chars,
        lexicon=state.lexicon,
    )


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


def no_snapshot_message(state: AppState) -> str:
    index_error = state.index_error()
    if index_error is not None:
        return f"no usable index snapshot: {index_error}"
    return (
        f"no index snapshot in {state.settings.index_dir} yet: build one with "
        "`mmsearch index SOURCE --format FORMAT` or POST /admin/reindex"
    )


async def get_snapshot(request: Request) -> Snapshot:
    """The live snapshot, taken once: the request uses it even if a newer one lands."""
    state = app_state(request)
    loaded_encoder(state)  # no model, no search: the same 503 as before the snapshot
    snapshot = state.current_snapshot()
    if snapshot is None:
        raise SnapshotNotReadyError(no_snapshot_message(state))
    return snapshot


SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]


async def get_job_queue(state: StateDep) -> JobQueue:
    if state.jobs is None:
        raise ModelNotReadyError("the job queue is not started yet; retry shortly")
    return state.jobs


JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]


async def get_pending_changes(state: StateDep) -> PendingChanges:
    if state.pending is None:
        raise ModelNotReadyError("the item change store is not started yet; retry shortly")
    return state.pending


PendingChangesDep = Annotated[PendingChanges, Depends(get_pending_changes)]

_bearer = HTTPBearer(auto_error=False, description="MMSEARCH_ADMIN_TOKEN")


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if settings.admin_token is None:
        raise AdminDisabledError(
            "admin routes are disabled: set MMSEARCH_ADMIN_TOKEN on the server to enable them"
        )
    if credentials is None:
        raise NotAuthenticatedError("missing bearer token: send 'Authorization: Bearer <token>'")
    expected = settings.admin_token.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise NotAuthenticatedError("invalid admin token")


AdminDep = Depends(require_admin)
