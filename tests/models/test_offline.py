"""The embedded offline encoder: ImageNet vision tower + E5 text space via ConSE."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.encoders import Encoder
from models.encoders.imagenet import (
    WeightMappingError,
    label_texts,
    map_lukemelas_to_timm,
    preprocess,
)
from models.images import load_image
from models.types import Recipe

pytestmark = pytest.mark.slow


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def _unit_rows(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


def test_protocol_and_identity(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(offline_encoder, Encoder)
    assert offline_encoder.dim == 384
    assert offline_encoder.device == "cpu"
    assert re.fullmatch(r"offline-[0-9a-f]{16}", offline_encoder.fingerprint)


def test_label_bank_cached_on_disk(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    path = offline_encoder.label_cache_path
    assert path.is_file() and path.parent == offline_encoder.cache_dir
    bank = np.load(path)
    assert bank.shape == (1000, 384) and bank.dtype == np.float32
    assert _unit_rows(bank)
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temp file


def test_bad_cache_file_is_recomputed(offline_encoder, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(offline_encoder, "cache_dir", tmp_path)
    path = offline_encoder.label_cache_path
    np.save(path, np.zeros((10, 384), np.float32))  # wrong shape
    fake = np.eye(1000, 384, dtype=np.float32)
    calls = []

    def fake_embed(texts, *, is_query):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return fake

    monkeypatch.setattr(offline_encoder, "_embed", fake_embed)
    assert np.array_equal(offline_encoder._load_label_bank(), fake)
    assert calls == [1000]
    assert np.array_equal(np.load(path), fake)  # rewritten
    assert np.array_equal(offline_encoder._load_label_bank(), fake)
    assert calls == [1000]  # second time from disk


def test_texts_shapes_norms_determinism(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    texts = ["김치찌개", "kimchi stew", "chocolate cake", ""]
    a = offline_encoder.encode_texts(texts)
    b = offline_encoder.encode_texts(texts)
    assert a.shape == (4, 384) and a.dtype == np.float32
    assert _unit_rows(a)
    np.testing.assert_array_equal(a, b)
    assert offline_encoder.encode_texts([]).shape == (0, 384)


def test_korean_english_similarity(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    kimchi_ko, kimchi_en, cake, bibim_ko, bibim_en = offline_encoder.encode_texts(
        ["김치찌개", "kimchi stew", "chocolate cake", "비빔밥", "bibimbap rice bowl"]
    )
    assert _cos(kimchi_ko, kimchi_en) > _cos(kimchi_ko, cake)
    assert _cos(bibim_ko, bibim_en) > _cos(bibim_ko, cake)
    assert _cos(kimchi_en, cake) < _cos(kimchi_en, kimchi_ko)


def test_recipes(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    short = Recipe(
        "김치찌개", ("김치", "돼지고기", "두부"), ("김치를 볶는다.", "물을 붓고 끓인다.")
    )
    long = Recipe(
        "긴 레시피",
        tuple(f"재료{i}" for i in range(200)),
        tuple(f"{i}단계를 한다." for i in range(200)),
    )
    vectors = offline_encoder.encode_recipes([short, long])
    assert vectors.shape == (2, 384) and _unit_rows(vectors)
    assert offline_encoder.recipe_text(short) == short.as_text()
    cut = offline_encoder.recipe_text(long)
    assert long.as_text().startswith(cut) and len(cut) < len(long.as_text())
    assert offline_encoder._e5.token_count(cut, False) <= offline_encoder.max_recipe_tokens
    stew, cake = offline_encoder.encode_texts(["kimchi stew", "chocolate cake"])
    assert _cos(vectors[0], stew) > _cos(vectors[0], cake)
    assert offline_encoder.encode_recipes([]).shape == (0, 384)


def test_preprocess_matches_timm_eval_layout() -> None:
    x = preprocess(Image.new("RGB", (320, 200), (255, 0, 128)))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[:, 100, 100], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-5)


def test_images_shapes_norms_batching(offline_encoder, burrito_paths) -> None:  # type: ignore[no-untyped-def]
    images = [load_image(p) for p in burrito_paths[:4]] + [Image.new("RGB", (50, 300), "white")]
    together = offline_encoder.encode_images(images)
    assert together.shape == (5, 384) and together.dtype == np.float32 and _unit_rows(together)
    one_by_one = np.concatenate([offline_encoder.encode_images([img]) for img in images])
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)
    np.testing.assert_array_equal(together, offline_encoder.encode_images(images))
    assert offline_encoder.encode_images([]).shape == (0, 384)


def test_imagenet_weights_are_right(offline_encoder, burrito_paths) -> None:  # type: ignore[no-untyped-def]
    """Real food photos get their ImageNet class: the weight mapping and padding are right.

    With the correct tf_ ("same") padding and mean/std 0.5 the ten sample
    burrito photos give 'burrito' top-1 7/10 and top-5 10/10; a mis-mapped
    checkpoint gives noise.
    """
    top5 = offline_encoder.classify([load_image(p) for p in burrito_paths], k=5)
    in_top1 = sum(preds[0][0] == "burrito" for preds in top5)
    in_top5 = sum(any(label == "burrito" for label, _ in preds) for preds in top5)
    assert in_top5 >= 8, top5
    assert in_top1 >= 5, top5
    for preds in top5:
        probs = [p for _, p in preds]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_bn_statistics_loaded(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    state = offline_encoder._vision.state_dict()
    running_vars = [v for k, v in state.items() if k.endswith("running_var")]
    assert len(running_vars) == 49
    assert not any(torch.allclose(v, torch.ones_like(v)) for v in running_vars)  # not fresh init


def test_mapping_fails_loudly_on_mismatch() -> None:
    target = OrderedDict([("a.weight", torch.zeros(3)), ("b.weight", torch.zeros(2, 2))])
    with pytest.raises(WeightMappingError, match="expects 2"):
        map_lukemelas_to_timm(OrderedDict([("_x.weight", torch.zeros(3))]), target)
    wrong_shape = OrderedDict([("_a.weight", torch.zeros(3)), ("_b.weight", torch.zeros(2, 3))])
    with pytest.raises(WeightMappingError, match=r"shape \(2, 3\)"):
        map_lukemelas_to_timm(wrong_shape, target)
    named = OrderedDict([("m.weight", torch.zeros(3)), ("m.bias", torch.zeros(3))])
    swapped = OrderedDict([("n.bias", torch.ones(3)), ("n.weight", torch.ones(3))])
    with pytest.raises(WeightMappingError, match="does not pair"):
        map_lukemelas_to_timm(swapped, named)
    good = OrderedDict([("_x.weight", torch.ones(3)), ("_y.weight", torch.ones(2, 2))])
    mapped = map_lukemelas_to_timm(good, target)
    assert list(mapped) == ["a.weight", "b.weight"]


def test_label_texts() -> None:
    labels = label_texts()
    assert len(labels) == 1000
    assert labels[965].startswith("burrito")


def test_conse_vectors_live_in_text_space(
    offline_encoder, burrito_paths, shared_data: Path
) -> None:  # type: ignore[no-untyped-def]
    from models.datasets import open_dataset

    dogs = [
        r.image_path
        for r in open_dataset(shared_data / "flickr8k", "flickr")
        if all("dog" in c.lower() for c in r.texts)
    ][:10]
    food = offline_encoder.encode_images([load_image(p) for p in burrito_paths])
    dog = offline_encoder.encode_images([load_image(p) for p in dogs])
    t_burrito, t_dog, t_car = offline_encoder.encode_texts(["burrito", "a dog", "sports car"])
    assert np.all(food @ t_burrito > food @ t_dog)
    assert np.all(food @ t_burrito > food @ t_car)
    assert np.mean(dog @ t_dog > dog @ t_burrito) >= 0.8
    assert np.mean(dog @ t_dog > dog @ t_car) >= 0.8


def test_fingerprint_tracks_config(offline_encoder, offline_cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from models.encoders.offline import OfflineEncoder

    same = OfflineEncoder(device="cpu", cache_dir=offline_cache_dir)
    assert same.fingerprint == offline_encoder.fingerprint
    other = OfflineEncoder(device="cpu", cache_dir=offline_cache_dir, top_t=5)
    assert other.fingerprint != offline_encoder.fingerprint
    assert other.label_cache_path == offline_encoder.label_cache_path  # bank is shared


def test_constructor_validation(offline_cache_dir: Path) -> None:
    from models.encoders.offline import OfflineEncoder

    with pytest.raises(ValueError, match="top_t"):
        OfflineEncoder(device="cpu", cache_dir=offline_cache_dir, top_t=0)
    with pytest.raises(ValueError, match="fp16"):
        OfflineEncoder(device="cpu", cache_dir=offline_cache_dir, precision="fp16")
    with pytest.raises(ValueError, match="device"):
        OfflineEncoder(device="tpu", cache_dir=offline_cache_dir)
