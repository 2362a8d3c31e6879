"""``mmsearch search``: query the live snapshot from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.snapshot import ItemMatch, load_current
from models.encoders import Encoder
from models.images import load_image
from service.commands import CommandInputError, load_encoder_for
from service.settings import Settings


@dataclass(frozen=True)
class SearchResult:
    matches: list[ItemMatch]
    index_version: str


def search_snapshot(
    settings: Settings,
    *,
    text: str | None,
    image: Path | None,
    k: int,
    kinds: list[str] | None,
) -> SearchResult:
    """Encode one text or image query and search the current snapshot."""
    if (text is None) == (image is None):
        raise CommandInputError("give exactly one of --text or --image")
    if k < 1:
        raise CommandInputError("-k must be at least 1")
    encoder = load_encoder_for(settings)
    snapshot = load_current(
        settings.index_dir, encoder.fingerprint, backend=settings.vector_backend()
    )
    try:
        vector = encode_query(encoder, settings, text=text, image=image)
        matches = snapshot.search(vector, k, kinds=kinds)
    finally:
        snapshot.close()
    return SearchResult(matches=matches, index_version=snapshot.version)


def encode_query(
    encoder: Encoder, settings: Settings, *, text: str | None, image: Path | None
) -> np.ndarray:
    if image is not None:
        picture = load_image(image, max_pixels=settings.max_image_pixels)
        return encoder.encode_images([picture])[0]
    return encoder.encode_texts([text or ""])[0]
