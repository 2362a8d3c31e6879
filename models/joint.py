"""The trained part of a bundle: heads into one joint space, the recipe encoder, fusion.

Everything here sits on top of frozen tower features (:mod:`models.towers`):

- :class:`ProjectionHead` maps image features and query-text features into the
  joint space (an MLP plus a linear skip, so a near-linear map is easy to learn
  from a few hundred pairs).
- :class:`RecipeEncoder` follows im2recipe: the ordered ingredient vectors and
  the ordered instruction vectors each go through a bidirectional GRU (masked
  mean over time), concatenated with the title vector and the plain means of
  both sequences, then projected.
- Fusion: :class:`~models.fusion.ModalityFusion` over the per-modality joint
  vectors of whatever subset is present, added to their masked mean. At
  initialisation the fused vector is the mean of the parts (already a sensible
  point in the joint space); training learns the correction.

Outputs are L2-normalised (cosine metric) or raw (Euclidean).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.fusion import FusionConfig, ModalityFusion
from models.types import Metric, check_metric

MODALITIES = ("image", "text", "recipe")


@dataclass(frozen=True)
class JointConfig:
    """Architecture as data; saved in ``bundle.json``."""

    image_dim: int
    text_dim: int
    dim: int = 384
    hidden: int = 1024
    recipe_hidden: int = 256
    dropout: float = 0.2
    metric: Metric = "cosine"

    def __post_init__(self) -> None:
        check_metric(self.metric)
        if min(self.image_dim, self.text_dim, self.dim, self.hidden, self.recipe_hidden) < 1:
            raise ValueError("every dimension must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ProjectionHead(nn.Module):
    """``Linear`` skip + (Linear, GELU, Dropout, Linear)."""

    def __init__(self, d_in: int, hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.skip = nn.Linear(d_in, d_out)
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.skip(x) + self.mlp(x)


@dataclass
class RecipeBatch:
    """Padded recipe features: (batch, length, text_dim) sequences with lengths."""

    titles: torch.Tensor  # (b, text_dim)
    ingredients: torch.Tensor  # (b, L_i, text_dim)
    ingredient_lengths: torch.Tensor  # (b,) int64, may be 0
    instructions: torch.Tensor  # (b, L_s, text_dim)
    instruction_lengths: torch.Tensor  # (b,)

    def to(self, device: torch.device | str) -> RecipeBatch:
        return RecipeBatch(
            self.titles.to(device),
            self.ingredients.to(device),
            self.ingredient_lengths,
            self.instructions.to(device),
            self.instruction_lengths,
        )


class SequenceEncoder(nn.Module):
    """Bidirectional GRU over a padded sequence, masked mean over time (zeros if empty)."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(d_in, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, length, _ = seq.shape
        if length == 0:
            return seq.new_zeros((b, self.out_dim))
        packed = nn.utils.rnn.pack_padded_sequence(
            seq, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        return _masked_mean(out, lengths)


def _masked_mean(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    steps = torch.arange(seq.shape[1], device=seq.device)
    mask = (steps[None, :] < lengths.to(seq.device)[:, None]).to(seq.dtype)
    total = (seq * mask[..., None]).sum(1)
    return total / mask.sum(1, keepdim=True).clamp_min(1.0)


class RecipeEncoder(nn.Module):
    """im2recipe-style: title + GRU(ingredients) + GRU(instructions) -> joint space."""

    def __init__(self, text_dim: int, recipe_hidden: int, hidden: int, dim: int, dropout: float):
        super().__init__()
        self.ingredients = SequenceEncoder(text_dim, recipe_hidden)
        self.instructions = SequenceEncoder(text_dim, recipe_hidden)
        d_in = 3 * text_dim + self.ingredients.out_dim + self.instructions.out_dim
        self.head = ProjectionHead(d_in, hidden, dim, dropout)

    def forward(self, batch: RecipeBatch) -> torch.Tensor:
        parts = [
            batch.titles,
            _masked_mean(batch.ingredients, batch.ingredient_lengths),
            _masked_mean(batch.instructions, batch.instruction_lengths),
            self.ingredients(batch.ingredients, batch.ingredient_lengths),
            self.instructions(batch.instructions, batch.instruction_lengths),
        ]
        return self.head(torch.cat(parts, dim=1))


class JointModel(nn.Module):
    """Image head, text head, recipe encoder and fusion over one joint space."""

    def __init__(self, config: JointConfig):
        super().__init__()
        self.config = config
        c = config
        self.image_head = ProjectionHead(c.image_dim, c.hidden, c.dim, c.dropout)
        self.text_head = ProjectionHead(c.text_dim, c.hidden, c.dim, c.dropout)
        self.recipe_encoder = RecipeEncoder(c.text_dim, c.recipe_hidden, c.hidden, c.dim, c.dropout)
        self.fusion = ModalityFusion(
            FusionConfig(
                input_dims=(c.dim,) * len(MODALITIES),
                hidden_dim=c.dim,
                output_dim=c.dim,
                extractor_layers=1,
                fusion_layers=2,
                normalize=False,
            )
        )

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.config.metric == "cosine" else x

    def embed_images(self, features: torch.Tensor) -> torch.Tensor:
        return self._finish(self.image_head(features))

    def embed_texts(self, features: torch.Tensor) -> torch.Tensor:
        return self._finish(self.text_head(features))

    def embed_recipes(self, batch: RecipeBatch) -> torch.Tensor:
        return self._finish(self.recipe_encoder(batch))

    def fuse(self, parts: list[torch.Tensor | None], present: torch.Tensor) -> torch.Tensor:
        """One vector from the joint vectors of the modalities present (``MODALITIES`` order)."""
        present = present.to(torch.bool)
        zeros = present.new_zeros((present.shape[0], self.config.dim), dtype=torch.float32)
        stacked = torch.stack([zeros if p is None else p for p in parts], dim=1)
        mean = _masked_mean_modalities(stacked, present)
        return self._finish(mean + self.fusion(parts, present))


def _masked_mean_modalities(stacked: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    weights = present.to(stacked.dtype)
    stacked = stacked.masked_fill(~present[..., None], 0.0)
    return (stacked * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)


def pad_recipes(
    titles: list[torch.Tensor], ingredients: list[torch.Tensor], instructions: list[torch.Tensor]
) -> RecipeBatch:
    """A :class:`RecipeBatch` from per-recipe tensors (sequences may be empty)."""
    dim = titles[0].shape[-1]

    def pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        longest = int(lengths.max()) if len(seqs) else 0
        out = torch.zeros((len(seqs), longest, dim), dtype=torch.float32)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
        return out, lengths

    ingr, ingr_len = pad(ingredients)
    steps, steps_len = pad(instructions)
    return RecipeBatch(torch.stack(titles), ingr, ingr_len, steps, steps_len)
