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

from index.milvus_index import is_lite_uri
from service.commands import CommandInputError
from service.settings import Settings

# Each worker process builds its own app from the environment (uvicorn's factory mode).
APP_FACTORY = "service.app:create_app"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``; CommandInputError for workers without Redis."""
    from service.app import create_app
    from service.protocol import JsonErrorH11Protocol

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": JsonErrorH11Protocol,
    }
    if settings.workers == 1:
        return {"app": create_app(settings), **options}
    if not settings.redis_url:
        raise CommandInputError(
            f"MMSEARCH_WORKERS={settings.workers} needs MMSEARCH_REDIS_URL: re-index jobs "
            "run in-process without Redis, and one worker's jobs and snapshot updates "
            "would be invisible to the others"
        )
    if settings.index_backend == "milvus" and is_lite_uri(str(settings.milvus_uri)):
        raise CommandInputError(
            f"MMSEARCH_WORKERS={settings.workers} needs a Milvus server as MMSEARCH_MILVUS_URI: "
            f"Milvus Lite ({settings.milvus_uri}) opens in one process only"
        )
    return {"app": APP_FACTORY, "factory": True, "workers": settings.workers, **options}
