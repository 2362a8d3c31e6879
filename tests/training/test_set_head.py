"""The DivE set head and its losses: shapes, the diversity term at work, a tiny task learnt."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.set_head import SetHead, SetHeadConfig
from training.set_losses import set_contrastive_loss, slot_diversity_loss

DIM = 16


def _paired_task(b: int = 32, length: int = 6) -> tuple[torch.Tensor, ...]:
    """Image-like and text-like local features of b items (noisy copies of each other)."""
    gen = torch.Generator().manual_seed(0)
    image_local = torch.randn(b, length, DIM, generator=gen)
    image_global = F.normalize(
        image_local.mean(1) + 0.3 * torch.randn(b, DIM, generator=gen), dim=-1
    )
    text_local = image_local + 0.5 * torch.randn(b, length, DIM, generator=gen)
    return image_local, image_global, text_local, F.normalize(text_local.mean(1), dim=-1)


def _train(diversity_weight: float, steps: int = 30) -> tuple[float, list[float]]:
    """(mean pairwise slot cosine after training, contrastive loss per step)."""
    torch.manual_seed(0)
    config = SetHeadConfig(local_dim=DIM, dim=DIM, slots=4, iterations=2, hidden=32)
    image_head, text_head = SetHead(config), SetHead(config)
    params = [*image_head.parameters(), *text_head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    image_local, image_global, text_local, text_global = _paired_task()
    losses = []
    for _ in range(steps):
        image_sets = image_head(image_local, None, image_global)
        text_sets = text_head(text_local, None, text_global)
        contrastive = set_contrastive_loss(image_sets, text_sets)
        diversity = slot_diversity_loss(image_sets) + slot_diversity_loss(text_sets)
        optimizer.zero_grad()
        (contrastive + diversity_weight * diversity).backward()
        optimizer.step()
        losses.append(contrastive.item())
    with torch.no_grad():
        return slot_diversity_loss(image_head(image_local, None, image_global)).item(), losses


def test_output_shape_unit_norm_and_starts_as_the_global_vector() -> None:
    head = SetHead(SetHeadConfig(local_dim=12, dim=DIM, slots=3))
    local, global_ = torch.randn(5, 7, 12), F.normalize(torch.randn(5, DIM), dim=-1)
    sets = head(local, None, global_)
    assert sets.shape == (5, 3, DIM)
    assert torch.allclose(sets.norm(dim=-1), torch.ones(5, 3), atol=1e-5)
    # The output layer starts at zero: every slot is the global vector (no worse than it).
    assert torch.allclose(sets, global_[:, None].expand(-1, 3, -1), atol=1e-6)


def test_padding_is_ignored() -> None:
    torch.manual_seed(0)
    head = SetHead(SetHeadConfig(local_dim=DIM, dim=DIM, slots=3))
    torch.nn.init.normal_(head.out.weight)  # let the slots differ from the global vector
    local, global_ = torch.randn(2, 5, DIM), torch.randn(2, DIM)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    padded = head(local, mask, global_)
    alone = head(local[1:, :2], None, global_[1:])
    assert torch.allclose(padded[1], alone[0], atol=1e-5)


def test_diversity_term_keeps_slots_apart() -> None:
    with_term, _ = _train(diversity_weight=0.1)
    without_term, _ = _train(diversity_weight=0.0)
    # Without it the slots stay (nearly) copies of the global vector.
    assert without_term > 0.9
    assert with_term < 0.5
    assert without_term - with_term > 0.4


def test_contrastive_loss_decreases_on_a_tiny_task() -> None:
    _, losses = _train(diversity_weight=0.1)
    assert losses[-1] < 0.5 * losses[0]


def test_diversity_loss_values() -> None:
    same = torch.ones(2, 3, 4)
    assert slot_diversity_loss(same).item() == pytest.approx(1.0)
    orthogonal = torch.eye(3)[None]
    assert slot_diversity_loss(orthogonal).item() == pytest.approx(0.0)
    assert slot_diversity_loss(torch.ones(2, 1, 4)).item() == 0.0


def test_config_refuses_non_positive_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        SetHeadConfig(local_dim=4, dim=4, slots=0)
