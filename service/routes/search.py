"""POST /search and /search/image: ranked item matches and class (prototype) matches
on the live snapshot."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from index.ranking import DEFAULT_CLASS_WEIGHT, Ranking, RankMode
from index.snapshot import Snapshot
from models.registry import model_display_name
from service.deps import EmbedderDep, SnapshotDep, StateDep
from service.errors import InvalidQueryError
from service.limits import read_upload
from service.queries import query_kind, query_vector
from service.reranking import RerankPlan, plan_rerank, query_parts, reranker_for
from service.schemas import (
    DEFAULT_K,
    MIN_CONFIDENCE_DESCRIPTION,
    RANK_DESCRIPTION,
    SIMILARITY_DESCRIPTION,
    SearchRequest,
    SearchResponse,
    error_responses,
)
from service.searching import (
    ConfidenceScorer,
    SearchParams,
    check_params,
    class_matches,
    parse_kinds,
    search,
)
from service.set_searching import (
    answer_sets,
    check_set_ready,
    check_set_search,
    refuse_with_sets,
    search_sets,
)
from service.state import AppState

router = APIRouter(prefix="/search", tags=["search"])

SEARCH_ERRORS = error_responses(404, 413, 422, 503)


async def _respond(
    state: AppState,
    snapshot: Snapshot,
    vector: np.ndarray,
    params: SearchParams,
    started: float,
    confidence: ConfidenceScorer,
    exclude_ids: tuple[str, ...] = (),
    rerank: RerankPlan | None = None,
) -> SearchResponse:
    fetch = replace(params, k=rerank.fetch(params.k)) if rerank is not None else params
    matches = await search(
        snapshot, vector, fetch, state.filter_check, state.placement, exclude_ids, confidence
    )
    if rerank is not None:
        matches = await run_in_threadpool(rerank.apply, matches, snapshot, params.k)
    return SearchResponse(
        matches=matches,
        classes=class_matches(snapshot, vector, params.top_classes),
        index_version=snapshot.manifest.version,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )


@router.post(
    "",
    summary="Search by text, base64 image, recipe, vector, item, class tag or a composition",
    response_model=SearchResponse,
    responses=SEARCH_ERRORS,
)
async def search_json(
    body: SearchRequest, snapshot: SnapshotDep, embedder: EmbedderDep, state: StateDep
) -> SearchResponse:
    started = time.perf_counter()
    kinds = tuple(body.kinds) if body.kinds is not None else None
    ranking = Ranking(body.rank, body.class_weight)
    params = check_params(
        SearchParams(body.k, kinds, body.filter, ranking, body.top_classes, body.min_confidence),
        state.settings.max_k,
    )
    settings = state.settings
    # Refused before any embedding work when the model cannot re-rank or has no sets.
    model_name = model_display_name(settings.model)
    if body.similarity == "set":
        check_set_search(body, embedder.encoder, snapshot, model_name)
        return await search_sets(body, snapshot, embedder, started)
    reranker = reranker_for(embedder.encoder, body.rerank, model_name, settings.max_k)
    queried = query_vector(body.query, embedder, snapshot, settings.max_inputs)
    if reranker is None:  # awaited directly: gather would wrap it in a task, a loop round more
        (vector, exclude_ids), parts = await queried, None
    else:
        (vector, exclude_ids), parts = await asyncio.gather(
            queried, query_parts(reranker, body.query, embedder)
        )
    confidence = ConfidenceScorer(embedder.calibration, query_kind(body.query))
    rerank = plan_rerank(body.rerank, reranker, vector, parts)
    return await _respond(state, snapshot, vector, params, started, confidence, exclude_ids, rerank)


@router.post(
    "/image",
    summary="Search with an uploaded photo (multipart field 'file')",
    response_model=SearchResponse,
    responses=SEARCH_ERRORS,
)
async def search_image(
    file: Annotated[UploadFile, File(description="The query photo")],
    snapshot: SnapshotDep,
    embedder: EmbedderDep,
    state: StateDep,
    k: Annotated[int | None, Form(description="How many items to return (default 10)")] = None,
    k_in_url: Annotated[
        int | None, Query(alias="k", description="Same as the form field k (give one)")
    ] = None,
    kinds: Annotated[
        str | None, Form(description="Comma-separated row kinds, e.g. 'image,recipe'")
    ] = None,
    rank: Annotated[RankMode, Form(description=RANK_DESCRIPTION)] = "item",
    class_weight: Annotated[
        float, Form(ge=0.0, le=1.0, description="a in the hybrid formula")
    ] = DEFAULT_CLASS_WEIGHT,
    top_classes: Annotated[int, Form(ge=0, le=100, description="Class matches to return")] = 3,
    min_confidence: Annotated[
        float | None, Form(ge=0.0, le=1.0, description=MIN_CONFIDENCE_DESCRIPTION)
    ] = None,
    similarity: Annotated[
        Literal["single", "set"], Form(description=SIMILARITY_DESCRIPTION)
    ] = "single",
) -> SearchResponse:
    started = time.perf_counter()
    ranking = Ranking(rank, class_weight)
    params = check_params(
        SearchParams(
            _one_k(k, k_in_url), parse_kinds(kinds), None, ranking, top_classes, min_confidence
        ),
        state.settings.max_k,
    )
    if similarity == "set":  # refused before the upload is read when it cannot run
        check_set_ready(embedder.encoder, snapshot, model_display_name(state.settings.model))
        refuse_with_sets(
            {
                "kinds": kinds is not None,
                "rank 'hybrid'": rank == "hybrid",
                "min_confidence": min_confidence is not None,
            }
        )
        data = await read_upload(file, embedder.max_upload_bytes)
        query_set = await embedder.embed_image_bytes_set(data)
        return await answer_sets(query_set, params.k, top_classes, snapshot, started)
    data = await read_upload(file, embedder.max_upload_bytes)
    vector = await embedder.embed_image_bytes(data)
    confidence = ConfidenceScorer(embedder.calibration, "image")
    return await _respond(state, snapshot, vector, params, started, confidence)


def _one_k(form: int | None, url: int | None) -> int:
    """``k`` from the form or from the URL (``/search/image?k=5``): clients do both."""
    if form is not None and url is not None and form != url:
        raise InvalidQueryError(
            f"k given twice with different values ({form} in the form, {url} in the URL)"
        )
    return next((v for v in (form, url) if v is not None), DEFAULT_K)
