"""The ``mmsearch`` command line: serve, worker, index, search.

Each subcommand is one small function that parses its options, calls its body in
``service.commands`` (imported when the command runs, so ``--help`` is fast) and
prints. ``train``, ``eval`` and ``bench`` register the same way. ``main(argv)``
returns the exit status instead of exiting, so tests run the CLI in-process; user
errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import redis
import typer

from index.build import BuildError
from index.layout import SnapshotError
from index.snapshot import InvalidQueryError
from models.datasets import DatasetError
from models.images import InvalidImageError
from service.commands import CommandInputError
from service.settings import Settings

if TYPE_CHECKING:
    from index.manifest import Manifest
    from service.commands.querying import SearchResult

app = typer.Typer(
    name="mmsearch",
    help="Multimodal (image / text / recipe) retrieval service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

IndexDirOption = Annotated[
    Path | None, typer.Option("--index-dir", help="Snapshot directory [env MMSEARCH_INDEX_DIR]")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Encoder spec [env MMSEARCH_MODEL, default offline]")
]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env MMSEARCH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env MMSEARCH_PORT]")] = None,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from service.app import create_app

    settings = load_settings(host=host, port=port)
    configure_logging(settings)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
    )


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit once the queue is empty")] = False,
) -> None:
    """Consume re-index jobs from Redis (needs MMSEARCH_REDIS_URL)."""
    from service.worker import run_worker

    settings = load_settings()
    if not settings.redis_url:
        raise CommandInputError("mmsearch worker needs MMSEARCH_REDIS_URL")
    configure_logging(settings)
    run_worker(settings, burst=burst)


@app.command("index")
def index_command(
    source: Annotated[Path, typer.Argument(help="Dataset file or directory")],
    fmt: Annotated[str, typer.Option("--format", help="Dataset format, e.g. kfood")],
    index_dir: IndexDirOption = None,
    factory: Annotated[str, typer.Option(help="FAISS index factory string")] = "Flat",
    batch_size: Annotated[int, typer.Option(help="Items encoded per batch")] = 32,
    model: ModelOption = None,
) -> None:
    """Build a snapshot of SOURCE and make it live."""
    from service.commands.indexing import index_catalog

    settings = load_settings(index_dir=index_dir, model=model)
    with progress_bar("indexing") as report:
        manifest = index_catalog(
            source, fmt, settings, factory=factory, batch_size=batch_size, progress=report
        )
    print_manifest(manifest)


@app.command()
def search(
    index_dir: IndexDirOption = None,
    text: Annotated[str | None, typer.Option(help="Text query")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file query")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results")] = 10,
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds: image,recipe")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    model: ModelOption = None,
) -> None:
    """Search the live snapshot with a text or an image."""
    from service.commands.querying import search_snapshot

    settings = load_settings(index_dir=index_dir, model=model)
    kind_list = [kind.strip() for kind in kinds.split(",") if kind.strip()] if kinds else None
    result = search_snapshot(settings, text=text, image=image, k=k, kinds=kind_list)
    print(search_json(result) if as_json else search_table(result))


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A tqdm bar on stderr, driven by the builder's progress(done, total) callback.

    The bar appears at the first report, so input errors found before the build
    starts are not preceded by an empty bar.
    """
    from tqdm import tqdm

    bars: list[tqdm[Any]] = []

    def report(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(desc=description, unit="item", file=sys.stderr, dynamic_ncols=True))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield report
    finally:
        for bar in bars:
            bar.close()


def print_manifest(manifest: Manifest) -> None:
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(manifest.kinds.items()))
    print(f"published snapshot {manifest.version}")
    print(f"  items    {manifest.n_items} ({manifest.skipped} skipped)")
    print(f"  vectors  {manifest.n_vectors} ({kinds})")
    print(f"  index    {manifest.factory}, dim {manifest.dim}, metric {manifest.metric}")
    print(f"  model    {manifest.model_fingerprint}")


def search_json(result: SearchResult) -> str:
    """The same shape as the HTTP API's search response (``id``, not ``item_id``)."""
    matches = [
        {
            "id": match.item_id,
            "score": match.score,
            "rank": match.rank,
            "kind": match.kind,
            "label": match.label,
            "metadata": match.metadata,
        }
        for match in result.matches
    ]
    payload = {"matches": matches, "index_version": result.index_version}
    return json.dumps(payload, ensure_ascii=False, indent=2, default=str)


def search_table(result: SearchResult) -> str:
    lines = [f"index version {result.index_version}", "rank   score  kind    item"]
    for match in result.matches:
        title = match.metadata.get("title") or match.label or ""
        lines.append(
            f"{match.rank:>4}  {match.score:6.3f}  {match.kind:<6}  {match.item_id}  {title}"
        )
    return "\n".join(lines)


# Errors caused by what the user asked for: one line on stderr, no traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (CommandInputError, InvalidQueryError)
RUNTIME_ERRORS: tuple[type[Exception], ...] = (
    BuildError,
    DatasetError,
    SnapshotError,
    InvalidImageError,
    redis.exceptions.ConnectionError,
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failed, 2 bad input)."""
    command = typer.main.get_command(app)
    try:
        # standalone: typer prints usage errors and help itself, then raises SystemExit.
        command.main(args=argv, prog_name="mmsearch", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except INPUT_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RUNTIME_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
