"""DivE set heads in a (tiny, trained) bundle: optional, sha256-checked, float16 on export,
outside the fingerprint; the encoder gives K unit vectors per image, text and recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.bundle import BundleError, export_bundle, load_bundle, write_set_heads
from models.set_head import SetHead, SetHeadConfig
from service.cli import main
from tests.bundles import sample_inputs, save_tiny_base, train_args

SLOTS = 3
IMAGE_LOCAL_DIM = 1280  # offline regions' width; the tiny open_clip base has no regions


def random_heads(dim: int, *, trained_like: bool) -> dict[str, SetHead]:
    """Random-init heads; ``trained_like`` moves the zero-initialised output layer, so the
    slots differ from the single vector as a trained head's do."""
    torch.manual_seed(0)
    heads = {
        "image": SetHead(SetHeadConfig(local_dim=IMAGE_LOCAL_DIM, dim=dim, slots=SLOTS, hidden=16)),
        "text": SetHead(SetHeadConfig(local_dim=dim, dim=dim, slots=SLOTS, hidden=16)),
    }
    if trained_like:
        for head in heads.values():
            nn.init.normal_(head.out.weight, std=0.5)
    return heads


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("set-bundle")
    out = root / "bundle"
    assert main(train_args(save_tiny_base(root), out, "--epochs", "3")) == 0
    return out


@pytest.fixture()
def with_heads(trained: Path, tmp_path: Path) -> Path:
    copy = export_bundle(trained, tmp_path / "copy", half=False)
    write_set_heads(copy, random_heads(load_bundle(copy).dim, trained_like=True))
    return copy


def test_a_bundle_without_set_heads_has_no_sets(trained: Path) -> None:
    assert load_bundle(trained).sets is None


def test_sets_are_k_unit_vectors_and_leave_the_single_vectors_alone(
    trained: Path, with_heads: Path
) -> None:
    plain, encoder = load_bundle(trained), load_bundle(with_heads)
    assert encoder.fingerprint == plain.fingerprint  # snapshots stay valid
    assert encoder.sets is not None and encoder.sets.slots == SLOTS
    images, texts, recipes = sample_inputs()
    for sets, n in [
        (encoder.sets.image_sets(images), len(images)),
        (encoder.sets.text_sets(texts), len(texts)),
        (encoder.sets.recipe_sets(recipes), len(recipes)),
    ]:
        assert sets.shape == (n, SLOTS, encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(sets, axis=-1), 1.0, rtol=1e-5)
        assert not np.allclose(sets[:, 0], sets[:, 1], atol=1e-3)  # distinct slots
    np.testing.assert_allclose(encoder.encode_texts(texts), plain.encode_texts(texts), atol=1e-6)


def test_an_untrained_head_gives_k_copies_of_the_single_vector(
    trained: Path, tmp_path: Path
) -> None:
    copy = export_bundle(trained, tmp_path / "copy", half=False)
    write_set_heads(copy, random_heads(load_bundle(copy).dim, trained_like=False))
    encoder = load_bundle(copy)
    assert encoder.sets is not None
    _, texts, _ = sample_inputs()
    sets, single = encoder.sets.text_sets(texts), encoder.encode_texts(texts)
    np.testing.assert_allclose(sets, np.repeat(single[:, None], SLOTS, axis=1), atol=1e-5)


def test_export_ships_the_heads_in_float16(with_heads: Path, tmp_path: Path) -> None:
    half = export_bundle(with_heads, tmp_path / "half")
    full_sets = load_bundle(with_heads).sets
    half_sets = load_bundle(half).sets
    assert full_sets is not None and half_sets is not None
    _, texts, _ = sample_inputs()
    np.testing.assert_allclose(half_sets.text_sets(texts), full_sets.text_sets(texts), atol=2e-2)
    size = (half / "set_head_text.safetensors").stat().st_size
    assert size < 0.6 * (with_heads / "set_head_text.safetensors").stat().st_size


def test_a_changed_head_file_is_refused(with_heads: Path) -> None:
    with open(with_heads / "set_head_text.safetensors", "ab") as fp:
        fp.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(with_heads)


def test_a_head_for_an_unknown_modality_is_refused(with_heads: Path) -> None:
    meta = json.loads((with_heads / "bundle.json").read_text())
    meta["set_heads"]["audio"] = meta["set_heads"]["text"]
    (with_heads / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unknown modalities"):
        load_bundle(with_heads)
