"""``python -m tests.service.print_env serve ...``: writes the MMSEARCH_* environment it
was started with to MMSEARCH_INDEX_DIR/env.json (the bench's server environment, seen)."""

from __future__ import annotations

import json
import os
from pathlib import Path

if __name__ == "__main__":
    seen = {name: value for name, value in os.environ.items() if name.startswith("MMSEARCH_")}
    out = Path(os.environ["MMSEARCH_INDEX_DIR"]) / "env.json"
    out.write_text(json.dumps(seen), encoding="utf-8")
