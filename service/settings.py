"""Service configuration, read from the environment (prefix ``MMSEARCH_``).

Settings are built once by the app factory or the CLI and passed down; nothing
reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.backends import IndexBackend
from models.lexicon import LEXICONS
from models.registry import DEFAULT_MODEL

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the API and the worker; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_", env_file=None, extra="ignore")

    model: str = Field(
        DEFAULT_MODEL,
        description=(
            "Encoder spec: food-v1 (the shipped trained model) | offline (untrained towers) | "
            "openclip:ARCH[:PRETRAINED] | bundle:PATH"
        ),
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    index_dir: Path = Field(Path("var/index"), description="Where snapshots live")
    index_backend: Literal["faiss", "milvus"] = Field(
        "faiss",
        description="Where vectors are searched: faiss (in each API process) | milvus "
        "(MMSEARCH_MILVUS_URI); catalog and prototypes stay in index_dir either way",
    )
    milvus_uri: str | None = Field(
        None,
        description="Milvus for the milvus backend: a path ending in .db (Milvus Lite, "
        "embedded, one process) or http://host:19530 (a server, shared by replicas and workers)",
    )
    cache_dir: Path | None = Field(None, description="Model cache (default ~/.cache/mmsearch)")
    redis_url: str | None = Field(
        None, description="Redis for the job queue and snapshot events; unset = in-process jobs"
    )
    queue_name: str = Field("mmsearch-reindex", description="RQ queue name")
    job_timeout_s: int = Field(6 * 3600, description="Longest a re-index job may run")
    reindex_chunk_size: int = Field(
        20_000,
        ge=1,
        description="With Redis, a re-index of more records than this is split into chunk "
        "jobs of about this many records, encoded by all workers in parallel",
    )
    data_roots: list[Path] | None = Field(
        None,
        description="Folders re-index sources must lie in (JSON list); unset: any path",
    )
    min_kept_share: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="A re-index that keeps less than this share of the live vectors is refused "
        "unless forced (0: never refused)",
    )
    keep_snapshots: int = Field(
        2,
        ge=0,
        description="Older snapshots kept beside the live one; the rest are deleted after "
        "each publish (never one that a request still uses)",
    )
    flat_max_vectors: int = Field(
        20_000,
        ge=0,
        description="Factory auto: exact (Flat) search up to this many 384-d vectors "
        "(scaled by dim/384), HNSW above",
    )
    target_recall: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="Recall@10 the index's efSearch / nprobe are tuned to at build time",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin routes; unset = admin routes refuse (403)"
    )
    max_upload_bytes: int = Field(10 * MIB, description="Largest accepted upload or base64 image")
    max_image_pixels: int = Field(40_000_000, description="Decompression-bomb guard")
    max_inputs: int = Field(64, description="Most inputs in one /embed call")
    max_request_text_chars: int = Field(
        16_384,
        description="Most characters of text (texts, recipes, tags) embedded for one request",
    )
    max_k: int = Field(1000, description="Largest k accepted by /search")
    max_batch: int = Field(
        32, ge=1, description="Most inputs the encoder runs at once, gathered across requests"
    )
    max_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="How long a batch waits to fill up; 0 = greedy (best on CPU), 2-5 on a GPU",
    )
    inline_search_ms: float = Field(
        2.0,
        ge=0.0,
        description="A search whose measured average cost is at most this runs on the event "
        "loop instead of the threadpool (saves the hop: HNSW yes, Flat over 100k rows no); "
        "0 = always the threadpool",
    )
    query_lexicon: str = Field(
        "en-ko-food",
        description="Bilingual lexicon that expands text queries (models/lexicon.py); 'none': off",
    )
    reload_interval_s: float = Field(
        2.0, description="How often the API checks CURRENT for a new snapshot"
    )
    host: str = Field("127.0.0.1", description="Bind address for `mmsearch serve`")
    port: int = Field(8000, description="Port for `mmsearch serve`")
    workers: int = Field(
        1, ge=1, description="uvicorn worker processes for `mmsearch serve`; over 1 needs Redis"
    )
    http: Literal["auto", "h11", "httptools"] = Field(
        "auto",
        description="HTTP parser of `mmsearch serve`: httptools on uvloop (auto, when both "
        "are installed) or h11 on asyncio (pure Python, slower)",
    )
    log_level: str = Field("info", description="Python logging level")

    @model_validator(mode="after")
    def _milvus_has_uri(self) -> Settings:
        if self.index_backend == "milvus" and not self.milvus_uri:
            raise ValueError("MMSEARCH_INDEX_BACKEND=milvus needs MMSEARCH_MILVUS_URI")
        return self

    def vector_backend(self) -> IndexBackend:
        """A new backend handle (for Milvus, its own connection, opened on first use)."""
        return IndexBackend(self.index_backend, self.milvus_uri)

    @field_validator("query_lexicon")
    @classmethod
    def _known_lexicon(cls, value: str) -> str:
        if value != "none" and value not in LEXICONS:
            raise ValueError(
                f"unknown query lexicon {value!r}; expected one of {LEXICONS} or 'none'"
            )
        return value
