"""A real uvicorn serving the tiny encoder over a small synthetic catalog.

``python -m tests.e2e.tiny_server PORT WORKDIR [auto|h11|httptools]`` builds the snapshot
in WORKDIR and serves until stopped on that HTTP stack (``service/http_stack.py``): fast to
start, no model weights, every route live (admin too, token
``tests.service.helpers.ADMIN_TOKEN``, in-process jobs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import uvicorn

from index.build import build_snapshot
from service.app import create_app
from service.http_stack import HttpChoice, protocol_options
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings

N_ITEMS = 24


def main(argv: list[str]) -> None:
    port, workdir = int(argv[0]), Path(argv[1])
    http = cast(HttpChoice, argv[2] if len(argv) > 2 else "auto")
    encoder = TinyEncoder(dim=32, seed=0)
    build_snapshot(make_records(workdir / "images", N_ITEMS), encoder, workdir / "index")
    app = create_app(make_settings(workdir / "index"), encoder=encoder)
    options = protocol_options(http)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **options)


if __name__ == "__main__":
    main(sys.argv[1:])
