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


def _default(value: str) -> str:
    """The default of a ``${NAME:-default}`` compose interpolation (the value if none)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
    return match.group(1) if match else str(value)


def test_the_milvus_profile_runs_api_replicas_behind_a_load_balancer() -> None:
    services = compose()["services"]
    api, lb = services["api-milvus"], services["lb-milvus"]
    assert "ports" not in api  # replicas cannot share a host port
    assert int(_default(api["deploy"]["replicas"])) >= 2
    assert int(_default(services["worker-milvus"]["deploy"]["replicas"])) >= 1
    assert lb["profiles"] == ["milvus"]
    host_port, container_port = lb["ports"][0].rsplit(":", 1)
    assert (_default(host_port), container_port) == ("8000", "80")
    assert lb["depends_on"]["api-milvus"]["condition"] == "service_healthy"
    config_path, mounted = lb["volumes"][0].split(":")[:2]
    assert mounted == "/etc/nginx/conf.d/default.conf"
    config = (ROOT / config_path).read_text()
    assert re.search(r"^\s*listen 80;", config, re.M)
    [upstream] = re.findall(r"upstream (\w+) \{\s*server ([\w-]+):(\d+);", config)
    assert upstream[1:] == ("api-milvus", "8000")
    assert f"proxy_pass http://{upstream[0]};" in config
    assert api["command"][-1] == "8000"
