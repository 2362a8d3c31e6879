"""Building a base encoder (``offline``, ``openclip:...``) from its one-string spec.

The frozen towers of a bundle are built from such a spec, so this sits below
:mod:`models.registry` (which adds ``bundle:PATH``) and imports nothing trained.
Each backend is imported when its spec is asked for: open_clip takes seconds to
import and the offline encoder pulls in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.encoders.base import Encoder

BASE_SPEC_FORMS = (
    "'offline'",
    "'openclip:ARCH' / 'openclip:ARCH:PRETRAINED' (tag, checkpoint path or hf-hub:org/name)",
)


def load_base_encoder(
    spec: str,
    *,
    device: str = "auto",
    cache_dir: Path | None = None,
    valid_forms: Sequence[str] = BASE_SPEC_FORMS,
) -> Encoder:
    """The encoder ``spec`` names; ``valid_forms`` are listed when the spec is unknown."""
    match spec.split(":", 2):
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
        case _:
            raise ValueError(
                f"unknown encoder spec {spec!r}; valid forms: " + ", ".join(valid_forms)
            )
