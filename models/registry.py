"""Building an encoder from a one-string spec.

Specs (``MMSEARCH_MODEL`` and the CLI use these):

- ``food-v1`` — the default: the project's own trained bundle, shipped inside the
  package (``models/weights/food-v1``, float16). Its fingerprint is pinned here, so
  changed or truncated files are refused rather than served.
- ``offline`` — the untrained towers (:class:`~models.encoders.offline.OfflineEncoder`).
- ``openclip:ARCH`` or ``openclip:ARCH:PRETRAINED`` — any open_clip model;
  PRETRAINED is a tag (``laion2b_s34b_b79k``), a local checkpoint path, or
  ``hf-hub:org/name`` (``openclip:hf-hub:org/name`` works too). Only the first
  two colons split the spec, so PRETRAINED may contain colons.
- ``bundle:PATH`` — a trained bundle (:mod:`models.bundle`) or an ensemble of
  bundles (:mod:`models.ensemble`).

This module imports no backend at import time: each is loaded when asked for
(torch and open_clip take seconds to import).
"""

from __future__ import annotations

from pathlib import Path

from models.device import resolve_device
from models.encoders.base import Encoder
from models.encoders.specs import BASE_SPEC_FORMS, load_base_encoder

__all__ = ["DEFAULT_MODEL", "SPEC_FORMS", "load_encoder", "model_display_name", "resolve_device"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Shipped bundle name -> the fingerprint it must load with (``make bundle`` prints it).
SHIPPED_MODELS: dict[str, str] = {"food-v1": "bundle-c0d306217f78a073"}
DEFAULT_MODEL = "food-v1"

SPEC_FORMS = (
    *(f"'{name}' (shipped)" for name in SHIPPED_MODELS),
    *BASE_SPEC_FORMS,
    "'bundle:PATH'",
)


def _load_bundle(path: Path, device: str) -> Encoder:
    # Loaded on demand like every backend: a bundle pulls in torch and safetensors.
    from models.bundle import load_bundle
    from models.ensemble import is_ensemble, load_ensemble

    if is_ensemble(path):
        return load_ensemble(path, device)
    return load_bundle(path, device)


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
    encoder = _load_bundle(path, device)
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
        case ["bundle", path, *rest] if path:
            return _load_bundle(Path(":".join([path, *rest])), resolve_device(device))
        case _:
            return load_base_encoder(
                spec, device=device, cache_dir=cache_dir, valid_forms=SPEC_FORMS
            )
