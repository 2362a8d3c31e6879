"""Training, bundles and evaluation on a tiny open_clip base (no downloads, seconds on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.bundle import BundleError, load_bundle, read_bundle_meta
from models.encoders.base import fuse_modalities
from models.encoders.openclip import OpenClipEncoder
from models.fusion import all_subsets
from models.joint import MODALITIES, JointConfig, JointModel
from models.registry import load_encoder
from models.towers import EncoderTowers
from service.cli import main
from tests.bundles import TINY_ARCH, sample_inputs, save_tiny_base, train_args
from training.synthetic_retrieval import synthetic_feature_sets
from training.train import validation_metrics

# Every test here trains a bundle (or needs the module's trained one).
pytestmark = pytest.mark.slow

ARCH = TINY_ARCH


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="module")
def bundle_dir(tiny_base: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert main(train_args(tiny_base, out)) == 0
    return out


def test_training_beats_the_untrained_heads(bundle_dir: Path) -> None:
    meta = read_bundle_meta(bundle_dir)
    trained = meta["training"]["sources"][0]["validation"]["image_to_recipe"]
    _, val = synthetic_feature_sets(64, 64, seed=0, val_fraction=0.2)
    torch.manual_seed(0)
    untrained_model = JointModel(JointConfig(**meta["joint"]))
    untrained = validation_metrics(untrained_model, val)["image_to_recipe"]
    assert trained["R@1"] >= untrained["R@1"] + 0.3, (trained, untrained)
    assert trained["R@10"] > 0.9


def test_bundle_records_what_made_it(bundle_dir: Path, tiny_base: str) -> None:
    meta = read_bundle_meta(bundle_dir)
    assert meta["base"] == tiny_base
    assert meta["training"]["options"]["seed"] == 0
    assert meta["training"]["sources"][0]["dataset"] == "synthetic"
    assert 1 <= meta["training"]["best_epoch"] <= meta["training"]["epochs_run"] <= 25
    assert meta["classes"] == sorted(meta["classes"]) and len(meta["classes"]) > 1


def test_training_is_reproducible_with_a_seed(
    bundle_dir: Path, tiny_base: str, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert main(train_args(tiny_base, again)) == 0
    first, second = read_bundle_meta(bundle_dir), read_bundle_meta(again)
    assert first["weights_sha256"] == second["weights_sha256"]


def test_bundle_round_trip_gives_identical_vectors(bundle_dir: Path, tiny_base: str) -> None:
    images, texts, recipes = sample_inputs()
    first = load_encoder(f"bundle:{bundle_dir}", device="cpu")
    second = load_encoder(f"bundle:{bundle_dir}", device="cpu")
    assert first.fingerprint == second.fingerprint and first.fingerprint.startswith("bundle-")
    for encode in ("encode_images", "encode_texts", "encode_recipes"):
        inputs = {"encode_images": images, "encode_texts": texts, "encode_recipes": recipes}[encode]
        a, b = getattr(first, encode)(inputs), getattr(second, encode)(inputs)
        assert a.shape == (len(inputs), 32) and a.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(a, b)


def test_fusion_accepts_every_modality_subset(bundle_dir: Path) -> None:
    encoder = load_encoder(f"bundle:{bundle_dir}", device="cpu")
    images, texts, recipes = sample_inputs()
    vectors = {
        "image": encoder.encode_images(images[:1]),
        "text": encoder.encode_texts(texts[:1]),
        "recipe": encoder.encode_recipes(recipes[:1]),
    }
    fused = {}
    for subset in all_subsets(len(MODALITIES)):
        parts = {MODALITIES[m]: vectors[MODALITIES[m]] for m in subset}
        out = fuse_modalities(encoder, parts)
        assert out.shape == (32,) and np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
        fused[subset] = out
    assert len({v.tobytes() for v in fused.values()}) == len(fused)  # subsets differ


def test_a_bundle_refuses_another_base(bundle_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    other = OpenClipEncoder(ARCH, None, device="cpu")
    with pytest.raises(BundleError, match="fingerprint"):
        load_bundle(bundle_dir, "cpu", towers=EncoderTowers("x", encoder=other))


def test_tampered_or_missing_bundles_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="missing"):
        read_bundle_meta(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("bundle.json", "model.safetensors"):
        (copy / name).write_bytes((bundle_dir / name).read_bytes())
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BundleError, match="sha256"):
        load_encoder(f"bundle:{copy}", device="cpu")
    meta = json.loads((copy / "bundle.json").read_text())
    meta["version"] = 99
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="version"):
        read_bundle_meta(copy)


def test_train_rejects_bad_options(tiny_base: str, tmp_path: Path) -> None:
    assert main(train_args(tiny_base, tmp_path / "x", "--metric", "manhattan")) == 2
    assert main(["train", "--dataset", "kfood", "--out", str(tmp_path / "y")]) == 2  # no dir
    assert main(["train", "--dataset", "imagenet", "--out", str(tmp_path / "z")]) == 2
    assert not (tmp_path / "x").exists()


def test_euclidean_training_runs(tiny_base: str, tmp_path: Path) -> None:
    out = tmp_path / "euclid"
    assert main(train_args(tiny_base, out, "--metric", "euclidean", "--epochs", "3")) == 0
    assert read_bundle_meta(out)["joint"]["metric"] == "euclidean"


def test_without_a_validation_split_every_epoch_runs(tiny_base: str, tmp_path: Path) -> None:
    out = tmp_path / "all"
    assert main(train_args(tiny_base, out, "--val-fraction", "0", "--epochs", "3")) == 0
    training = read_bundle_meta(out)["training"]
    assert training["best_epoch"] == training["epochs_run"] == 3
    assert training["sources"][0]["n_val"] == 0 and training["sources"][0]["validation"] == {}


def test_triplet_loss_alone_trains_and_no_loss_is_refused(tiny_base: str, tmp_path: Path) -> None:
    out = tmp_path / "triplet"
    args = train_args(tiny_base, out, "--infonce-weight", "0", "--triplet-weight", "1")
    assert main([*args, "--epochs", "8"]) == 0
    r1 = read_bundle_meta(out)["training"]["sources"][0]["validation"]["image_to_recipe"]["R@1"]
    assert r1 > 0.2  # chance is 1/48
    nothing = train_args(tiny_base, tmp_path / "none", "--infonce-weight", "0")
    assert main(nothing) == 2


def asymmetric_images() -> list[Image.Image]:
    """Photos that differ from their mirror image (a horizontal gradient, a corner block)."""
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1))
    gradient = Image.fromarray(np.stack([ramp, 255 - ramp, ramp // 2], axis=-1))
    block = np.zeros((32, 48, 3), np.uint8)
    block[:, :12] = (200, 30, 30)
    return [gradient, Image.fromarray(block)]


def test_flip_tta_averages_a_photo_and_its_mirror(
    bundle_dir: Path, tiny_base: str, tmp_path: Path
) -> None:
    out = tmp_path / "flip"
    assert main(train_args(tiny_base, out, "--image-tta", "flip")) == 0
    meta = read_bundle_meta(out)
    assert meta["image_tta"] == "flip" and read_bundle_meta(bundle_dir)["image_tta"] == "none"
    # TTA is how the bundle embeds, not how it trains: the weights are the same.
    assert meta["weights_sha256"] == read_bundle_meta(bundle_dir)["weights_sha256"]
    plain = load_encoder(f"bundle:{bundle_dir}", device="cpu")
    flip = load_encoder(f"bundle:{out}", device="cpu")
    assert flip.fingerprint != plain.fingerprint  # snapshots of one refuse the other
    images = asymmetric_images()
    mirrored = [img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for img in images]
    one, other = plain.encode_images(images), plain.encode_images(mirrored)
    assert not np.allclose(one, other, atol=1e-3)  # the photos are not mirror-symmetric
    expected = (one + other) / np.linalg.norm(one + other, axis=1, keepdims=True)
    np.testing.assert_allclose(flip.encode_images(images), expected, atol=1e-6)
    np.testing.assert_array_equal(flip.encode_images(images), flip.encode_images(mirrored))
    _, texts, _ = sample_inputs()
    np.testing.assert_array_equal(flip.encode_texts(texts), plain.encode_texts(texts))


def test_bad_image_tta_is_refused(bundle_dir: Path, tiny_base: str, tmp_path: Path) -> None:
    assert main(train_args(tiny_base, tmp_path / "x", "--image-tta", "rotate")) == 2
    assert not (tmp_path / "x").exists()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("bundle.json", "model.safetensors"):
        (copy / name).write_bytes((bundle_dir / name).read_bytes())
    meta = json.loads((copy / "bundle.json").read_text())
    meta["image_tta"] = "rotate"
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="image test-time augmentation"):
        load_encoder(f"bundle:{copy}", device="cpu")


def test_tower_features_are_cached_without_a_configured_cache_dir(
    tiny_base: str, kfood_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMSEARCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = ["train", "--dataset", "kfood", "--data-dir", str(kfood_sample), "--base", tiny_base]
    args += ["--epochs", "1", "--dim", "32", "--views", "1", "--out", str(tmp_path / "b")]
    assert main(args) == 0
    assert len(list((tmp_path / "xdg" / "mmsearch" / "features").glob("*.npz"))) == 1
