"""Ensembles of trained bundles: one encoder whose vectors are its members' side by side.

Each member's L2-normalised vector is scaled by ``1/sqrt(m)`` and the ``m`` of them
are concatenated. The result is a unit vector, and the inner product of two such
vectors is the mean of the members' cosines: score-level averaging, with nothing
downstream changed (FAISS inner product, prototypes as normalised means, filters).
Two tuned towers that make different mistakes (on our food101 split, both right on
80 % of the photos, either right on 88 %) classify better together than apart; the
price is the members' compute, once each.

An ensemble is a directory with ``bundle.json`` (format ``mmsearch-ensemble``) and
a copy of every member under ``members/``, so it deploys as one folder. Members
share one set of base towers per base spec, so the base networks load once; each
member still runs its own tuned top.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.bundle import CONFIG_FILE, BundleEncoder, BundleError, load_bundle, read_bundle_meta
from models.encoders.base import l2_normalize
from models.files import atomic_write
from models.towers import Towers, load_towers
from models.types import Recipe

ENSEMBLE_FORMAT = "mmsearch-ensemble"
ENSEMBLE_VERSION = 1
MEMBERS_DIR = "members"


def is_ensemble(path: Path) -> bool:
    """Whether ``path`` holds an ensemble's ``bundle.json`` (not a plain bundle's)."""
    config = Path(path) / CONFIG_FILE
    try:
        return bool(json.loads(config.read_text("utf-8")).get("format") == ENSEMBLE_FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def save_ensemble(out_dir: Path, members: Sequence[Path], device: str = "cpu") -> Path:
    """Copy the member bundles into ``out_dir/members`` and write its ``bundle.json``.

    Every member is loaded first, so a broken or mismatched bundle is refused before
    anything is written; the fingerprints recorded here are checked on every load.
    """
    if len(members) < 2:
        raise BundleError("an ensemble needs at least two member bundles")
    if (out_dir / CONFIG_FILE).exists() or (out_dir / MEMBERS_DIR).exists():
        raise BundleError(f"{out_dir} already holds a bundle; pick an empty directory")
    for member in members:
        if is_ensemble(member):
            raise BundleError(f"{member} is an ensemble already; name its members instead")
    fingerprints = [e.fingerprint for e in _load_members([Path(m) for m in members], device)]
    if len(set(fingerprints)) < len(fingerprints):
        raise BundleError("the same bundle is named twice: its members would be identical")
    names = [f"{MEMBERS_DIR}/{i}" for i in range(len(members))]
    _copy_members(members, out_dir)
    meta = {
        "format": ENSEMBLE_FORMAT,
        "version": ENSEMBLE_VERSION,
        "members": [
            {"path": name, "fingerprint": fp, "source": str(member)}
            for name, fp, member in zip(names, fingerprints, members, strict=True)
        ],
    }
    text = json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8")
    atomic_write(out_dir / CONFIG_FILE, lambda fp: fp.write(text))
    return out_dir


def _copy_members(members: Sequence[Path], out_dir: Path) -> None:
    """Copy the members to ``out_dir/members/0..`` all at once or not at all.

    The copies go to a staging folder that is renamed into place, so a copy that fails
    midway (disk full, an unreadable file) leaves no half-built ``members/`` behind to
    make the next attempt's ``--out`` look occupied.
    """
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{MEMBERS_DIR}-", dir=out_dir))
    try:
        for i, member in enumerate(members):
            shutil.copytree(member, staging / str(i))
        staging.rename(out_dir / MEMBERS_DIR)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _load_members(paths: Sequence[Path], device: str) -> list[BundleEncoder]:
    """Load bundles, building the base towers once per base spec."""
    bases: dict[str, Towers] = {}
    encoders = []
    for path in paths:
        base = str(read_bundle_meta(path)["base"])
        if base not in bases:
            bases[base] = load_towers(base, device=device)
        encoders.append(load_bundle(path, device=device, towers=bases[base]))
    return encoders


def load_ensemble(path: Path, device: str = "cpu") -> EnsembleEncoder:
    """Rebuild the ensemble a directory describes; refuses members changed since saving."""
    path = Path(path)
    meta = _read_ensemble_meta(path)
    entries = meta["members"]
    members = _load_members([path / str(entry["path"]) for entry in entries], device)
    for entry, member in zip(entries, members, strict=True):
        if member.fingerprint != entry.get("fingerprint"):
            raise BundleError(
                f"ensemble {path}: member {entry['path']} has fingerprint {member.fingerprint}, "
                f"not the {entry.get('fingerprint')} it was assembled with"
            )
    return EnsembleEncoder(path, members)


def _read_ensemble_meta(path: Path) -> dict[str, Any]:
    config = path / CONFIG_FILE
    meta = read_bundle_meta(path, ENSEMBLE_FORMAT, ENSEMBLE_VERSION)
    entries = meta.get("members")
    if not isinstance(entries, list) or len(entries) < 2:
        raise BundleError(f"{config}: an ensemble lists at least two members")
    for entry in entries:
        name = entry.get("path") if isinstance(entry, dict) else None
        # Members live inside the ensemble: a path that leaves it is refused.
        if not isinstance(name, str) or not (path / name).resolve().is_relative_to(path.resolve()):
            raise BundleError(f"{config}: bad member entry {entry!r}")
    return dict(meta)


def join_vectors(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Members' (n, dim_i) unit rows side by side, scaled by 1/sqrt(m): unit rows again."""
    scale = np.float32(1.0 / math.sqrt(len(parts)))
    return np.concatenate(parts, axis=1).astype(np.float32) * scale


class EnsembleEncoder:
    """The :class:`~models.encoders.base.Encoder` of several bundles, vectors concatenated."""

    def __init__(self, path: Path, members: Sequence[BundleEncoder]) -> None:
        if len(members) < 2:
            raise BundleError("an ensemble needs at least two member bundles")
        self.path = path
        self.members = list(members)
        payload = json.dumps(["ensemble", [m.fingerprint for m in self.members]])
        self._fingerprint = "ensemble-" + hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def device(self) -> str:
        return self.members[0].device

    @property
    def classes(self) -> list[str]:
        """Every member's regulariser classes, in first-seen order."""
        return list(dict.fromkeys(c for m in self.members for c in m.classes))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return join_vectors([m.encode_images(images) for m in self.members])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return join_vectors([m.encode_texts(texts) for m in self.members])

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        return join_vectors([m.encode_recipes(recipes) for m in self.members])

    def fuse(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """Each member fuses its own slice of the modality vectors; the results are joined."""
        fused = []
        at = 0
        for member in self.members:
            own = {name: l2_normalize(v[at : at + member.dim]) for name, v in parts.items()}
            fused.append(member.fuse(own).reshape(1, -1))
            at += member.dim
        return join_vectors(fused)[0]
