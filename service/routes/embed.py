"""POST /embed and /embed/image: inputs -> vectors in the model's joint space."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, UploadFile

from service.deps import EmbedderDep, SettingsDep
from service.errors import InvalidQueryError
from service.limits import read_upload
from service.schemas import EmbedRequest, EmbedResponse, error_responses
from service.vector_codec import encode_vectors

router = APIRouter(prefix="/embed", tags=["embed"])


def _response(
    fingerprint: str, vectors: np.ndarray, fused: bool = False, encoding: str = "float"
) -> EmbedResponse:
    embeddings = encode_vectors(vectors) if encoding == "base64" else vectors.tolist()
    return EmbedResponse(
        model=fingerprint, dim=int(vectors.shape[1]), embeddings=embeddings, fused=fused
    )


@router.post(
    "",
    summary="Embed texts, base64 images and recipes (same-kind inputs are batched)",
    response_model=EmbedResponse,
    responses=error_responses(413, 422, 503),
)
async def embed(body: EmbedRequest, embedder: EmbedderDep, settings: SettingsDep) -> EmbedResponse:
    if len(body.inputs) > settings.max_inputs:
        raise InvalidQueryError(
            f"too many inputs: at most {settings.max_inputs} per call, got {len(body.inputs)}"
        )
    if body.fuse:
        vectors = await embedder.embed_fused(body.inputs)
        return _response(embedder.encoder.fingerprint, vectors, True, body.encoding)
    vectors = await embedder.embed(body.inputs)
    return _response(embedder.encoder.fingerprint, vectors, encoding=body.encoding)


@router.post(
    "/image",
    summary="Embed one uploaded image (multipart field 'file')",
    response_model=EmbedResponse,
    responses=error_responses(413, 422, 503),
)
async def embed_image(
    file: Annotated[UploadFile, File(description="An image file (JPEG, PNG, WebP, ...)")],
    embedder: EmbedderDep,
) -> EmbedResponse:
    data = await read_upload(file, embedder.max_upload_bytes)
    vectors = await embedder.embed_image_bytes(data)
    return _response(embedder.encoder.fingerprint, vectors)
