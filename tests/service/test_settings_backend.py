"""MMSEARCH_INDEX_BACKEND / MMSEARCH_MILVUS_URI, and the FAISS path never loading pymilvus."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.test_architecture import ROOT


def test_faiss_is_the_default_backend() -> None:
    backend = Settings().vector_backend()
    assert (backend.name, backend.milvus) == ("faiss", None)


def test_milvus_needs_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSEARCH_INDEX_BACKEND", "milvus")
    with pytest.raises(ValidationError, match="MMSEARCH_MILVUS_URI"):
        Settings()
    monkeypatch.setenv("MMSEARCH_MILVUS_URI", "http://milvus:19530")
    store = Settings().vector_backend().milvus
    assert store is not None and store.uri == "http://milvus:19530"


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSEARCH_INDEX_BACKEND", "elastic")
    with pytest.raises(ValidationError, match="faiss"):
        Settings()


def test_the_faiss_path_never_imports_pymilvus() -> None:
    code = (
        "import sys, service.app, service.cli, service.worker, index.build, index.live\n"
        "loaded = sorted(m for m in ('pymilvus', 'milvus_lite') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
