"""``mmsearch bench serve``: check the options, run the side-by-side measurement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from service.commands import CommandInputError

if TYPE_CHECKING:
    from service.benchmarks.load import Code
    from service.benchmarks.serve import ServeBenchOptions

VECTOR_ENCODINGS = ("json", "base64")
HTTP_STACKS = ("auto", "h11", "httptools")
# A row's own keys (service.benchmarks.serve): a --code label is a key beside them.
ROW_KEYS = {"raw", "ceiling", "chroma", "size", "factory", "c", "build_s", "recall_at_10"}


def parse_codes(values: list[str], default_encoding: str) -> list[Code]:
    """``LABEL[:ENCODING[:HTTP]]=DIR``: each DIR a checkout whose ``mmsearch serve`` is
    measured, sent vectors as ENCODING (json or base64; ``--vector-encoding`` when not
    given), on the HTTP stack ``MMSEARCH_HTTP=HTTP`` (when given: one checkout, two stacks)."""
    from service.benchmarks.load import Code

    codes = []
    for value in values:
        name, sep, path = value.partition("=")
        label, _, rest = name.partition(":")
        encoding, _, http = rest.partition(":")
        if not sep or not label or not path:
            raise CommandInputError(f"--code takes LABEL[:ENCODING[:HTTP]]=DIR, got {value!r}")
        encoding = encoding or default_encoding
        if encoding not in VECTOR_ENCODINGS:
            raise CommandInputError(f"--code {label}: the encoding is one of json, base64")
        if http and http not in HTTP_STACKS:
            raise CommandInputError(
                f"--code {label}: the HTTP stack is one of auto, h11, httptools"
            )
        folder = Path(path).resolve()
        if not (folder / "service" / "cli.py").is_file():
            raise CommandInputError(f"--code {label}: {folder} holds no service/cli.py")
        codes.append(Code(label, folder, encoding, http or None))
    if len({code.label for code in codes}) != len(codes):
        raise CommandInputError("--code labels must differ")
    for label in (code.label for code in codes):
        if label in ROW_KEYS:
            raise CommandInputError(f"--code label {label!r} names a column; pick another")
    return codes


def with_code_env(codes: list[Code], values: list[str]) -> list[Code]:
    """``LABEL:NAME=VALUE``: one more environment variable for that label's server, e.g.
    ``w2:MMSEARCH_WORKERS=2`` (one checkout measured two ways in one run)."""
    from dataclasses import replace

    extra: dict[str, list[tuple[str, str]]] = {}
    for value in values:
        label, _, assignment = value.partition(":")
        name, sep, setting = assignment.partition("=")
        if not label or not name or not sep:
            raise CommandInputError(f"--code-env takes LABEL:NAME=VALUE, got {value!r}")
        if label not in {code.label for code in codes}:
            raise CommandInputError(f"--code-env {value!r}: no --code labelled {label!r}")
        extra.setdefault(label, []).append((name, setting))
    return [replace(code, env=code.env + tuple(extra.get(code.label, ()))) for code in codes]


def check_plot(plot_out: Path | None) -> None:
    """Before minutes of measuring: the plot needs matplotlib (the ``bench`` extra)."""
    import importlib.util

    if plot_out is not None and importlib.util.find_spec("matplotlib") is None:
        raise CommandInputError("--plot needs matplotlib: pip install 'mmsearch[bench]'")


def check_options(
    sizes: list[int], concurrency: list[int], seconds: float, encoding: str, dim: int
) -> None:
    if any(size < 10 for size in sizes):
        raise CommandInputError("--sizes must be at least 10 vectors")
    if any(c < 1 for c in concurrency):
        raise CommandInputError("--concurrency must be at least 1")
    if seconds <= 0:
        raise CommandInputError("--seconds must be positive")
    if dim < 2:
        raise CommandInputError("--dim must be at least 2")
    if encoding not in VECTOR_ENCODINGS:
        raise CommandInputError(f"--vector-encoding is one of {', '.join(VECTOR_ENCODINGS)}")


def run_and_report(
    options: ServeBenchOptions, *, json_out: Path | None, plot_out: Path | None
) -> str:
    """Run it; write the JSON and the plot if asked; the table and the peer's figures."""
    from service.benchmarks.report import plot, table, write_json
    from service.benchmarks.serve import log_to_stderr, run_serve_bench

    rows = run_serve_bench(options, log_to_stderr)
    labels = [code.label for code in options.codes] or ["service"]
    if json_out is not None:
        write_json(rows, json_out)
    if plot_out is not None:
        plot(rows, labels, plot_out)
    peers = [f"chromadb at {r['size']:,}: {json.dumps(r['chroma'])}" for r in rows if "chroma" in r]
    return "\n".join([table(rows, labels), *peers])
