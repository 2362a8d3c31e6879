"""Peak extra memory of the server for images of extreme aspect ratio (issue #18, item 1).

Starts ``mmsearch serve`` (real uvicorn, the model of MMSEARCH_MODEL, default
offline) on a free port with an empty index directory, warms it up with a normal
photo, then for each probe image: resets the process's peak RSS
(``/proc/PID/clear_refs``), uploads the image to ``/embed/image`` and reports the new
peak minus the RSS before the request. Linux only.

Usage: python scripts/probe_memory.py [--limit-mb 300]
Exit status 1 when a probe's extra peak is over the limit or its answer is a 5xx.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

MIB = 1024 * 1024
START_TIMEOUT_S = 300.0


def image_file(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


PROBES = {
    "8000x1 PNG": (image_file((8000, 1), "PNG"), "image/png"),
    "65535x1 GIF": (image_file((65535, 1), "GIF"), "image/gif"),
    "1x20000 PNG": (image_file((1, 20000), "PNG"), "image/png"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def wait_until_serving(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            if client.post("/embed", json={"inputs": [{"text": "warm up"}]}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    raise RuntimeError("server did not load its model in time")


def upload(client: httpx.Client, name: str, data: bytes, mime: str) -> int:
    files = {"file": (name, data, mime)}
    return client.post("/embed/image", files=files, timeout=600).status_code


def probe(client: httpx.Client, pid: int, name: str, data: bytes, mime: str) -> tuple[int, float]:
    """(HTTP status, extra peak RSS in MiB) of one upload."""
    before_kib = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    status = upload(client, name, data, mime)
    return status, (status_kib(pid, "VmHWM") - before_kib) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=float, default=300.0)
    args = parser.parse_args()
    port = free_port()
    mmsearch = Path(sys.executable).with_name("mmsearch")
    with tempfile.TemporaryDirectory() as index_dir:
        env = {**os.environ, "MMSEARCH_INDEX_DIR": index_dir, "MMSEARCH_PORT": str(port)}
        env.setdefault("MMSEARCH_LOG_LEVEL", "warning")
        server = subprocess.Popen([str(mmsearch), "serve"], env=env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                wait_until_serving(client, server)
                upload(client, "warm.png", image_file((640, 480), "PNG"), "image/png")
                failed = False
                for name, (data, mime) in PROBES.items():
                    status, extra_mb = probe(client, server.pid, name, data, mime)
                    print(
                        f"{name:12} ({len(data)} bytes): HTTP {status}, extra peak RSS "
                        f"{extra_mb:.1f} MiB"
                    )
                    failed |= status >= 500 or extra_mb > args.limit_mb
        finally:
            server.terminate()
            server.wait(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
