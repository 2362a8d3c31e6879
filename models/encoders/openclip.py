"""open_clip backend: any CLIP-style model open_clip can build.

``OpenClipEncoder(arch, pretrained)`` accepts:

- a built-in architecture with a pretrained tag (``ViT-B-32``, ``laion2b_s34b_b79k``),
  downloaded by open_clip into its own cache (production only; tests never do);
- an architecture with a local checkpoint file (``pretrained=/path/model.pt``),
  loaded through open_clip's own checkpoint loader;
- ``hf-hub:org/name`` (as ``arch`` or as ``pretrained``) or ``local-dir:/path``;
- ``pretrained=None``: random initialisation (tests, tiny configs).

The architecture configs shipped in ``models/configs/*.json`` (e.g.
``mmsearch-tiny-vit``) are registered with open_clip on import.

Images go through the model's own preprocess transform, texts through
``open_clip.get_tokenizer(arch)``, recipes as ``Recipe.as_text()`` (the
tokenizer truncates to the model's context length).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.device import resolve_device
from models.encoders.base import cut_for_tokens, l2_normalize
from models.images import crop_to_aspect_ratio
from models.types import Recipe

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_BATCH_SIZE = 64
_SCHEMAS = ("hf-hub:", "local-dir:")
_registered = False
_register_lock = threading.Lock()


def register_configs() -> None:
    """Make the architectures in ``models/configs`` known to open_clip (idempotent)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        import open_clip

        if CONFIG_DIR.is_dir():
            open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry: name, dtype, shape and bytes (as on CPU)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(repr(tuple(t.shape)).encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.view(torch.int16)
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _pretrained_identity(pretrained: str | None) -> str | None:
    """What of ``pretrained`` goes into the fingerprint: a tag, never a local path.

    A tag also selects preprocessing (mean/std, resize mode), so it is part of
    the identity; a checkpoint file is identified by the state-dict hash alone,
    wherever it lives (random init with the same weights hashes the same).
    """
    if pretrained is None or os.path.isfile(pretrained):
        return None
    return pretrained


class OpenClipEncoder:
    """An open_clip model as an :class:`~models.encoders.base.Encoder`."""

    def __init__(
        self,
        arch: str,
        pretrained: str | None = None,
        device: str = "auto",
        precision: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        import open_clip

        register_configs()
        if not arch:
            raise ValueError("open_clip architecture name is empty")
        model_name, pretrained = arch, (pretrained or None)
        if pretrained and pretrained.startswith(_SCHEMAS):
            # open_clip takes hub / local-dir sources as the model name, config included
            model_name, pretrained = pretrained, None
        self._device = resolve_device(device)
        if precision is None:
            precision = "fp16" if self._device.startswith("cuda") else "fp32"
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
        if precision != "fp32" and not self._device.startswith("cuda"):
            raise ValueError(f"{precision} precision needs a CUDA device")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.batch_size = batch_size
        self.arch = model_name
        self.pretrained = pretrained
        self.precision = precision
        self._input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            precision, torch.float32
        )
        if not model_name.startswith(_SCHEMAS) and open_clip.get_model_config(model_name) is None:
            raise ValueError(
                f"unknown open_clip architecture {model_name!r} "
                f"(known: {', '.join(open_clip.list_models()[:8])}, ...)"
            )
        if pretrained and os.path.sep in pretrained and not os.path.isfile(pretrained):
            raise FileNotFoundError(f"open_clip checkpoint not found: {pretrained}")

        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=self._device, precision=precision
        )
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self._dim = self._infer_dim()
        self._fingerprint = self._compute_fingerprint()
        log.info(
            "open_clip %s (%s) on %s, fingerprint %s",
            model_name,
            pretrained,
            self._device,
            self._fingerprint,
        )

    def _infer_dim(self) -> int:
        with torch.inference_mode():
            tokens = self._tokenizer(["probe"]).to(self._device)
            return int(self._model.encode_text(tokens).shape[-1])

    def _compute_fingerprint(self) -> str:
        payload = {
            "backend": "openclip",
            "arch": self.arch,
            "pretrained": _pretrained_identity(self.pretrained),
            "state_dict_sha256": state_dict_sha256(self._model),
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return f"openclip-{hashlib.sha256(blob).hexdigest()[:16]}"

    # -- Encoder protocol ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def device(self) -> str:
        return self._device

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """CPU step: the model's own eval transform, stacked; extreme aspect ratios are
        cropped first (its resize would scale a 65535x1 image to gigabytes)."""
        return torch.stack(
            [self._preprocess(crop_to_aspect_ratio(img.convert("RGB"))) for img in images]
        )

    def image_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Device step: raw image embeddings as float32."""
        with torch.inference_mode():
            out = self._model.encode_image(batch.to(self._device, self._input_dtype))
        return out.float()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        images = list(images)
        chunks = [
            self.image_features(self.preprocess_images(images[i : i + self.batch_size])).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return self._finish(chunks)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        # The tokenizer keeps context_length tokens but reads (and cleans) all the text.
        context = int(getattr(self._tokenizer, "context_length", 77))
        texts = [cut_for_tokens(str(t), context) for t in texts]
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(texts[i : i + self.batch_size]).to(self._device)
            with torch.inference_mode():
                chunks.append(self._model.encode_text(tokens).float().cpu())
        return self._finish(chunks)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        return self.encode_texts([r.as_text() for r in recipes])

    def _finish(self, chunks: list[torch.Tensor]) -> np.ndarray:
        if not chunks:
            return np.empty((0, self._dim), dtype=np.float32)
        return l2_normalize(torch.cat(chunks).numpy())
