"""Request and response bodies of the item change routes (/admin/items)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from service.schemas import MAX_LIST_ITEMS, MAX_NAME_CHARS, Name, RecipeIn, Text, _Strict

MAX_BATCH_ITEMS = 1000  # changes in one batch request (images are bound by the body limit)

ItemId = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class ItemIn(_Strict):
    """An item's inputs and metadata: what the item id holds once the change is applied."""

    image: str | None = Field(None, description="Base64 image bytes or a data: URI")
    texts: list[Text] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        examples=[["김치전, crispy kimchi pancake"]],
    )
    recipe: RecipeIn | None = None
    label: Name | None = Field(None, description="Class of the item (its prototype)")
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"cuisine": "한식"}])

    @field_validator("texts")
    @classmethod
    def _drop_blank_texts(cls, texts: list[str]) -> list[str]:
        return [text.strip() for text in texts if text.strip()]

    @field_validator("metadata")
    @classmethod
    def _plain_json(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        # Python's JSON parser takes NaN and Infinity; the catalog cannot store them.
        try:
            json.dumps(metadata, allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"metadata must be plain JSON: {exc}") from exc
        return metadata

    @model_validator(mode="after")
    def _has_an_input(self) -> ItemIn:
        if self.image is None and not self.texts and self.recipe is None:
            raise ValueError("an item needs an input: an image, a non-empty text or a recipe")
        return self


class ItemUpsertIn(ItemIn):
    id: ItemId


class ItemBatchIn(_Strict):
    """Upserts, then deletes, applied together."""

    upserts: list[ItemUpsertIn] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)
    deletes: list[ItemId] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)

    @model_validator(mode="after")
    def _distinct_ids(self) -> ItemBatchIn:
        if not self.upserts and not self.deletes:
            raise ValueError("give at least one upsert or delete")
        if len(self.upserts) + len(self.deletes) > MAX_BATCH_ITEMS:
            raise ValueError(f"at most {MAX_BATCH_ITEMS} changes in one batch")
        counts = Counter([item.id for item in self.upserts] + list(self.deletes))
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(f"each id may appear once in a batch; repeated: {repeated[:10]}")
        return self


class ItemChangesAccepted(BaseModel):
    job_id: str = Field(description="The job that applies the changes: GET /admin/jobs/{id}")
    state: Literal["queued"] = "queued"
    upserts: int
    deletes: int
