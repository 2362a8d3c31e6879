"""Trained bundles: a directory with ``bundle.json`` and ``model.safetensors``.

``bundle.json`` names the frozen base (``offline`` or an open_clip spec) and
its fingerprint, the joint architecture (:class:`~models.joint.JointConfig`),
the classes of the semantic regulariser, the training options and the
validation figures. :func:`load_bundle` rebuilds the towers, refuses a base
whose fingerprint differs from the one trained on, and returns a
:class:`BundleEncoder`, which implements the :class:`Encoder` protocol (plus
:meth:`BundleEncoder.fuse` for several modalities of one item).

The fingerprint hashes the base fingerprint, the config and the weights, so
snapshots built with one bundle refuse another. Trained re-rankers
(:mod:`models.rerank`, ``rerankers`` in ``bundle.json``) change no vector and stay
out of the fingerprint, as the confidence curves do. So do DivE set heads
(``set_heads``, :mod:`models.set_head`): they add set vectors beside the single ones
and change none of those.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from models.calibration import Calibration
from models.encoders.base import l2_normalize
from models.files import atomic_write, save_state_dict, sha256_of_file
from models.joint import MODALITIES, JointConfig, JointModel, pad_recipes
from models.rerank import RERANKERS, SGRAF, Reranker
from models.set_encoding import SetEncoder
from models.set_head import SET_MODALITIES, SetHead, load_set_head, save_set_head
from models.sgraf import Sgraf, load_sgraf, save_sgraf
from models.towers import OfflineTowers, Towers, load_towers
from models.types import Recipe
from models.vision_top import SPLIT_STAGES, VisionTop

BUNDLE_FORMAT = "mmsearch-bundle"
BUNDLE_VERSION = 1
CONFIG_FILE = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
TOWER_FILE = "tower.safetensors"
# Test-time augmentation of image queries and items: "flip" embeds each image and its
# mirror image and averages the two vectors (twice the image cost, mirror-invariant).
IMAGE_TTA = ("none", "flip")
# Inference input size of the offline image tower (None: its own 224). Training crops
# are random-resized, so objects look larger than in a 224 centre crop; a somewhat
# larger test size matches them again (Touvron et al. 2019, "FixRes").
IMAGE_SIZES = range(96, 641)


class BundleError(ValueError):
    """A bundle directory is missing, malformed, or does not fit its base."""


def save_bundle(
    out_dir: Path,
    model: JointModel,
    *,
    base: str,
    base_fingerprint: str,
    classes: Sequence[str] = (),
    training: dict[str, Any] | None = None,
    tuned_top: VisionTop | None = None,
    image_tta: str = "none",
    image_size: int | None = None,
) -> Path:
    """Write the bundle into ``out_dir`` (weights first, ``bundle.json`` last, each atomically).

    ``tuned_top`` is a fine-tuned top of the offline image tower
    (:mod:`training.tower_tuning`); ``base_fingerprint`` stays the untuned base's.
    ``image_tta`` is one of :data:`IMAGE_TTA`; ``image_size`` (offline base only) the
    side photos are embedded at, None for the tower's own.
    """
    check_image_tta(image_tta)
    check_image_size(image_size)
    weights = out_dir / WEIGHTS_FILE
    save_state_dict(weights, model.state_dict())
    meta = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "base": base,
        "base_fingerprint": base_fingerprint,
        "joint": model.config.to_dict(),
        "classes": list(classes),
        "weights": WEIGHTS_FILE,
        "weights_sha256": sha256_of_file(weights),
        "training": training or {},
        "image_tta": image_tta,
    }
    if image_size is not None:
        meta["image_size"] = image_size
    if tuned_top is not None:
        save_state_dict(out_dir / TOWER_FILE, tuned_top.state_dict())
        meta["tower"] = {
            "kind": "efficientnet-lite0-top",
            "split_stage": tuned_top.split_stage,
            "weights": TOWER_FILE,
            "weights_sha256": sha256_of_file(out_dir / TOWER_FILE),
        }
    _write_meta(out_dir, meta)
    return out_dir


def export_bundle(src: Path, dst: Path, *, half: bool = True) -> Path:
    """Copy the bundle at ``src`` to ``dst`` with its weights in float16 (``half``).

    What ships in the repository is an exported bundle: half the bytes, the same
    architecture. The fingerprint changes with the weights' sha256, as it must: the
    vectors differ in the last bits, so snapshots built with one refuse the other.
    """
    meta = read_bundle_meta(Path(src))
    if (Path(dst) / CONFIG_FILE).exists():
        raise BundleError(f"{dst} already holds a bundle; choose an empty directory")
    meta["weights_sha256"] = _export_weights(
        src, meta.get("weights", WEIGHTS_FILE), meta["weights_sha256"], dst / WEIGHTS_FILE, half
    )
    meta["weights"] = WEIGHTS_FILE
    if "tower" in meta:
        tower = dict(meta["tower"])
        tower["weights_sha256"] = _export_weights(
            src, tower["weights"], tower.get("weights_sha256"), dst / TOWER_FILE, half
        )
        meta["tower"] = {**tower, "weights": TOWER_FILE}
    if SGRAF in meta.get("rerankers", {}):
        entry = dict(meta["rerankers"][SGRAF])
        entry["weights_sha256"] = _export_weights(
            src,
            entry["weights"],
            entry.get("weights_sha256"),
            dst / Path(str(entry["weights"])).name,
            half,
        )
        meta["rerankers"] = {**meta["rerankers"], SGRAF: entry}
    for modality, entry in meta.get("set_heads", {}).items():
        sha256 = _export_weights(
            src,
            entry["weights"],
            entry.get("weights_sha256"),
            dst / Path(str(entry["weights"])).name,
            half,
        )
        meta["set_heads"][modality] = {**entry, "weights_sha256": sha256}
    meta["weights_dtype"] = "float16" if half else "float32"
    _write_meta(dst, meta)
    return dst


def write_calibration(path: Path, calibration: Calibration, report: dict[str, Any]) -> None:
    """Store confidence curves (and the figures they were judged by) in ``bundle.json``.

    The curves change no vector, so the fingerprint stays: snapshots remain valid.
    """
    meta = read_bundle_meta(Path(path))
    meta["calibration"] = calibration.to_dict()
    meta["calibration_report"] = report
    _write_meta(Path(path), meta)


def write_sgraf(path: Path, model: Sgraf, *, half: bool = False) -> None:
    """Add (or replace) the bundle's SGRAF re-ranker (float16 with ``half``, as shipped);
    the fingerprint stays, since no vector changes, so snapshots remain valid."""
    meta = read_bundle_meta(Path(path))
    entry = save_sgraf(Path(path), model, half=half)
    meta["rerankers"] = {**meta.get("rerankers", {}), SGRAF: entry}
    _write_meta(Path(path), meta)


def write_set_heads(path: Path, heads: dict[str, SetHead], *, half: bool = False) -> None:
    """Add (or replace) the bundle's DivE set heads by modality (float16 with ``half``, as
    shipped); the fingerprint stays, since no single vector changes."""
    meta = read_bundle_meta(Path(path))
    entries = {m: save_set_head(Path(path), m, head, half=half) for m, head in heads.items()}
    meta["set_heads"] = {**meta.get("set_heads", {}), **entries}
    _write_meta(Path(path), meta)


def read_set_heads(path: Path, meta: dict[str, Any], device: str) -> dict[str, SetHead]:
    entries = meta.get("set_heads", {})
    unknown = sorted(set(entries) - set(SET_MODALITIES))
    if unknown:
        raise BundleError(f"{path / CONFIG_FILE}: set heads for unknown modalities {unknown}")
    try:
        return {m: load_set_head(path, entry, device) for m, entry in entries.items()}
    except (KeyError, ValueError) as exc:
        raise BundleError(f"bundle {path}: {exc}") from exc


def read_rerankers(path: Path, meta: dict[str, Any], device: str) -> dict[str, Reranker]:
    entries = meta.get("rerankers", {})
    unknown = sorted(set(entries) - set(RERANKERS))
    if unknown:
        raise BundleError(f"{path / CONFIG_FILE}: unknown re-rankers {unknown}")
    try:
        return {SGRAF: load_sgraf(path, entries[SGRAF], device)} if SGRAF in entries else {}
    except (KeyError, ValueError) as exc:
        raise BundleError(f"bundle {path}: {exc}") from exc


def _write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    text = json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8")
    atomic_write(out_dir / CONFIG_FILE, lambda fp: fp.write(text))


def read_calibration(path: Path, meta: dict[str, Any]) -> Calibration | None:
    if "calibration" not in meta:
        return None
    try:
        return Calibration.from_dict(meta["calibration"])
    except ValueError as exc:
        raise BundleError(f"{path / CONFIG_FILE}: {exc}") from exc


def check_image_tta(value: object) -> str:
    if value not in IMAGE_TTA:
        raise ValueError(f"image test-time augmentation must be one of {IMAGE_TTA}, not {value!r}")
    return str(value)


def check_image_size(value: object) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value not in IMAGE_SIZES
    ):
        raise ValueError(
            f"image size must be an integer from {IMAGE_SIZES.start} to "
            f"{IMAGE_SIZES.stop - 1} pixels, not {value!r}"
        )
    return value


def _export_weights(src: Path, name: object, sha256: object, dst_file: Path, half: bool) -> str:
    """Copy a bundle's weights file into ``dst_file`` (float16 with ``half``) once its
    sha256 is checked; returns the copy's sha256."""
    weights = _checked_weights(src, str(name), sha256)
    save_state_dict(dst_file, load_file(str(weights)), half=half)
    return sha256_of_file(dst_file)


def _checked_weights(path: Path, name: str, sha256: object) -> Path:
    weights = path / name
    if not weights.is_file():
        raise BundleError(f"bundle weights missing: {weights}")
    if sha256_of_file(weights) != sha256:
        raise BundleError(f"{weights} does not match the sha256 recorded in {CONFIG_FILE}")
    return weights


def read_bundle_meta(
    path: Path, fmt: str = BUNDLE_FORMAT, version: int = BUNDLE_VERSION
) -> dict[str, Any]:
    """``bundle.json`` of ``path``, refused unless it is of format ``fmt`` and ``version``
    (an ensemble's reads the same way, see :mod:`models.ensemble`)."""
    config = path / CONFIG_FILE
    if not config.is_file():
        raise BundleError(f"{path} is not a bundle: {CONFIG_FILE} is missing")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{config} is unreadable: {exc}") from exc
    if meta.get("format") != fmt or meta.get("version") != version:
        raise BundleError(
            f"{config}: expected format {fmt!r} version {version}, "
            f"got {meta.get('format')!r} version {meta.get('version')!r}"
        )
    return dict(meta)


def load_joint_model(path: Path, meta: dict[str, Any]) -> JointModel:
    weights = _checked_weights(
        path, str(meta.get("weights", WEIGHTS_FILE)), meta.get("weights_sha256")
    )
    try:
        model = JointModel(JointConfig(**meta["joint"]))
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise BundleError(f"bundle {path} does not fit its architecture: {exc}") from exc
    return model.eval()


def load_bundle(path: Path, device: str = "cpu", towers: Towers | None = None) -> BundleEncoder:
    """Rebuild the encoder a bundle directory describes."""
    path = Path(path)
    meta = read_bundle_meta(path)
    towers = towers if towers is not None else load_towers(str(meta["base"]), device=device)
    if towers.fingerprint != meta.get("base_fingerprint"):
        raise BundleError(
            f"bundle {path} was trained on base {meta['base']!r} with fingerprint "
            f"{meta.get('base_fingerprint')}, but the base loaded here has {towers.fingerprint}"
        )
    if "tower" in meta:
        towers = _with_tuned_top(path, meta["tower"], towers)
    try:
        check_image_tta(meta.get("image_tta", "none"))
        image_size = check_image_size(meta.get("image_size"))
    except ValueError as exc:
        raise BundleError(f"{path / CONFIG_FILE}: {exc}") from exc
    if image_size is not None:
        if not isinstance(towers, OfflineTowers):
            raise BundleError(f"bundle {path}: image_size needs the offline base")
        towers = towers.with_image_size(image_size)
    rerankers = read_rerankers(path, meta, towers.device)
    set_heads = read_set_heads(path, meta, towers.device)
    encoder = BundleEncoder(path, meta, load_joint_model(path, meta), towers, rerankers)
    try:
        encoder.sets = SetEncoder(encoder, set_heads) if set_heads else None
    except ValueError as exc:
        raise BundleError(f"bundle {path}: {exc}") from exc
    return encoder


def _with_tuned_top(path: Path, tower: dict[str, Any], towers: Towers) -> Towers:
    """The base towers with the bundle's fine-tuned image top in place."""
    if not isinstance(towers, OfflineTowers):
        raise BundleError(f"bundle {path} tunes the offline image tower; its base is not offline")
    stage = tower.get("split_stage")
    if stage not in SPLIT_STAGES:
        raise BundleError(f"bundle {path}: the image tower cannot be cut at stage {stage!r}")
    weights = _checked_weights(path, str(tower.get("weights")), tower.get("weights_sha256"))
    top = towers.original_top_at(int(stage))
    try:
        top.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise BundleError(f"bundle {path}: the tuned tower does not fit: {exc}") from exc
    return towers.with_tuned_top(top)


class BundleEncoder:
    """Frozen towers + trained joint model, behind the :class:`Encoder` protocol."""

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        model: JointModel,
        towers: Towers,
        rerankers: dict[str, Reranker] | None = None,
    ):
        self.path = path
        self.rerankers = rerankers or {}
        self.sets: SetEncoder | None = None  # K vectors per item, when it has set heads
        self.meta = meta
        self.model = model.to(towers.device)
        self.towers = towers
        self.image_tta = str(meta.get("image_tta", "none"))
        self.calibration = read_calibration(path, meta)
        tower_sha = meta.get("tower", {}).get("weights_sha256")
        payload = [meta["base_fingerprint"], meta["joint"], meta["weights_sha256"]]
        # Bundles without a tuned tower, TTA or image size keep the fingerprint they had
        # before those existed.
        payload += [tower_sha] if tower_sha else []
        payload += [f"tta:{self.image_tta}"] if self.image_tta != "none" else []
        payload += [f"size:{meta['image_size']}"] if meta.get("image_size") is not None else []
        payload_text = json.dumps(payload, sort_keys=True)
        self._fingerprint = "bundle-" + hashlib.sha256(payload_text.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return self.model.config.dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def device(self) -> str:
        return self.towers.device

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    def _run(self, fn: Any, *args: Any) -> np.ndarray:
        with torch.inference_mode():
            return l2_normalize(fn(*args).float().cpu().numpy())

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.empty((0, self.dim), np.float32)
        vectors = self._embed_images(list(images))
        if self.image_tta == "flip":
            mirrored = [img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for img in images]
            vectors = l2_normalize(vectors + self._embed_images(mirrored))
        return vectors

    def _embed_images(self, images: list[Image.Image]) -> np.ndarray:
        features = self.towers.image_features(images)
        return self._run(self.model.embed_images, self._tensor(features))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), np.float32)
        features = self.towers.text_features(list(texts), query=True)
        return self._run(self.model.embed_texts, self._tensor(features))

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        if not recipes:
            return np.empty((0, self.dim), np.float32)
        texts = [t for r in recipes for t in (r.title, *r.ingredients, *r.instructions)]
        vectors = torch.from_numpy(self.towers.text_features(texts, query=False))
        titles, ingredients, instructions = [], [], []
        at = 0
        for r in recipes:
            titles.append(vectors[at])
            ingredients.append(vectors[at + 1 : at + 1 + len(r.ingredients)])
            at += 1 + len(r.ingredients)
            instructions.append(vectors[at : at + len(r.instructions)])
            at += len(r.instructions)
        batch = pad_recipes(titles, ingredients, instructions).to(self.device)
        return self._run(self.model.embed_recipes, batch)

    def fuse(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """One vector from joint vectors of one item's modalities (keys from ``MODALITIES``)."""
        unknown = set(parts) - set(MODALITIES)
        if not parts or unknown:
            raise ValueError(f"fuse needs a non-empty subset of {MODALITIES}, got {sorted(parts)}")
        inputs = [self._tensor(parts[m].reshape(1, -1)) if m in parts else None for m in MODALITIES]
        present = torch.tensor([[m in parts for m in MODALITIES]], device=self.device)
        return self._run(self.model.fuse, inputs, present)[0]
