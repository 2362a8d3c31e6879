"""Small file helpers shared by the model code: atomic writes, weights, content hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

if TYPE_CHECKING:
    import torch

    Module = TypeVar("Module", bound=torch.nn.Module)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(fp)`` into a temporary file, then ``os.replace`` it.

    Readers see the old file or the whole new one, never half of it; a failed
    write leaves no temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of_file(path: Path | str) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_state_dict(path: Path, state: dict[str, torch.Tensor], *, half: bool = False) -> None:
    """Write a state dict as safetensors on the CPU, atomically: float32, or float16 with
    ``half`` (what ships: half the bytes; loading casts back to the model's float32)."""
    import torch
    from safetensors.torch import save

    dtype = torch.float16 if half else torch.float32
    blob = save({k: v.detach().to(dtype).cpu().contiguous() for k, v in state.items()})
    atomic_write(path, lambda fp: fp.write(blob))


def save_weights_entry(
    weights: Path, module: torch.nn.Module, config: dict[str, Any], *, half: bool = False
) -> dict[str, Any]:
    """Write ``module``'s weights (float16 with ``half``) to ``weights``; returns the
    ``bundle.json`` entry that names them: config, file name and sha256."""
    save_state_dict(weights, module.state_dict(), half=half)
    return {"config": config, "weights": weights.name, "weights_sha256": sha256_of_file(weights)}


def load_weights_entry(
    directory: Path, entry: Mapping[str, Any], build: Callable[[dict[str, Any]], Module], what: str
) -> Module:
    """The module a ``bundle.json`` entry describes, built by ``build(config)``; ValueError
    on a missing or changed weights file, or weights that do not fit the config."""
    from safetensors.torch import load_file

    weights = directory / str(entry["weights"])
    if not weights.is_file() or sha256_of_file(weights) != entry.get("weights_sha256"):
        raise ValueError(f"{what} weights {weights} are missing or do not match their sha256")
    try:
        module = build(entry["config"])
        # Float16 weights from an export load into the float32 module.
        module.load_state_dict(load_file(str(weights)), strict=True)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"{what} weights {weights} do not fit their config: {exc}") from exc
    return module
