"""Request and response bodies of the HTTP API (pydantic models).

Inputs carry exactly one modality each; ``/embed`` with ``"fuse": true`` treats
all its inputs as the modalities of one item and returns one fused vector. A
search query is one such input, a raw
vector, an item, a class tag, or a weighted composition of those (``compose``).
"""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)

from index.chunks import MAX_CHUNKS
from index.filters import MAX_ANY_OF
from index.ranking import DEFAULT_CLASS_WEIGHT
from models.types import Recipe
from service.vector_codec import b64_length, decode_vector

# Input bounds, published in the OpenAPI schema. A text is far longer than any encoder
# keeps (offline: 256 tokens, CLIP: 77) at MAX_TEXT_CHARS; what passes is truncated to
# the model's token limit before encoding. The total over one request is a setting
# (MMSEARCH_MAX_REQUEST_TEXT_CHARS).
MAX_TEXT_CHARS = 8192
MAX_NAME_CHARS = 1024  # item ids, class and tag names, filter values, formats
MAX_LIST_ITEMS = 256  # recipe ingredients and instructions, candidate tags
MAX_FILTER_FIELDS = 32
MAX_VECTOR_DIM = 8192
MAX_PATH_CHARS = 4096

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]

# Row kinds a search may target; the index tags every vector row with one of these.
Kind = Literal["image", "text", "recipe"]
KINDS: tuple[str, ...] = ("image", "text", "recipe")

FilterValue = Name | int | float | bool
RangeOp = Literal["gt", "gte", "lt", "lte"]
# Equality, any-of (a list) or a range ({"gte": 2, "lte": 4}); the index validates names.
FilterCondition = (
    FilterValue
    | Annotated[list[FilterValue], Field(max_length=MAX_ANY_OF)]
    | dict[RangeOp, FilterValue]
)

# UTF-16 surrogates: JSON may spell them ("\ud800"), but alone they are no character,
# and no UTF-8 consumer (SQLite, the tokenizers, Redis) can take them.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER_TYPES = frozenset({int, float, bool})


def _strip_non_empty(value: str, what: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{what} must not be empty")
    return stripped


def _reject_lone_surrogates(value: Any) -> None:
    """ValueError when any string in ``value`` (keys included) holds a lone surrogate.

    Iterative: the depth of a JSON body is the client's choice.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError(
                    "text contains a lone UTF-16 surrogate (e.g. \\ud800), which is not a "
                    "character; send valid Unicode"
                )
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            if set(map(type, item)) <= _NUMBER_TYPES:  # a vector: skipped at C speed
                continue
            pending.extend(item)


# True while a _Strict model validates input it has checked for surrogates: the models
# nested in it skip the walk (a search vector's 384 floats were walked once per level).
_UNICODE_CHECKED: ContextVar[bool] = ContextVar("unicode_checked", default=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _valid_unicode(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if _UNICODE_CHECKED.get():
            return handler(data)
        _reject_lone_surrogates(data)
        token = _UNICODE_CHECKED.set(True)
        try:
            return handler(data)
        finally:
            _UNICODE_CHECKED.reset(token)


class RecipeIn(_Strict):
    title: Text = Field(description="Dish name", examples=["김치찌개"])
    ingredients: list[Text] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS, examples=[["김치", "돼지고기", "두부"]]
    )
    instructions: list[Text] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS, examples=[["김치를 볶는다."]]
    )

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

    text: Text | None = Field(None, examples=["spicy pork stew"])
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


class QueryTerm(EmbedInput):
    """Any embeddable input, a raw vector, an existing item or a class tag."""

    ONE_OF: ClassVar[tuple[str, ...]] = (
        "text",
        "image",
        "recipe",
        "vector",
        "item_id",
        "tag",
        "vector_b64",
    )

    vector: list[float] | None = Field(
        None, max_length=MAX_VECTOR_DIM, description="A query vector of the model's dim"
    )
    vector_b64: str | None = Field(
        None,
        max_length=b64_length(MAX_VECTOR_DIM),
        description=(
            "A query vector as base64 of its little-endian float32 values (what /embed "
            'returns with "encoding": "base64"); cheaper to send and parse than a list'
        ),
    )
    item_id: Name | None = Field(None, description="Search with this item's stored vectors")
    tag: Name | None = Field(
        None,
        description="A class name: its prototype; an unknown class: the embedded tag text",
        examples=["한식"],
    )

    @field_validator("vector")
    @classmethod
    def _vector_finite(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        # sum() runs in C and a NaN or infinity makes it non-finite; only then (or on an
        # overflow of huge finite values) is each value looked at, in Python.
        if not math.isfinite(sum(value)) and not all(math.isfinite(x) for x in value):
            raise ValueError("vector values must be finite numbers")
        if not any(value):
            raise ValueError("vector must not be all zeros")
        return value

    @field_validator("vector_b64")
    @classmethod
    def _vector_b64_valid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        values = decode_vector(value)
        if not np.isfinite(values).all():
            raise ValueError("vector_b64 values must be finite numbers (no NaN or infinity)")
        if not values.any():
            raise ValueError("vector_b64 must not be all zeros")
        return value

    def raw_vector(self) -> np.ndarray | list[float] | None:
        """The raw query vector, from ``vector`` or ``vector_b64``; None for other terms."""
        if self.vector_b64 is not None:
            return decode_vector(self.vector_b64)  # validated above; decoding is cheap
        return self.vector

    @field_validator("item_id", "tag")
    @classmethod
    def _name_not_empty(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _strip_non_empty(value, str(info.field_name))


class ComposeTerm(QueryTerm):
    """One term of a query composition: an input and its weight (negative subtracts)."""

    weight: float = Field(1.0, description="Multiplies the term's unit vector", examples=[-1.0])

    @field_validator("weight")
    @classmethod
    def _weight_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("weight must be a finite number")
        return value


class SearchQuery(QueryTerm):
    """What to search with: one term, or a weighted composition of terms."""

    ONE_OF: ClassVar[tuple[str, ...]] = QueryTerm.ONE_OF + ("compose",)

    compose: list[ComposeTerm] | None = Field(
        None,
        description="Weighted terms; their weighted sum of unit vectors is normalised and searched",
        examples=[[{"text": "김치찌개", "weight": 1}, {"text": "돼지고기", "weight": -1}]],
    )

    @field_validator("compose")
    @classmethod
    def _compose_not_empty(cls, value: list[ComposeTerm] | None) -> list[ComposeTerm] | None:
        if value is not None and not value:
            raise ValueError("compose must list at least one term")
        return value


class EmbedRequest(_Strict):
    inputs: list[EmbedInput] = Field(min_length=1, description="Embedded in order")
    fuse: bool = Field(
        False,
        description=(
            "Treat the inputs as the modalities of one item (e.g. its photo and its recipe) "
            "and return one fused vector: the bundle's trained fusion model, or the "
            "normalised mean for encoders without one"
        ),
    )
    encoding: Literal["float", "base64"] = Field(
        "float",
        description=(
            "How the vectors come back: lists of floats, or base64 strings of their "
            "little-endian float32 values (what /search takes as query.vector_b64)"
        ),
    )


class EmbedResponse(BaseModel):
    model: str = Field(description="Fingerprint of the encoder that made the vectors")
    dim: int
    embeddings: list[list[float]] | list[str] = Field(
        description=(
            "One L2-normalised vector per input, or one in all with fuse: lists of floats, "
            'or with "encoding": "base64" strings of little-endian float32 values'
        )
    )
    fused: bool = False


DEFAULT_K = 10  # items per search when the request does not say

RANK_DESCRIPTION = (
    "item: score = sim(q, item), the best row's cosine similarity. "
    "hybrid: score = (1 - a) * sim(q, item) + a * sim(q, proto(class(item))), "
    "a = class_weight; items without a class keep sim(q, item)"
)


CONFIDENCE_DESCRIPTION = (
    "Estimated probability that this match is a true one for this kind of query "
    "(query modality -> matched row kind), from curves fitted on the model's validation "
    "split; null for a model without calibration (offline, open_clip)"
)
SIMILARITY_DESCRIPTION = (
    "'single': one vector per item (the default). 'set': DivE, K vectors per item "
    "compared by smooth-Chamfer; needs a bundle with a trained set head and a "
    "snapshot built with it (food-v1 has none: 422)"
)
MIN_CONFIDENCE_DESCRIPTION = (
    "Drop matches whose confidence is below this (fewer than k may come back); "
    "ignored by models without calibration"
)


MAX_RERANK_TOP = 200  # re-ranking cost grows with the candidates (one SGRAF pass each)
DEFAULT_RERANK_TOP = 50


class RerankIn(_Strict):
    """Re-score the best candidates of the vector search with a trained re-ranker."""

    model: Literal["sgraf"] = Field(
        description="The re-ranker; the model served must carry it trained (food-v1 does not yet)"
    )
    top: int = Field(
        DEFAULT_RERANK_TOP,
        ge=1,
        le=MAX_RERANK_TOP,
        description=(
            "How many of the vector search's best items are re-scored and re-ordered; "
            "items after them keep their order"
        ),
    )


class SearchRequest(_Strict):
    query: SearchQuery
    k: int = Field(DEFAULT_K, ge=1, description="How many items to return (at most MMSEARCH_MAX_K)")
    kinds: list[Kind] | None = Field(None, description="Row kinds to search; default all")
    filter: dict[Name, FilterCondition] | None = Field(
        None,
        max_length=MAX_FILTER_FIELDS,
        description=(
            "Metadata filters, all must hold: equality, any of a list, or a range "
            "(gt, gte, lt, lte); applied inside the index search"
        ),
        examples=[
            {"cuisine": "한식"},
            {"cuisine": ["한식", "중식"]},
            {"cooking_minutes": {"lte": 30}},
        ],
    )
    rank: Literal["item", "hybrid"] = Field("item", description=RANK_DESCRIPTION)
    class_weight: float = Field(
        DEFAULT_CLASS_WEIGHT, ge=0.0, le=1.0, description="a in the hybrid formula"
    )
    top_classes: int = Field(
        3, ge=0, le=100, description="Class (prototype) matches to return beside the items"
    )
    min_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description=MIN_CONFIDENCE_DESCRIPTION
    )
    rerank: RerankIn | None = Field(
        None,
        description="Re-rank the top candidates with a trained re-ranker (off by default)",
        examples=[{"model": "sgraf", "top": 50}],
    )
    similarity: Literal["single", "set"] = Field(
        "single",
        description=SIMILARITY_DESCRIPTION + ". Text, image or recipe queries",
    )


class Match(BaseModel):
    id: str
    score: float = Field(description="Ranking score: the best row's cosine similarity for 'item'")
    rank: int = Field(description="1-based")
    kind: str = Field(description="Kind of the row that matched best")
    label: str | None = None
    class_name: str | None = Field(None, description="The item's class in the prototype table")
    item_score: float | None = Field(None, description="hybrid: sim(q, item)")
    class_score: float | None = Field(None, description="hybrid: sim(q, proto(class(item)))")
    confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=CONFIDENCE_DESCRIPTION,
    )
    rerank_score: float | None = Field(
        default=None, description="The re-ranker's score, for the re-ranked top matches only"
    )
    metadata: dict[str, Any]


class ClassMatchOut(BaseModel):
    name: str
    score: float = Field(description="Cosine similarity of the query and the class prototype")
    members: int = Field(description="Items of the class in the index")
    zero_shot: bool = Field(description="True when the prototype is the embedded class name")


class SearchResponse(BaseModel):
    matches: list[Match]
    classes: list[ClassMatchOut] = Field(description="Best class prototypes for the query")
    index_version: str
    took_ms: float


class ClassOut(BaseModel):
    name: str
    members: int = Field(description="Items of the class in the index")
    support: int = Field(description="Items whose vectors make the prototype (K, or all)")
    zero_shot: bool = Field(description="True when the prototype is the embedded class name")
    description: str | None = None


class ClassesResponse(BaseModel):
    index_version: str
    class_field: str | None = Field(description="Metadata field naming classes; null: item labels")
    shots: int | None = Field(description="K support items per class; null: all members")
    seed: int
    text_weight: float = Field(description="Weight of the embedded name for classes with members")
    classes: list[ClassOut]


class TagOptions(_Strict):
    k: int = Field(5, ge=1, le=100, description="How many classes (and tags) to return")
    tags: list[Name] | None = Field(
        None,
        max_length=MAX_LIST_ITEMS,
        description="Free-form candidate tags, ranked by text-embedding similarity to the image",
        examples=[["spicy", "soup", "noodles"]],
    )

    @field_validator("tags")
    @classmethod
    def _tags_not_empty(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_strip_non_empty(tag, "tag") for tag in value]


class TagRequest(TagOptions):
    image: str = Field(description="Base64 image bytes or a data: URI")

    @field_validator("image")
    @classmethod
    def _image_not_empty(cls, value: str) -> str:
        return _strip_non_empty(value, "image")


class TagScore(BaseModel):
    tag: str
    score: float = Field(description="Cosine similarity of the image and the embedded tag")


class TagResponse(BaseModel):
    classes: list[ClassMatchOut]
    tags: list[TagScore]
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
    status: Literal["ready", "degraded"] = Field(
        "ready", description="degraded: search works, but re-index jobs cannot be queued"
    )
    detail: str | None = Field(None, description="Why the service is degraded")
    model: str = Field(description="Fingerprint of the loaded model")
    model_name: str = Field(description="The model served: 'food-v1', 'offline', 'bundle:NAME'")
    index_version: str
    items: int


class NotReadyOut(BaseModel):
    status: Literal["not ready"] = "not ready"
    detail: str
    model: str | None = None
    index_version: str | None = None


class ErrorOut(BaseModel):
    detail: str


class FieldErrorOut(BaseModel):
    type: str
    loc: list[str | int] = Field(description='Where: e.g. ["body", "query", "text"]')
    msg: str
    input: str | int | float | bool | None = Field(None, description="Short inputs only")


class UnprocessableOut(BaseModel):
    """422: a schema error (a list of field errors) or a domain error (one message)."""

    detail: str | list[FieldErrorOut]


class ReindexIn(_Strict):
    source: str = Field(max_length=MAX_PATH_CHARS, description="Dataset path as seen by the worker")
    format: Name = Field(description="Dataset format", examples=["kfood"])
    factory: Name = Field(
        "auto",
        description="FAISS index factory string, or auto: Flat for small catalogs, HNSW32 "
        "above MMSEARCH_FLAT_MAX_VECTORS, IVF-HNSW with SQ8 codes from 2M vectors",
    )
    class_field: Name | None = Field(
        None, description="Metadata field naming each item's class; default the item label"
    )
    shots: int | None = Field(None, ge=1, description="K support items per class; default all")
    seed: int = Field(0, description="Seed of the K-shot support draw")
    text_weight: float = Field(
        0.0, ge=0.0, le=1.0, description="Weight of the embedded class name for classes with items"
    )
    zero_shot_classes: dict[Name, Text | None] | list[Name] | None = Field(
        None,
        description="Extra class names (list, or {name: description}): zero-shot prototypes",
        examples=[{"떡볶이": "매콤한 떡 요리"}],
    )
    force: bool = Field(
        False,
        description="Publish even when the new snapshot keeps less than MMSEARCH_MIN_KEPT_SHARE "
        "of the live snapshot's vectors",
    )
    chunks: int | None = Field(
        None,
        ge=1,
        le=MAX_CHUNKS,
        description="With Redis: split the re-index into at most this many chunk jobs, "
        "encoded by all workers in parallel, then merged (1: one job); default: chunks of "
        "MMSEARCH_REINDEX_CHUNK_SIZE records",
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        description="With Redis: split the re-index into chunk jobs of about this many records",
    )

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        return _strip_non_empty(value, "source")

    @model_validator(mode="after")
    def _one_way_to_chunk(self) -> ReindexIn:
        if self.chunks is not None and self.chunk_size is not None:
            raise ValueError("give chunks or chunk_size, not both")
        return self


class ReindexAccepted(BaseModel):
    job_id: str
    state: Literal["queued"] = "queued"


class ReindexChangesOut(BaseModel):
    """What a re-index encoded, what it copied from the live snapshot (inputs unchanged,
    same model), and how many live items the source no longer has."""

    items_embedded: int = 0
    vectors_embedded: int = 0
    items_reused: int = 0
    vectors_reused: int = 0
    items_removed: int = 0


class JobOut(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: float = Field(ge=0.0, le=1.0)
    index_version: str | None = None
    error: str | None = None
    changes: ReindexChangesOut | None = Field(
        None, description="Set once the job succeeded: items encoded, reused and removed"
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the ``{"detail"}`` error body."""
    return {
        status: {"model": UnprocessableOut if status == 422 else ErrorOut} for status in statuses
    }
