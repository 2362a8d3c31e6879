"""``python -m tests.e2e.tiny_mmsearch serve|worker [options]``: the real ``mmsearch``
command with the tiny encoder in place of the model, in the API (its lifespan loader)
and in the job runner alike, so several processes start in seconds. Settings come from
the environment as for ``mmsearch`` (tests.service.jobs_support.service_env).
"""

from __future__ import annotations

import sys

import service.state
import service.tasks
from service.cli import main
from tests.service.tiny_worker import load_tiny_encoder

if __name__ == "__main__":
    service.state.load_encoder = load_tiny_encoder  # type: ignore[assignment]
    service.tasks.load_encoder = load_tiny_encoder  # type: ignore[assignment]
    sys.exit(main(sys.argv[1:]))
