"""Choosing a device and building an encoder from a one-string spec.

Specs (``MMSEARCH_MODEL`` and the CLI use these):

- ``food-v1`` — the default: the project's own trained bundle, shipped inside the
  package (``models/weights/food-v1``, float16). Its fingerprint is pinned here, so
  changed or truncated files are refused rather than served.
- ``offline`` — the untrained towers (:class:`~models.encoders.offline.OfflineEncoder`).
- ``openclip:ARCH`` or ``openclip:ARCH:PRETRAINED`` — any open_clip model;
  PRETRAINED is a tag (``laion2b_s34b_b79k``), a local checkpoint path, or
  ``hf-hub:org/name`` (``openclip:hf-hub:org/name`` works too). Only the first
  two colons split the spec, so PRETRAINED may contain colons.
- ``bundle:PATH`` — a trained bundle (needs ``models.bundle``) or an ensemble of
  bundles (:mod:`models.ensemble`).

This module imports no backend at import time: each is loaded when asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from models.encoders.base import Encoder

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Shipped bundle name -> the fingerprint it must load with (``make bundle`` prints it).
SHIPPED_MODELS: dict[str, str] = {}
DEFAULT_MODEL = "food-v1"

SPEC_FORMS = (
    *(f"'{name}' (shipped)" for name in SHIPPED_MODELS),
    "'offline'",
    "'openclip:ARCH' / 'openclip:ARCH:PRETRAINED' (tag, checkpoint path or hf-hub:org/name)",
    "'bundle:PATH'",
)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; validates explicit choices."""
    import torch

    choice = (device or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if ":" in choice:
            index = choice.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ValueError(
                    f"device {device!r}: no such CUDA device ({torch.cuda.device_count()} visible)"
                )
        return choice
    raise ValueError(f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _load_bundle(path: str, device: str) -> Encoder:
    try:
        module = importlib.import_module("models.bundle")
    except ModuleNotFoundError as exc:
        if exc.name != "models.bundle":
            raise
        raise ValueError(
            f"encoder spec 'bundle:{path}': trained bundles arrive with issue 3 "
            "(models.bundle is not available yet); use 'offline' or 'openclip:...'"
        ) from exc
    load_bundle = getattr(module, "load_bundle", None)
    if load_bundle is None:
        raise ValueError("models.bundle has no load_bundle(path, device); cannot load bundles")
    from models.ensemble import is_ensemble, load_ensemble

    if is_ensemble(Path(path)):
        return load_ensemble(Path(path), device)
    encoder: Encoder = load_bundle(Path(path), device)
    return encoder


def model_display_name(spec: str) -> str:
    """The spec as a user may see it: a bundle by its folder name, never a server path."""
    spec = spec.strip()
    if spec.startswith("bundle:"):
        return "bundle:" + Path(spec.removeprefix("bundle:")).name
    if spec.startswith("openclip:") and ("/" in spec or "\\" in spec):
        arch = spec.split(":", 2)[1]
        return f"openclip:{arch}" if arch not in ("hf-hub", "local-dir") else spec
    return spec


def shipped_model_dir(name: str) -> Path:
    return WEIGHTS_DIR / name


def _load_shipped(name: str, device: str) -> Encoder:
    path = shipped_model_dir(name)
    if not (path / "bundle.json").is_file():
        raise ValueError(
            f"the shipped model {name!r} is missing from {path}: reinstall the package "
            "or rebuild it with `make bundle`"
        )
    encoder = _load_bundle(str(path), device)
    if encoder.fingerprint != SHIPPED_MODELS[name]:
        raise ValueError(
            f"the shipped model {name!r} in {path} has fingerprint {encoder.fingerprint}, "
            f"not the pinned {SHIPPED_MODELS[name]}: its files were changed"
        )
    return encoder


def load_encoder(
    spec: str = "offline", *, device: str = "auto", cache_dir: Path | None = None
) -> Encoder:
    """Build the encoder that ``spec`` names (see the module docstring)."""
    if not isinstance(spec, str):
        raise ValueError(f"encoder spec must be a string, got {type(spec).__name__}")
    spec = spec.strip()
    match spec.split(":", 2):
        case [name] if name in SHIPPED_MODELS:
            return _load_shipped(name, resolve_device(device))
        case ["offline"]:
            from models.encoders.offline import OfflineEncoder

            return OfflineEncoder(device=device, cache_dir=cache_dir)
        case ["openclip", arch] if arch:
            from models.encoders.openclip import OpenClipEncoder

            return OpenClipEncoder(arch, None, device=device)
        case ["openclip", ("hf-hub" | "local-dir") as schema, name] if name:
            from models.encoders.openclip import OpenClipEncoder

            return OpenClipEncoder(f"{schema}:{name}", None, device=device)
        case ["openclip", arch, pretrained] if arch and pretrained:
            from models.encoders.openclip import OpenClipEncoder

            return OpenClipEncoder(arch, pretrained, device=device)
        case ["bundle", path, *rest] if path:
            return _load_bundle(":".join([path, *rest]), resolve_device(device))
        case _:
            raise ValueError(
                f"unknown encoder spec {spec!r}; valid forms: " + ", ".join(SPEC_FORMS)
            )
