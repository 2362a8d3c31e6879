"""Encoder protocol and backends.

Backends are imported lazily (``from models.encoders import OfflineEncoder``
works, but ``import models.encoders`` alone does not pull in torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.encoders.base import Encoder, l2_normalize

if TYPE_CHECKING:
    from models.encoders.offline import OfflineEncoder
    from models.encoders.openclip import OpenClipEncoder

__all__ = ["Encoder", "OfflineEncoder", "OpenClipEncoder", "l2_normalize"]

_LAZY = {
    "OfflineEncoder": "models.encoders.offline",
    "OpenClipEncoder": "models.encoders.openclip",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
