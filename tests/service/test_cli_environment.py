"""The CLI sets OMP_WAIT_POLICY before any OpenMP runtime (torch, faiss) is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Records OMP_WAIT_POLICY at the moment torch is first imported, then imports the CLI.
PROBE = """
import json, os, sys
seen = {}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "faiss") and name not in seen:
            seen[name] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Watch())
import service.cli
print(json.dumps({"at_import": seen, "after": os.environ.get("OMP_WAIT_POLICY")}))
"""


def run_probe(policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=REPO_ROOT, capture_output=True, check=True
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


@pytest.mark.slow
def test_passive_is_set_before_torch_and_faiss_load() -> None:
    seen = run_probe(None)

    assert seen["after"] == "PASSIVE"
    assert seen["at_import"] and set(seen["at_import"].values()) == {"PASSIVE"}


@pytest.mark.slow
def test_a_policy_the_user_set_wins() -> None:
    assert run_probe("ACTIVE")["after"] == "ACTIVE"


def test_the_images_set_it_too() -> None:
    for dockerfile in sorted((REPO_ROOT / "docker").glob("Dockerfile*")):
        assert "OMP_WAIT_POLICY=PASSIVE" in dockerfile.read_text(), dockerfile
