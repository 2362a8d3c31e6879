"""No Docker engine runs here: check what can be checked of the images and compose file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from service.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def commands() -> list[list[str]]:
    found = [
        service["command"]
        for service in compose()["services"].values()
        if str(service.get("image", "")).startswith("mmsearch")
    ]
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("CMD "):
                found.append(json.loads(line[4:]))
    return found


def test_dockerfiles_exist_and_copy_the_packages() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile", "Dockerfile.cuda"}
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert re.search(r"^FROM \S+", text, re.M), dockerfile
        for package in ("models", "index", "service"):
            assert f"COPY {package} ./{package}" in text, (dockerfile, package)


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv))
def test_every_image_command_is_a_real_cli_command(argv: list[str]) -> None:
    assert argv[0] == "mmsearch"
    assert main([*argv[1:], "--help"]) == 0


def test_compose_services_share_the_index_volume_and_redis() -> None:
    services = compose()["services"]
    assert "redis" in services
    for name in ("api", "worker", "api-gpu", "worker-gpu"):
        service = services[name]
        assert "index-data:/data" in service["volumes"], name
        assert service["environment"]["MMSEARCH_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["profiles"] == ["cpu"] and services["api-gpu"]["profiles"] == ["gpu"]


def test_the_milvus_profile_points_api_and_worker_at_one_milvus() -> None:
    services = compose()["services"]
    for name in ("api-milvus", "worker-milvus"):
        service = services[name]
        assert service["profiles"] == ["milvus"]
        assert "index-data:/data" in service["volumes"], name  # the catalogs stay shared
        assert service["environment"]["MMSEARCH_INDEX_BACKEND"] == "milvus"
        assert service["environment"]["MMSEARCH_MILVUS_URI"] == "http://milvus:19530"
        assert service["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert services["api-milvus"]["build"]["args"]["EXTRAS"] == "[milvus]"
    assert {"milvus", "etcd", "minio"} <= set(services)
    assert 'pip install ".${EXTRAS}"' in (ROOT / "docker" / "Dockerfile").read_text()
