"""The synthetic study in miniature: seeded data, a short training run, the table."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.fusion import FusionConfig, ModalityFusion
from training.bench_synthetic import (
    KNOWN_CLASSES,
    AdditiveEmbedding,
    TrainSettings,
    TwoPartFusion,
    _lr_factor,
    evaluate_subset,
    format_synthetic_table,
    prototype_topk,
    raw_feature_baseline,
    run_synthetic_benchmark,
    train_fusion,
)
from training.synthetic import make_synthetic_dataset


def test_dataset_shape_split_and_determinism() -> None:
    data = make_synthetic_dataset(3)
    assert data.dims == (6, 9, 4)
    assert [m.shape for m in data.train.modalities] == [(9100, 6), (9100, 9), (9100, 4)]
    assert [m.shape for m in data.test.modalities] == [(900, 6), (900, 9), (900, 4)]
    assert np.array_equal(np.bincount(data.train.labels), np.full(100, 91))
    assert all(m.dtype == np.float32 for m in data.train.modalities)
    again = make_synthetic_dataset(3)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(data.test.modalities, again.test.modalities, strict=True)
    )
    other = make_synthetic_dataset(4)
    assert not np.array_equal(data.test.modalities[0], other.test.modalities[0])


def test_dataset_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_synthetic_dataset(0, test_fraction=1.5)
    with pytest.raises(ValueError):
        make_synthetic_dataset(0, dims=())


def test_prototype_topk_by_hand() -> None:
    prototypes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    queries = torch.tensor([[1.0, 0.0], [6.0, 0.0]])
    labels = torch.tensor([0, 0])
    scores = prototype_topk(queries, labels, prototypes, "euclidean", ks=(1, 2))
    assert scores == {1: 50.0, 2: 100.0}


@pytest.fixture(scope="module")
def short_run() -> dict[tuple[int, ...], dict[str, dict[int, float]]]:
    """One seed, one K, a fifth of the benchmark's training: a few seconds on one core."""
    data = make_synthetic_dataset(0)
    settings = TrainSettings(metric="cosine", negatives=200, sample_budget=40_000)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_fusion(data.train.of_classes(KNOWN_CLASSES), data.dims, settings, seed=0)
    finally:
        torch.set_num_threads(previous)
    return {s: evaluate_subset(model, data, s, "cosine") for s in [(0,), (0, 1, 2)]}


def test_short_training_beats_chance_widely(short_run: dict) -> None:
    everything = short_run[(0, 1, 2)]
    # Chance top-1 is 1/30, 1/51 and 1/100.
    assert everything["known"][1] > 80.0
    assert everything["known_unknown"][1] > 60.0
    assert everything["all"][1] > 50.0
    assert everything["all"][5] > everything["all"][1]


def test_all_modalities_beat_modality_zero_alone(short_run: dict) -> None:
    assert short_run[(0, 1, 2)]["known"][1] > short_run[(0,)]["known"][1] + 10.0


@pytest.mark.slow
def test_training_is_deterministic() -> None:
    data = make_synthetic_dataset(1, n_classes=31, per_class=20)
    settings = TrainSettings(metric="euclidean", negatives=20, sample_budget=210)
    known = data.train.of_classes(KNOWN_CLASSES)
    first = train_fusion(known, data.dims, settings, seed=5)
    second = train_fusion(known, data.dims, settings, seed=5)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lighter_class_views_change_training_only_when_asked() -> None:
    data = make_synthetic_dataset(1, n_classes=31, per_class=20)
    known = data.train.of_classes(KNOWN_CLASSES)
    shared = TrainSettings(metric="cosine", negatives=20, sample_budget=63, supervised_noise=1.0)
    lighter = replace(shared, supervised_noise=0.25)
    assert shared.noise == 1.0 and TrainSettings("cosine", 20).supervised_noise < 1.0
    first = train_fusion(known, data.dims, shared, seed=2)
    second = train_fusion(known, data.dims, lighter, seed=2)
    assert any(
        not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )


def test_raw_baseline_and_table() -> None:
    data = make_synthetic_dataset(0)
    raw = raw_feature_baseline(data, (0, 1, 2))
    assert raw["known"][1] > 80.0

    def stat(value: float) -> dict:
        return {"mean": value, "std": 0.0, "values": [value]}

    def row(model: str, k: int | None, subset: list[int]) -> dict:
        return {
            "model": model,
            "k": k,
            "subset": subset,
            "top1": {c: stat(50.0) for c in ("known", "known_unknown", "all")},
            "top5": {c: stat(90.0) for c in ("known", "known_unknown", "all")},
        }

    result = {
        "seeds": [0],
        "k_reading": "negatives",
        "rows": [
            row("raw", None, [0, 1, 2]),
            row("cosine", 200, [0]),
            row("cosine", 200, [0, 1, 2]),
        ],
        "study": {
            "all_modalities": {"top1": {"known": 97.53, "known_unknown": 85.16, "all": 73.56}},
            "modality_0": {"top1": {"known": 63.27, "known_unknown": 46.02, "all": 29.78}},
        },
    }
    table = format_synthetic_table(result)
    assert "97.53" in table and "63.27" in table
    assert "cosine K=200 [0+1+2]" in table
    assert "50.00±0.00" in table


@pytest.mark.slow
def test_run_synthetic_benchmark_rows_are_json_ready() -> None:
    result = run_synthetic_benchmark(1, ks=(5,), metrics=("euclidean",), progress=False)
    json.dumps(result)  # the CLI writes it with --json
    models = {(row["model"], row["k"]) for row in result["rows"]}
    assert models == {("raw", None), ("euclidean", 5)}
    assert len(result["rows"]) == 2 * 7
    assert result["rows"][-1]["top1"]["all"]["values"] == [
        result["rows"][-1]["top1"]["all"]["mean"]
    ]
    with pytest.raises(ValueError):
        run_synthetic_benchmark(1, metrics=("manhattan",), progress=False)


def test_cosine_schedule_decays_to_zero_and_bad_schedules_fail() -> None:
    factor = _lr_factor("cosine", 100)
    assert factor(0) == pytest.approx(1.0)
    assert factor(50) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0)
    assert _lr_factor("constant", 100)(70) == 1.0
    data = make_synthetic_dataset(1, n_classes=31, per_class=20)
    settings = TrainSettings(
        metric="cosine",
        negatives=20,
        sample_budget=21,
        schedule="step",  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError, match="schedule"):
        train_fusion(data.train.of_classes(KNOWN_CLASSES), data.dims, settings, seed=0)


def test_the_additive_half_ignores_missing_modalities() -> None:
    torch.manual_seed(0)
    additive = AdditiveEmbedding((6, 9, 4), centres=8, width=0.25, output_dim=16)
    inputs = [torch.randn(5, d) for d in (6, 9, 4)]
    present = torch.tensor([[True, False, True]] * 5)
    out = additive(inputs, present)
    np.testing.assert_allclose(out.detach().norm(dim=1).numpy(), 1.0, atol=1e-5)
    changed = [inputs[0], torch.randn(5, 9), inputs[2]]  # only the absent modality differs
    torch.testing.assert_close(additive(changed, present), out)
    torch.testing.assert_close(additive([inputs[0], None, inputs[2]], present), out)
    assert not torch.allclose(additive(inputs, torch.ones(5, 3, dtype=torch.bool)), out)


def test_two_part_cosine_is_the_weighted_cosine_of_the_halves() -> None:
    torch.manual_seed(0)
    dims = (6, 9, 4)
    fusion = ModalityFusion(FusionConfig(input_dims=dims, output_dim=16, normalize=True))
    additive = AdditiveEmbedding(dims, centres=8, width=0.25, output_dim=16)
    model = TwoPartFusion(fusion, additive, share=0.4)
    a, b = ([torch.randn(3, d) for d in dims] for _ in range(2))
    present = torch.ones(3, 3, dtype=torch.bool)
    cos = (model(a, present) * model(b, present)).sum(1)
    parts = [(m(a, present) * m(b, present)).sum(1) for m in (fusion, additive)]
    torch.testing.assert_close(cos, 0.6 * parts[0] + 0.4 * parts[1])


def test_additive_share_zero_trains_the_study_network_alone() -> None:
    data = make_synthetic_dataset(1, n_classes=31, per_class=20)
    known = data.train.of_classes(KNOWN_CLASSES)
    settings = TrainSettings(metric="cosine", negatives=20, sample_budget=63)
    assert isinstance(train_fusion(known, data.dims, settings, seed=2), TwoPartFusion)
    plain = train_fusion(known, data.dims, replace(settings, additive_share=0.0), seed=2)
    assert isinstance(plain, ModalityFusion)
    euclidean = train_fusion(known, data.dims, replace(settings, metric="euclidean"), seed=2)
    assert isinstance(euclidean, ModalityFusion)  # the additive half is for cosine models
