"""Fixtures for the training tests: the tiny deterministic encoder of the index tests."""

from __future__ import annotations

import pytest

from tests.index.tiny_encoder import TinyEncoder


@pytest.fixture(scope="session")
def encoder() -> TinyEncoder:
    return TinyEncoder(dim=32, seed=0)
