"""``mmsearch serve``: the uvicorn options for the settings, worker processes included.

One process serves requests on one event loop, and FAISS and the encoder release
the GIL only inside their own calls: ``MMSEARCH_WORKERS`` runs several processes on
one port, each with its own model and snapshot in memory. They share nothing but
the index directory, so they need Redis: in-process re-index jobs would live in
one worker, invisible to a status request that lands on another, and a publish
would reach only the worker that ran the job.
"""

from __future__ import annotations

from typing import Any

from index.backends import MILVUS
from index.milvus_index import is_lite_uri
from service.commands import CommandInputError
from service.settings import Settings

# Each worker process builds its own app from the environment (uvicorn's factory mode).
APP_FACTORY = "service.app:create_app"


def check_single_process_milvus_lite(settings: Settings) -> None:
    """CommandInputError when Milvus Lite would be opened by more than one process:
    its file opens in one process only, but several API workers are several processes,
    and with Redis the re-index jobs run in separate ``mmsearch worker`` processes.
    A server URI (a Milvus server, or ``milvus-lite server``) is shared by any number."""
    if settings.index_backend != MILVUS or not is_lite_uri(str(settings.milvus_uri)):
        return
    if settings.workers > 1 or settings.redis_url:
        raise CommandInputError(
            "Milvus Lite (MMSEARCH_MILVUS_URI="
            f"{settings.milvus_uri}) opens in one process only: with MMSEARCH_WORKERS > 1 or "
            "MMSEARCH_REDIS_URL (jobs in mmsearch worker processes), use a Milvus server "
            "(http://host:19530), or on one machine Milvus Lite's own server: "
            "`milvus-lite server --data-dir DIR --port 19530` and http://127.0.0.1:19530"
        )


def http_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's ``http`` and ``loop``; CommandInputError for httptools when not installed."""
    from service.http_stack import fast_stack_available, protocol_options

    if settings.http == "httptools" and not fast_stack_available():
        raise CommandInputError(
            "MMSEARCH_HTTP=httptools needs the httptools and uvloop packages "
            "(pip install httptools uvloop), or MMSEARCH_HTTP=auto|h11"
        )
    return protocol_options(settings.http)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``; CommandInputError for workers without Redis."""
    from service.app import create_app

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        **http_options(settings),
    }
    check_single_process_milvus_lite(settings)
    if settings.workers == 1:
        return {"app": create_app(settings), **options}
    if not settings.redis_url:
        raise CommandInputError(
            f"MMSEARCH_WORKERS={settings.workers} needs MMSEARCH_REDIS_URL: re-index jobs "
            "run in-process without Redis, and one worker's jobs and snapshot updates "
            "would be invisible to the others"
        )
    return {"app": APP_FACTORY, "factory": True, "workers": settings.workers, **options}
