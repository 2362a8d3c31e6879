"""Building an encoder from a one-string spec.

Specs (``MMSEARCH_ENCODER`` and the CLI use these):

- ``offline`` — the embedded default (:class:`~models.encoders.offline.OfflineEncoder`).
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

__all__ = ["SPEC_FORMS", "load_encoder", "resolve_device"]

SPEC_FORMS = (*BASE_SPEC_FORMS, "'bundle:PATH'")


def _load_bundle(path: Path, device: str) -> Encoder:
    # Loaded on demand like every backend: a bundle pulls in torch and safetensors.
    from models.bundle import load_bundle
    from models.ensemble import is_ensemble, load_ensemble

    if is_ensemble(path):
        return load_ensemble(path, device)
    return load_bundle(path, device)


def load_encoder(
    spec: str = "offline", *, device: str = "auto", cache_dir: Path | None = None
) -> Encoder:
    """Build the encoder that ``spec`` names (see the module docstring)."""
    if not isinstance(spec, str):
        raise ValueError(f"encoder spec must be a string, got {type(spec).__name__}")
    spec = spec.strip()
    match spec.split(":", 2):
        case ["bundle", path, *rest] if path:
            return _load_bundle(Path(":".join([path, *rest])), resolve_device(device))
        case _:
            return load_base_encoder(
                spec, device=device, cache_dir=cache_dir, valid_forms=SPEC_FORMS
            )
