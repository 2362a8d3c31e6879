"""Modality fusion: one vector from any non-empty subset of modalities.

Each modality has its own extractor MLP. The extracted vectors of the
modalities present in a row are pooled (masked mean, or masked attention) and
the pooled vector passes through the fusion MLP. Pooling, not concatenation,
is what lets one network take any subset: a missing modality contributes
nothing instead of a zero block the fusion layers would have to learn to
ignore. Train with random modality dropout (:func:`random_modality_masks`) so
every subset lands in the same space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Pooling = Literal["mean", "attention"]


@dataclass(frozen=True)
class FusionConfig:
    """Architecture as data. ``extractor_layers`` / ``fusion_layers`` count Linear layers."""

    input_dims: tuple[int, ...]
    hidden_dim: int = 128
    output_dim: int = 64
    extractor_layers: int = 3
    fusion_layers: int = 2
    pooling: Pooling = "mean"
    normalize: bool = True  # L2-normalise outputs: the cosine variant

    def __post_init__(self) -> None:
        if not self.input_dims or min(self.input_dims) < 1:
            raise ValueError("input_dims must name at least one positive dimension")
        if self.extractor_layers < 1 or self.fusion_layers < 1:
            raise ValueError("extractor_layers and fusion_layers must be at least 1")
        if self.pooling not in ("mean", "attention"):
            raise ValueError(f"unknown pooling {self.pooling!r}")


def mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class ModalityFusion(nn.Module):
    """Per-modality extractors, masked pooling, fusion layers -> (batch, output_dim)."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_dim
        self.extractors = nn.ModuleList(
            mlp([d] + [hidden] * config.extractor_layers) for d in config.input_dims
        )
        self.fusion = mlp([hidden] * config.fusion_layers + [config.output_dim])
        self.attention_score = nn.Linear(hidden, 1) if config.pooling == "attention" else None

    @property
    def n_modalities(self) -> int:
        return len(self.config.input_dims)

    def forward(self, inputs: Sequence[torch.Tensor | None], present: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        ``inputs[m]`` is a (batch, input_dims[m]) tensor, or None when modality
        ``m`` is missing from every row; ``present`` is a (batch, n_modalities)
        bool mask. Values of missing entries are never read, so they may be
        anything (zeros, NaN).
        """
        present = self._check(inputs, present)
        features = torch.stack(
            [self._extract(m, x, present[:, m]) for m, x in enumerate(inputs)], dim=1
        )  # (batch, n_modalities, hidden)
        pooled = self._pool(features, present)
        out = self.fusion(F.relu(pooled))
        return F.normalize(out, dim=-1) if self.config.normalize else out

    def _extract(self, m: int, x: torch.Tensor | None, present: torch.Tensor) -> torch.Tensor:
        batch = present.shape[0]
        if x is None:
            return present.new_zeros((batch, self.config.hidden_dim), dtype=torch.float32)
        # Zero the missing rows first so NaN placeholders cannot leak through.
        x = torch.where(present[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        return self.extractors[m](x)

    def _pool(self, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        weights = present.to(features.dtype)
        if self.attention_score is not None:
            scores = self.attention_score(torch.tanh(features)).squeeze(-1)
            weights = scores.masked_fill(~present, float("-inf")).softmax(dim=1)
        else:
            weights = weights / weights.sum(dim=1, keepdim=True)
        return (weights.unsqueeze(-1) * features.masked_fill(~present[..., None], 0.0)).sum(1)

    def _check(self, inputs: Sequence[torch.Tensor | None], present: torch.Tensor) -> torch.Tensor:
        if len(inputs) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} modality inputs, got {len(inputs)}")
        if present.ndim != 2 or present.shape[1] != self.n_modalities:
            raise ValueError(
                f"mask must be (batch, {self.n_modalities}), got {tuple(present.shape)}"
            )
        present = present.to(torch.bool)
        if not bool(present.any(dim=1).all()):
            raise ValueError("every row needs at least one present modality")
        for m, (x, dim) in enumerate(zip(inputs, self.config.input_dims, strict=True)):
            if x is None:
                if bool(present[:, m].any()):
                    raise ValueError(f"modality {m} is marked present but its input is None")
            elif x.shape != (present.shape[0], dim):
                raise ValueError(
                    f"modality {m}: expected shape {(present.shape[0], dim)}, got {tuple(x.shape)}"
                )
        return present


def random_modality_masks(
    batch: int, n_modalities: int, generator: torch.Generator, keep: float = 0.5
) -> torch.Tensor:
    """(batch, n_modalities) masks, each modality kept with probability ``keep``.

    Rows that come out empty get one modality back, chosen uniformly, so every
    row is a valid non-empty subset.
    """
    masks = torch.rand((batch, n_modalities), generator=generator) < keep
    empty = ~masks.any(dim=1)
    rescue = torch.randint(n_modalities, (batch,), generator=generator)
    masks[empty, rescue[empty]] = True
    return masks


def all_subsets(n_modalities: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``range(n_modalities)``, smallest first."""
    modalities = range(n_modalities)
    return [s for size in range(1, n_modalities + 1) for s in combinations(modalities, size)]


def subset_mask(subset: Sequence[int], batch: int, n_modalities: int) -> torch.Tensor:
    """The (batch, n_modalities) mask that keeps exactly ``subset`` in every row."""
    mask = torch.zeros((batch, n_modalities), dtype=torch.bool)
    mask[:, list(subset)] = True
    return mask
