"""``python -m tests.service.tiny_worker``: the real ``mmsearch worker`` command with the
tiny encoder in place of the model, so worker tests start in seconds.

``TINY_WORKER_ENCODE_DELAY_S`` (default 0) slows every encode call, so a build lasts
long enough to be killed, or overtaken, mid-way. Settings come from the environment
as for ``mmsearch worker`` (tests.service.jobs_support.service_env).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import service.tasks
from models.types import Recipe
from service.cli import main
from tests.index.tiny_encoder import TinyEncoder

DELAY_ENV = "TINY_WORKER_ENCODE_DELAY_S"


class SlowTinyEncoder(TinyEncoder):
    def __init__(self, delay_s: float) -> None:
        super().__init__(dim=32, seed=0)
        self._delay_s = delay_s

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        time.sleep(self._delay_s)
        return super().encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self._delay_s)
        return super().encode_texts(texts)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        time.sleep(self._delay_s)
        return super().encode_recipes(recipes)


def load_tiny_encoder(spec: str, *, device: str = "cpu", cache_dir: Path | None = None) -> Any:
    return SlowTinyEncoder(float(os.environ.get(DELAY_ENV, "0")))


if __name__ == "__main__":
    service.tasks.load_encoder = load_tiny_encoder  # type: ignore[assignment]
    sys.exit(main(["worker"]))
