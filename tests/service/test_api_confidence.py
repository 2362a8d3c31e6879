"""Calibrated confidence on matches and ``min_confidence``, with a model that has curves
(the tiny encoder carrying a real :class:`Calibration`) and one without."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.calibration import Calibration, Curve
from models.types import CatalogRecord
from service.app import create_app
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings

CURVES = Calibration(
    {
        "text->recipe": Curve(12.0, -4.0, -0.5),
        "*->recipe": Curve(6.0, -2.0, -0.3),
        "image->image": Curve(20.0, -15.0),
        "*->*": Curve(4.0, -1.0, -0.2),
    }
)


class CalibratedTinyEncoder(TinyEncoder):
    """The tiny encoder with confidence curves, as a calibrated bundle carries them."""

    calibration = CURVES


@pytest.fixture(scope="module")
def calibrated_client(tiny_index_dir: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tiny_index_dir), encoder=CalibratedTinyEncoder(32, seed=0))
    with TestClient(app) as client:
        yield client


def _search(client: TestClient, **body: object) -> list[dict]:
    response = client.post("/search", json={"k": 20, **body})
    assert response.status_code == 200, response.text
    return response.json()["matches"]


def test_every_match_carries_the_curve_of_its_direction(calibrated_client: TestClient) -> None:
    matches = _search(calibrated_client, query={"text": "kimchi stew"}, kinds=["recipe"])
    assert matches
    for m in matches:
        expected = CURVES.confidence("text", "recipe", np.array([m["score"]]), m["rank"])[0]
        assert 0.0 <= m["confidence"] <= 1.0
        assert m["confidence"] == pytest.approx(expected, abs=1e-6)
    # Better score and rank, never lower confidence.
    confidences = [m["confidence"] for m in matches]
    assert confidences == sorted(confidences, reverse=True)


def test_queries_without_a_modality_use_the_pooled_curves(
    calibrated_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    matches = _search(calibrated_client, query={"item_id": tiny_records[0].id}, kinds=["recipe"])
    for m in matches:
        expected = CURVES.confidence("*", "recipe", np.array([m["score"]]), m["rank"])[0]
        assert m["confidence"] == pytest.approx(expected, abs=1e-6)


def test_min_confidence_drops_the_less_confident_matches(calibrated_client: TestClient) -> None:
    query = {"query": {"text": "kimchi stew"}, "kinds": ["recipe"]}
    everything = [m["confidence"] for m in _search(calibrated_client, **query)]
    threshold = float(np.median(everything))
    kept = _search(calibrated_client, **query, min_confidence=threshold)
    assert 0 < len(kept) < len(everything)
    assert all(m["confidence"] >= threshold for m in kept)
    assert _search(calibrated_client, **query, min_confidence=1.0) == []


def test_photo_search_is_judged_by_the_image_curves(
    calibrated_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    assert tiny_records[0].image_path is not None
    photo = tiny_records[0].image_path.read_bytes()
    response = calibrated_client.post(
        "/search/image",
        files={"file": ("dish.png", photo, "image/png")},
        data={"kinds": "image", "k": "5", "min_confidence": "0.5"},
    )
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    assert matches and matches[0]["id"] == tiny_records[0].id
    for m in matches:
        expected = CURVES.confidence("image", "image", np.array([m["score"]]), m["rank"])[0]
        assert m["confidence"] == pytest.approx(expected, abs=1e-6) and expected >= 0.5


@pytest.mark.parametrize("bad", [-0.1, 1.5, "high"])
def test_min_confidence_out_of_range_is_a_422(calibrated_client: TestClient, bad: object) -> None:
    body = {"query": {"text": "kimchi"}, "min_confidence": bad}
    assert calibrated_client.post("/search", json=body).status_code == 422


def test_a_model_without_curves_gives_null_confidence_and_keeps_every_match(
    tiny_client: TestClient,
) -> None:
    matches = _search(tiny_client, query={"text": "kimchi stew"}, min_confidence=0.99)
    assert len(matches) == 20
    assert all(m["confidence"] is None for m in matches)


def test_english_text_queries_are_expanded_through_the_lexicon(
    tiny_index_dir: Path, tiny_encoder: TinyEncoder
) -> None:
    from service.settings import Settings

    body = {"query": {"text": "spicy pork stew"}, "k": 5}
    found = {}
    for lexicon in ("en-ko-food", "none"):
        settings = make_settings(tiny_index_dir, query_lexicon=lexicon)
        with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
            found[lexicon] = _search(client, **body)
    # The gloss "매운 돼지고기 찌개" moves the query: other scores, same API shape.
    assert [m["score"] for m in found["en-ko-food"]] != [m["score"] for m in found["none"]]
    with pytest.raises(ValueError, match="unknown query lexicon"):
        Settings(query_lexicon="xx")  # type: ignore[call-arg]
