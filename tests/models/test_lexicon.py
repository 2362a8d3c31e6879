"""The bilingual query lexicon: longest phrases first, no gloss without a known word."""

from __future__ import annotations

import pytest

from models.lexicon import load_lexicon


@pytest.fixture(scope="module")
def lexicon():  # type: ignore[no-untyped-def]
    return load_lexicon("en-ko-food")


def test_words_are_glossed_in_order(lexicon) -> None:  # type: ignore[no-untyped-def]
    assert lexicon.gloss("Spicy pork stew") == "매운 돼지고기 찌개"


def test_a_phrase_wins_over_its_words(lexicon) -> None:  # type: ignore[no-untyped-def]
    assert lexicon.gloss("kimchi stew") == "김치찌개"
    assert lexicon.gloss("stir-fried squid") == "볶음 오징어"


def test_texts_without_lexicon_words_are_left_alone(lexicon) -> None:  # type: ignore[no-untyped-def]
    assert lexicon.gloss("a dog runs across the grass") is None
    assert lexicon.gloss("김치찌개") is None
    assert lexicon.gloss("") is None


def test_a_repeated_word_is_glossed_once(lexicon) -> None:  # type: ignore[no-untyped-def]
    assert lexicon.gloss("rice and more rice") == "밥"


def test_unknown_lexicons_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown query lexicon"):
        load_lexicon("fr-ko")
