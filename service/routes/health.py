"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from models.registry import model_display_name
from service.deps import StateDep, model_not_ready_message, no_snapshot_message
from service.schemas import HealthOut, NotReadyOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up", response_model=HealthOut)
async def healthz() -> HealthOut:
    return HealthOut()


@router.get(
    "/readyz",
    summary="Readiness: a model and an index snapshot are loaded (degraded: no job queue)",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "What is missing"}},
)
def readyz(state: StateDep) -> ReadyOut | JSONResponse:
    encoder = state.encoder
    snapshot = state.current_snapshot()
    if encoder is not None and snapshot is not None:
        manifest = snapshot.manifest
        # Search needs neither Redis nor the worker: a queue outage degrades, not unreadies.
        problem = state.jobs.problem() if state.jobs is not None else None
        return ReadyOut(
            status="degraded" if problem else "ready",
            detail=problem,
            model=encoder.fingerprint,
            model_name=model_display_name(state.settings.model),
            index_version=manifest.version,
            items=manifest.n_items,
        )
    detail = model_not_ready_message(state) if encoder is None else no_snapshot_message(state)
    body = NotReadyOut(
        detail=detail,
        model=encoder.fingerprint if encoder is not None else None,
        index_version=None,
    )
    return JSONResponse(body.model_dump(), status_code=503)
