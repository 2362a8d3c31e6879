"""The fusion model takes every non-empty modality subset and refuses an empty one."""

from __future__ import annotations

import pytest
import torch

from models.fusion import (
    FusionConfig,
    ModalityFusion,
    all_subsets,
    random_modality_masks,
    subset_mask,
)

DIMS = (6, 9, 4)


def make_model(pooling: str = "mean", normalize: bool = True) -> ModalityFusion:
    torch.manual_seed(0)
    config = FusionConfig(DIMS, hidden_dim=16, output_dim=8, pooling=pooling, normalize=normalize)  # type: ignore[arg-type]
    return ModalityFusion(config).eval()


def batch(n: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, d, generator=generator) for d in DIMS]


def first_layers(model: ModalityFusion) -> list[torch.nn.Linear]:
    return [m for e in model.extractors for m in e.modules() if isinstance(m, torch.nn.Linear)][::3]


def test_all_subsets_lists_every_non_empty_subset() -> None:
    assert all_subsets(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("subset", all_subsets(len(DIMS)))
def test_every_subset_gives_one_unit_vector_per_row(pooling: str, subset: tuple[int, ...]) -> None:
    model = make_model(pooling)
    mask = subset_mask(subset, 5, len(DIMS))
    out = model(batch(), mask)
    assert out.shape == (5, 8)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("subset", all_subsets(len(DIMS)))
def test_missing_modalities_are_never_read(subset: tuple[int, ...]) -> None:
    model = make_model()
    inputs = batch()
    mask = subset_mask(subset, 5, len(DIMS))
    with_nan = [
        x if m in subset else torch.full_like(x, float("nan")) for m, x in enumerate(inputs)
    ]
    as_none = [x if m in subset else None for m, x in enumerate(inputs)]
    expected = model(inputs, mask)
    assert torch.allclose(model(with_nan, mask), expected)
    assert torch.allclose(model(as_none, mask), expected)


def test_mixed_masks_in_one_batch_match_row_by_row() -> None:
    model = make_model("attention")
    inputs = batch(7)
    mask = torch.tensor([[bool(int(c)) for c in f"{i:03b}"] for i in range(1, 8)])
    together = model(inputs, mask)
    for row in range(7):
        alone = model([x[row : row + 1] for x in inputs], mask[row : row + 1])
        assert torch.allclose(together[row], alone[0], atol=1e-6)


def test_euclidean_variant_is_not_normalised() -> None:
    out = make_model(normalize=False)(batch(), torch.ones(5, 3, dtype=torch.bool))
    assert not torch.allclose(out.norm(dim=1), torch.ones(5))


def test_all_missing_row_is_a_value_error() -> None:
    mask = torch.ones(5, 3, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(ValueError, match="at least one present modality"):
        make_model()(batch(), mask)


def test_bad_shapes_are_value_errors() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="3 modality inputs"):
        model(batch()[:2], torch.ones(5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        model(batch(), torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="input is None"):
        model([None, *batch()[1:]], torch.ones(5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected shape"):
        model([torch.ones(5, 7), *batch()[1:]], torch.ones(5, 3, dtype=torch.bool))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        FusionConfig(())
    with pytest.raises(ValueError):
        FusionConfig(DIMS, pooling="max")  # type: ignore[arg-type]


def test_extractor_and_fusion_depth_follow_the_config() -> None:
    model = ModalityFusion(FusionConfig(DIMS, hidden_dim=16, output_dim=8))
    linear = torch.nn.Linear
    extractors = [e for e in model.extractors if isinstance(e, torch.nn.Sequential)]
    assert len(extractors) == 3
    assert all(sum(isinstance(m, linear) for m in e) == 3 for e in extractors)
    assert sum(isinstance(m, linear) for m in model.fusion) == 2


def test_random_masks_are_non_empty_and_seeded() -> None:
    first = random_modality_masks(1000, 3, torch.Generator().manual_seed(0))
    again = random_modality_masks(1000, 3, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    assert first.any(dim=1).all()
    # Every one of the seven subsets is drawn.
    assert len({tuple(row.tolist()) for row in first}) == 7


def test_gradients_flow_only_to_present_extractors() -> None:
    model = make_model()
    model(batch(), subset_mask((1,), 5, 3)).sum().backward()
    grads = [layer.weight.grad for layer in first_layers(model)]
    assert grads[0] is None or not grads[0].any()
    assert grads[1] is not None and grads[1].any()
