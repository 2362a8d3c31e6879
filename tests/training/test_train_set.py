"""DivE set heads trained beside a frozen bundle (``mmsearch train-set``) and measured
against the single vector (``mmsearch eval --similarity set``), on a tiny trained bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.bundle import export_bundle, load_bundle, read_bundle_meta, write_set_heads, write_sgraf
from models.sgraf import Sgraf, SgrafConfig
from service.cli import main
from tests.bundles import save_tiny_base, train_args
from tests.training.colour_flickr import write_colour_flickr
from training.features import Ragged
from training.set_features import PairedSetFeatures
from training.set_losses import slot_diversity_loss
from training.train_set import (
    Parts,
    SetTrainConfig,
    image_sets,
    new_heads,
    set_similarity,
    train_candidate,
    unique_photo_batches,
)

DIM = 16
COLOURS = (
    *("red", "green", "navy", "yellow", "white", "purple", "orange", "black", "pink"),
    *("teal", "olive", "maroon", "gray", "cyan", "brown", "gold", "silver", "lime"),
    *("indigo", "coral", "khaki", "plum", "tan", "violet"),
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_pairs(seed: int, photos: int = 24) -> PairedSetFeatures:
    """Photos with 4 regions and two captions each whose vectors find them badly; one of a
    caption's n-grams sits near one of its photo's regions: what sets can learn from."""
    rng = np.random.default_rng(seed)
    regions = _unit(rng.standard_normal((photos, 4, DIM)))
    images = _unit(regions.mean(axis=1) + 0.5 * rng.standard_normal((photos, DIM)))
    owner = np.repeat(np.arange(photos), 2)
    texts = _unit(images[owner] + 1.0 * rng.standard_normal((len(owner), DIM)))
    grams = [
        _unit(
            np.stack([regions[j, t % 4] + 0.1 * rng.standard_normal(DIM), rng.standard_normal(DIM)])
        )
        for t, j in enumerate(owner)
    ]
    return PairedSetFeatures(
        [str(i) for i in range(photos)],
        regions.astype(np.float16),
        images,
        texts,
        owner,
        Ragged.from_rows(grams, DIM),
    )


def test_batches_hold_every_text_once_and_no_photo_twice() -> None:
    owner = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    batches = unique_photo_batches(owner, 4, np.random.default_rng(0))
    assert sorted(int(t) for b in batches for t in b) == list(range(len(owner)))
    assert all(len(set(owner[b].tolist())) == len(b) for b in batches)


def test_training_lowers_the_loss_and_keeps_the_epoch_the_tuning_part_liked() -> None:
    torch.set_num_threads(1)
    fit, tune = Parts(synthetic_pairs(0)), Parts(synthetic_pairs(1))
    config = SetTrainConfig(slots=(2,), epochs=6, batch_size=16, lr=3e-3, hidden=16, iterations=1)
    result = train_candidate(fit, tune, 2, 0.1, config, None)
    losses = [float(h["loss"]) for h in result.history[1:]]  # type: ignore[arg-type]
    assert losses[-1] < losses[0] - 0.1
    scores = [float(h["score"]) for h in result.history]  # type: ignore[arg-type]
    assert result.best_score == max(scores)
    assert result.best_epoch == scores.index(max(scores))


def test_untrained_heads_rank_as_the_single_vector() -> None:
    data = synthetic_pairs(2)
    heads = new_heads(DIM, DIM, 3, SetTrainConfig(hidden=16), seed=0)
    single = data.texts @ data.images.T
    sets = set_similarity(heads, data, alpha=16.0)
    # K copies of the vector: SC = cos + log(K) / alpha, the same order.
    np.testing.assert_allclose(sets, single + np.log(3) / 16.0, atol=1e-5)


@pytest.mark.parametrize(
    "fields",
    [{"slots": ()}, {"slots": (0,)}, {"diversity_weights": (-1.0,)}, {"slot_init_std": -0.1}],
)
def test_invalid_options_are_refused(fields: dict) -> None:
    from training.errors import ConfigError

    with pytest.raises(ConfigError):
        SetTrainConfig(**fields)


# --------------------------------------------------------------------------- CLI, tiny bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-set")
    plain = root / "plain"
    assert main(train_args(save_tiny_base(root), plain, "--epochs", "3")) == 0
    return plain


@pytest.fixture(scope="module")
def flickr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_flickr(tmp_path_factory.mktemp("flickr24"), COLOURS)


@pytest.fixture(scope="module")
def trained(bundle: Path, flickr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("train-set-out")
    out, report_path = root / "with-sets", root / "report.json"
    argv = ["train-set", "--model", str(bundle), "--flickr-dir", str(flickr_dir)]
    options = ["--slots", "2", "--diversity-weight", "0.1", "--diversity-weight", "0.5"]
    # The whole folder is the "validation split": half fitted and tuned on, half reported.
    options += ["--val-fraction", "1.0", "--tune-fraction", "0.5", "--epochs", "3"]
    assert main([*argv, *options, "--out", str(out), "--json", str(report_path)]) == 0
    return out, json.loads(report_path.read_text())


def run_eval(tmp_path: Path, model: Path, data_dir: Path, *extra: str) -> dict:
    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(model), "--dataset", "flickr", "--data-dir", str(data_dir)]
    assert main([*argv, "--device", "cpu", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_train_set_writes_float16_heads_that_load_back(bundle: Path, trained: tuple) -> None:
    out, report = trained
    assert [(g["slots"], g["diversity_weight"]) for g in report["grid"]] == [(2, 0.1), (2, 0.5)]
    assert all([h["epoch"] for h in g["history"]] == [0, 1, 2, 3] for g in report["grid"])
    losses = [h["loss"] for h in report["grid"][0]["history"][1:]]
    assert losses[-1] < losses[0]
    photos = report["photos"]
    assert photos["fit"]["flickr"] + photos["tune"]["flickr"] + photos["report"]["flickr"] == 24
    assert set(report["report"]["flickr"]) == {"single", "set"}
    meta = read_bundle_meta(out)
    for modality in ("image", "text"):
        entry = meta["set_heads"][modality]
        weights = out / entry["weights"]
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == entry["weights_sha256"]
        with safe_open(str(weights), "pt") as file:
            assert {file.get_tensor(k).dtype for k in file.keys()} == {torch.float16}  # noqa: SIM118
    loaded = load_bundle(out)
    assert loaded.fingerprint == load_bundle(bundle).fingerprint  # single vectors unchanged
    assert loaded.sets is not None and loaded.sets.slots == 2
    # An existing directory other than the bundle is refused before any training.
    assert main(["train-set", "--model", str(bundle), "--out", str(bundle.parent)]) == 2


def test_eval_set_gives_single_and_set_side_by_side(
    trained: tuple, flickr_dir: Path, tmp_path: Path
) -> None:
    out, report = trained
    result = run_eval(
        tmp_path, out, flickr_dir, "--similarity", "set", "--split", "val-report",
        "--val-fraction", "1.0",
    )  # fmt: skip
    assert set(result["variants"]) == {"single", "set"}
    assert result["n_images"] == report["photos"]["report"]["flickr"]
    assert result["split"]["part"] == "val-report"
    for figures in result["variants"].values():
        assert set(figures) == {"image_to_text", "text_to_image", "rsum"}
    # The CLI's set figures are the ones train-set reported (float16 heads: same ranks here).
    assert result["variants"]["set"]["rsum"] == pytest.approx(
        report["report"]["flickr"]["set"]["rsum"], abs=1.0
    )


def test_untrained_heads_measure_as_single_and_a_reranker_adds_its_variant(
    bundle: Path, flickr_dir: Path, tmp_path: Path
) -> None:
    copy = export_bundle(bundle, tmp_path / "untrained", half=False)
    dim = load_bundle(copy).dim
    write_set_heads(copy, new_heads(dim, dim, 3, SetTrainConfig(hidden=16), seed=0))
    torch.manual_seed(0)
    write_sgraf(copy, Sgraf(SgrafConfig(dim=dim, sim_dim=8, steps=1)))
    result = run_eval(tmp_path, copy, flickr_dir, "--similarity", "set", "--rerank", "sgraf")
    variants = result["variants"]
    assert set(variants) == {"single", "set", "set+rerank"}
    assert variants["set"] == variants["single"]
    assert result["slot_mean_cosine"] == {"image": pytest.approx(1.0), "text": pytest.approx(1.0)}


def test_eval_set_without_heads_is_bad_input(
    bundle: Path, flickr_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "--model", str(bundle), "--dataset", "flickr", "--data-dir", str(flickr_dir)]
    capsys.readouterr()
    assert main([*argv, "--similarity", "set"]) == 2
    assert "carries no trained DivE set heads" in capsys.readouterr().err


def _diversity_gradient(slot_init_std: float) -> float:
    data = synthetic_pairs(3)
    config = SetTrainConfig(hidden=16, slot_init_std=slot_init_std)
    heads = new_heads(DIM, DIM, 2, config, seed=0)
    sets = image_sets(heads["image"], data, range(8))
    slot_diversity_loss(sets).backward()
    grad = heads["image"].out.weight.grad
    return 0.0 if grad is None else float(grad.abs().max())


def test_slots_that_start_as_copies_get_no_diversity_gradient_and_random_ones_do() -> None:
    # K copies of one vector are the diversity term's maximum: nothing pulls them apart.
    assert _diversity_gradient(0.0) < 1e-6
    assert _diversity_gradient(0.01) > 1e-4
