"""Request and response bodies of the HTTP API (pydantic models).

Inputs carry exactly one modality each today. A fused multi-modality input will
arrive as one more optional field (e.g. ``fuse``) counted by ``_ExactlyOne``, so
existing clients keep working unchanged.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.types import Recipe

# Row kinds a search may target; the index tags every vector row with one of these.
Kind = Literal["image", "text", "recipe"]
KINDS: tuple[str, ...] = ("image", "text", "recipe")

FilterValue = str | int | float | bool
RangeOp = Literal["gt", "gte", "lt", "lte"]
# Equality, any-of (a list) or a range ({"gte": 2, "lte": 4}); the index validates names.
FilterCondition = FilterValue | list[FilterValue] | dict[RangeOp, FilterValue]


def _strip_non_empty(value: str, what: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{what} must not be empty")
    return stripped


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipeIn(_Strict):
    title: str = Field(description="Dish name", examples=["김치찌개"])
    ingredients: list[str] = Field(default_factory=list, examples=[["김치", "돼지고기", "두부"]])
    instructions: list[str] = Field(default_factory=list, examples=[["김치를 볶는다."]])

    @field_validator("title")
    @classmethod
    def _title_not_empty(cls, value: str) -> str:
        return _strip_non_empty(value, "recipe title")

    def to_recipe(self) -> Recipe:
        return Recipe(
            title=self.title,
            ingredients=tuple(self.ingredients),
            instructions=tuple(self.instructions),
        )


class _ExactlyOne(_Strict):
    """Exactly one of the fields named in ``ONE_OF`` must be set."""

    ONE_OF: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _exactly_one(self) -> _ExactlyOne:
        given = [name for name in self.ONE_OF if getattr(self, name) is not None]
        if len(given) != 1:
            expected = ", ".join(self.ONE_OF)
            found = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of {expected} (got {found})")
        return self

    @property
    def modality(self) -> str:
        return next(name for name in self.ONE_OF if getattr(self, name) is not None)


class EmbedInput(_ExactlyOne):
    """One thing to embed: a text, an image (base64 or data URI) or a recipe."""

    ONE_OF: ClassVar[tuple[str, ...]] = ("text", "image", "recipe")

    text: str | None = Field(None, examples=["spicy pork stew"])
    image: str | None = Field(None, description="Base64 image bytes or a data: URI")
    recipe: RecipeIn | None = None

    @field_validator("text")
    @classmethod
    def _text_not_empty(cls, value: str | None) -> str | None:
        return None if value is None else _strip_non_empty(value, "text")

    @field_validator("image")
    @classmethod
    def _image_not_empty(cls, value: str | None) -> str | None:
        return None if value is None else _strip_non_empty(value, "image")


class SearchQuery(EmbedInput):
    """What to search with: any embeddable input, a raw vector or an existing item."""

    ONE_OF: ClassVar[tuple[str, ...]] = ("text", "image", "recipe", "vector", "item_id")

    vector: list[float] | None = Field(None, description="A query vector of the model's dim")
    item_id: str | None = Field(None, description="Search with this item's stored vectors")

    @field_validator("vector")
    @classmethod
    def _vector_finite(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not all(math.isfinite(x) for x in value):
            raise ValueError("vector values must be finite numbers")
        if not any(value):
            raise ValueError("vector must not be all zeros")
        return value

    @field_validator("item_id")
    @classmethod
    def _item_id_not_empty(cls, value: str | None) -> str | None:
        return None if value is None else _strip_non_empty(value, "item_id")


class EmbedRequest(_Strict):
    inputs: list[EmbedInput] = Field(min_length=1, description="Embedded in order")


class EmbedResponse(BaseModel):
    model: str = Field(description="Fingerprint of the encoder that made the vectors")
    dim: int
    embeddings: list[list[float]] = Field(description="One L2-normalised vector per input")


class SearchRequest(_Strict):
    query: SearchQuery
    k: int = Field(10, ge=1, description="How many items to return (at most MMSEARCH_MAX_K)")
    kinds: list[Kind] | None = Field(None, description="Row kinds to search; default all")
    filter: dict[str, FilterCondition] | None = Field(
        None,
        description="Metadata filters, all must hold: equality, any of a list, or a range",
        examples=[{"cuisine": "한식"}, {"cuisine": ["한식", "중식"]}],
    )


class Match(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity of the best matching row")
    rank: int = Field(description="1-based")
    kind: str = Field(description="Kind of the row that matched best")
    label: str | None = None
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    matches: list[Match]
    index_version: str
    took_ms: float


class ItemOut(BaseModel):
    id: str
    label: str | None = None
    metadata: dict[str, Any]
    kinds: list[str]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    model: str
    index_version: str
    items: int


class NotReadyOut(BaseModel):
    status: Literal["not ready"] = "not ready"
    detail: str
    model: str | None = None
    index_version: str | None = None


class ErrorOut(BaseModel):
    detail: str


class ReindexIn(_Strict):
    source: str = Field(description="Dataset path as seen by the worker")
    format: str = Field(description="Dataset format", examples=["kfood"])
    factory: str = Field("Flat", description="FAISS index factory string")

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        return _strip_non_empty(value, "source")


class ReindexAccepted(BaseModel):
    job_id: str
    state: Literal["queued"] = "queued"


class JobOut(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: float = Field(ge=0.0, le=1.0)
    index_version: str | None = None
    error: str | None = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the ``{"detail"}`` error body."""
    return {status: {"model": ErrorOut} for status in statuses}
