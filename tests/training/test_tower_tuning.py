"""Fine-tuning the offline image tower's top on cached bottom maps (training.tower_tuning)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.bundle import TOWER_FILE, BundleError, load_bundle
from models.encoders import imagenet
from models.encoders.offline import OfflineEncoder
from models.images import load_image
from models.towers import OfflineTowers
from models.vision_top import SPLIT_STAGES, VisionTop, run_bottom
from service.cli import main
from training.tower_tuning import TuneConfig, tune_top


@pytest.fixture(scope="module")
def towers(offline_encoder) -> OfflineTowers:  # type: ignore[no-untyped-def]
    return OfflineTowers(encoder=offline_encoder)


@pytest.fixture(scope="module")
def burritos(burrito_paths: list[Path]) -> list[Image.Image]:
    return [load_image(p) for p in burrito_paths[:4]]


def test_image_regions_are_the_cells_the_pooled_features_average(
    towers: OfflineTowers, burritos: list[Image.Image]
) -> None:
    regions = towers.image_regions(burritos)
    assert regions.shape == (4, 49, 1280) and regions.dtype == np.float16
    pooled = towers.image_features(burritos)[:, :1280]
    np.testing.assert_allclose(regions.astype(np.float32).mean(axis=1), pooled, atol=2e-3)
    assert regions.astype(np.float32).std(axis=1).mean() > 0.1  # the cells do differ


@pytest.mark.parametrize("stage", SPLIT_STAGES)
def test_bottom_then_top_is_the_whole_network(
    offline_encoder: OfflineEncoder, towers: OfflineTowers, stage: int
) -> None:
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pooled, _ = offline_encoder.vision_features(batch)
    with torch.inference_mode():
        maps = run_bottom(offline_encoder.vision_network, batch, stage)
        split = towers.original_top_at(stage)(maps)
    torch.testing.assert_close(split, pooled, rtol=1e-4, atol=1e-4)


def test_features_from_cached_maps_match_direct_features(
    towers: OfflineTowers, burritos: list[Image.Image]
) -> None:
    maps = towers.bottom_maps(burritos, views=2, seed=3)
    assert maps.shape[:2] == (4, 2) and maps.dtype == np.float16
    from_maps = towers.features_from_maps(maps)
    direct = towers.image_features(burritos)
    augmented = towers.augmented_image_features(burritos, 1, seed=3)
    # float16 maps: close, not equal
    np.testing.assert_allclose(from_maps[:, 0], direct, atol=0.05, rtol=0.05)
    np.testing.assert_allclose(from_maps[:, 1], augmented[:, 0], atol=0.05, rtol=0.05)


@pytest.fixture(scope="module")
def two_class_maps(
    towers: OfflineTowers, burritos: list[Image.Image], shared_data: Path
) -> tuple[np.ndarray, list[str]]:
    """Bottom maps (2 views) of four burrito and four apple-pie photos."""
    pies = sorted((shared_data / "food101-10" / "images" / "apple_pie").glob("*.jpg"))[:4]
    images = burritos + [load_image(p) for p in pies]
    return towers.bottom_maps(images, views=2, seed=0), ["burrito"] * 4 + ["pie"] * 4


def test_tuning_fits_the_labels_and_leaves_the_original_alone(
    towers: OfflineTowers, two_class_maps: tuple[np.ndarray, list[str]]
) -> None:
    maps, labels = two_class_maps
    config = TuneConfig(epochs=4, lr=1e-3, head_lr=1e-2, batch_size=4)
    epochs: list[tuple[float, float]] = []
    original = {k: v.clone() for k, v in towers.original_top.state_dict().items()}
    tuned = tune_top(
        towers.original_top, maps, labels, config, lambda _e, loss, acc: epochs.append((loss, acc))
    )
    assert len(epochs) == 4
    assert epochs[-1][0] < epochs[0][0] and epochs[-1][1] >= epochs[0][1]
    for key, value in towers.original_top.state_dict().items():
        assert torch.equal(value, original[key]), key  # tuning works on a copy
    assert any(not torch.equal(v, original[k]) for k, v in tuned.state_dict().items())


def test_mixup_and_stochastic_depth_train_and_leave_a_plain_top(
    towers: OfflineTowers, two_class_maps: tuple[np.ndarray, list[str]]
) -> None:
    maps, labels = two_class_maps
    plain = TuneConfig(epochs=3, lr=1e-3, head_lr=1e-2, batch_size=4)
    regularised = replace(plain, mixup=0.4, drop_path=0.2)
    epochs: list[float] = []
    tuned = tune_top(
        towers.original_top, maps, labels, regularised, lambda _e, loss, _a: epochs.append(loss)
    )
    assert epochs[-1] < epochs[0]
    # The regularisers change the training, and leave no trace in the saved top.
    other = tune_top(towers.original_top, maps, labels, plain)
    assert tuned.state_dict().keys() == towers.original_top.state_dict().keys()
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in tuned.state_dict().items())
    assert not any(type(m).__name__ == "DropPath" for m in tuned.modules())
    again = tune_top(towers.original_top, maps, labels, regularised)  # seeded: reproducible
    for key, value in tuned.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_tuning_needs_two_classes(
    towers: OfflineTowers, two_class_maps: tuple[np.ndarray, list[str]]
) -> None:
    with pytest.raises(ValueError, match="two classes"):
        tune_top(towers.original_top, two_class_maps[0], ["a"] * 8, TuneConfig(epochs=1))


def test_tuned_towers_have_their_own_fingerprint(
    towers: OfflineTowers, burritos: list[Image.Image]
) -> None:
    top = VisionTop(towers._encoder.vision_network)  # noqa: SLF001 - a fresh copy to perturb
    with torch.no_grad():
        top.conv_head.weight.mul_(1.5)
    tuned = towers.with_tuned_top(top)
    assert tuned.fingerprint != towers.fingerprint
    assert tuned.base_fingerprint == towers.fingerprint
    plain, changed = towers.image_features(burritos), tuned.image_features(burritos)
    # pooled half changes, the ConSE half (from the original top) does not
    assert not np.allclose(plain[:, :1280], changed[:, :1280], atol=1e-3)
    np.testing.assert_allclose(plain[:, 1280:], changed[:, 1280:], atol=1e-4)


def test_towers_can_embed_photos_at_another_size(
    towers: OfflineTowers, burritos: list[Image.Image]
) -> None:
    assert imagenet.preprocess(burritos[0], 256).shape == (3, 256, 256)
    assert imagenet.preprocess(burritos[0]).shape == (3, 224, 224)
    bigger = towers.with_image_size(256)
    assert (towers.image_size, bigger.image_size) == (224, 256)
    assert bigger.fingerprint != towers.fingerprint
    expected = towers._features(  # noqa: SLF001 - the network on hand-made 256 px inputs
        torch.stack([imagenet.preprocess(img, 256) for img in burritos])
    )
    got = bigger.image_features(burritos)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, towers.image_features(burritos), atol=1e-3)
    top = VisionTop(towers._encoder.vision_network)  # noqa: SLF001
    assert bigger.with_tuned_top(top).image_size == 256  # a tuned top keeps the size


def _food101_sample(source: Path, dest: Path, per_class: int) -> Path:
    classes = ["apple_pie", "baklava"]
    (dest / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    lines = ["image\tlabel"]
    for label in classes:
        (dest / "images" / label).mkdir(parents=True)
        for path in sorted((source / "images" / label).glob("*.jpg"))[:per_class]:
            shutil.copy(path, dest / "images" / label / path.name)
            lines.append(f"images/{label}/{path.name}\t{label}")
    (dest / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _train_tuned(data: Path, out: Path, cache_dir: Path, *extra: str) -> None:
    """``mmsearch train --tune-tower-epochs 1`` on a food101 folder, caching in ``cache_dir``."""
    args = ["train", "--dataset", "food101", "--data-dir", str(data), "--out", str(out)]
    args += ["--epochs", "2", "--views", "2", "--dim", "32", "--tune-tower-epochs", "1"]
    args += ["--val-fraction", "0.25", *extra]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMSEARCH_CACHE_DIR", str(cache_dir))
        assert main(args) == 0


@pytest.fixture(scope="module")
def food16(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 food101 photos of two classes."""
    return _food101_sample(shared_data / "food101-10", tmp_path_factory.mktemp("food16"), 8)


@pytest.fixture(scope="module")
def tuned_bundle(
    food16: Path, offline_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "bundle"
    _train_tuned(food16, out, offline_cache_dir)
    return out


def test_a_tuned_bundle_carries_and_applies_its_tower(
    tuned_bundle: Path, towers: OfflineTowers, burritos: list[Image.Image]
) -> None:
    meta = json.loads((tuned_bundle / "bundle.json").read_text())
    assert meta["tower"]["weights"] == TOWER_FILE and (tuned_bundle / TOWER_FILE).is_file()
    assert meta["base_fingerprint"] == towers.fingerprint
    assert meta["training"]["tune_tower"]["epochs"] == 1
    encoder = load_bundle(tuned_bundle, towers=towers)
    assert encoder.towers.fingerprint != towers.fingerprint  # the tuned top is in use
    vectors = encoder.encode_images(burritos)
    assert vectors.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = load_bundle(tuned_bundle, towers=towers)
    assert again.fingerprint == encoder.fingerprint
    np.testing.assert_allclose(again.encode_images(burritos), vectors, atol=1e-6)


def test_a_bundle_embeds_photos_at_its_image_size(
    tuned_bundle: Path,
    food16: Path,
    offline_cache_dir: Path,
    towers: OfflineTowers,
    burritos: list[Image.Image],
    tmp_path: Path,
) -> None:
    out = tmp_path / "big"
    _train_tuned(food16, out, offline_cache_dir, "--image-size", "256")
    meta = json.loads((out / "bundle.json").read_text())
    plain_meta = json.loads((tuned_bundle / "bundle.json").read_text())
    assert meta["image_size"] == 256 and "image_size" not in plain_meta
    # The size is how the bundle embeds, not how it trains: the weights are the same.
    assert meta["weights_sha256"] == plain_meta["weights_sha256"]
    big, plain = load_bundle(out, towers=towers), load_bundle(tuned_bundle, towers=towers)
    assert big.towers.image_size == 256 and plain.towers.image_size == 224
    assert big.fingerprint != plain.fingerprint  # snapshots of one refuse the other
    assert not np.allclose(big.encode_images(burritos), plain.encode_images(burritos), atol=1e-3)
    np.testing.assert_array_equal(big.encode_texts(["baklava"]), plain.encode_texts(["baklava"]))
    meta["image_size"] = 20
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="image size"):
        load_bundle(out, towers=towers)


def test_a_tampered_tower_is_refused(
    tuned_bundle: Path, towers: OfflineTowers, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tuned_bundle, copy)
    with open(copy / TOWER_FILE, "r+b") as fp:
        fp.seek(-8, 2)
        fp.write(b"\x00" * 8)
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy, towers=towers)


def test_tower_tuning_options_are_checked(tmp_path: Path, shared_data: Path) -> None:
    flickr = ["--dataset", "flickr", "--data-dir", str(shared_data / "flickr8k")]
    assert main(["train", *flickr, "--out", str(tmp_path / "a"), "--tune-tower-epochs", "1"]) == 2
    base = ["--base", "openclip:mmsearch-tiny-vit"]
    synthetic = ["train", "--dataset", "synthetic", "--out", str(tmp_path / "b"), *base]
    assert main([*synthetic, "--tune-tower-epochs", "1"]) == 2
    food = ["--dataset", "food101", "--data-dir", str(shared_data / "food101-10")]
    deep = ["train", *food, "--out", str(tmp_path / "c"), "--tune-tower-epochs", "1"]
    assert main([*deep, "--tune-tower-from-stage", "2"]) == 2
    assert main([*deep, "--tune-tower-mixup", "-0.5"]) == 2
    assert main([*deep, "--image-size", "32"]) == 2
    assert main([*synthetic, "--epochs", "1", "--image-size", "256"]) == 2  # not offline
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_tuned_top_is_cached_for_the_next_training(
    tuned_bundle: Path, food16: Path, offline_cache_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    (cached,) = (offline_cache_dir / "tops").glob("*.safetensors")
    np.testing.assert_array_equal(
        load_file(str(cached))["conv_head.weight"],
        load_file(str(tuned_bundle / TOWER_FILE))["conv_head.weight"],
    )
    # Mark the cached top: a second training with other joint options must use it.
    marked = {k: v * 1.01 for k, v in load_file(str(cached)).items()}
    save_file(marked, str(cached))
    _train_tuned(food16, tmp_path / "again", offline_cache_dir, "--semantic-weight", "0.5")
    reused = load_file(str(tmp_path / "again" / TOWER_FILE))
    np.testing.assert_array_equal(reused["conv_head.weight"], marked["conv_head.weight"])
