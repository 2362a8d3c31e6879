"""DivE set prediction head: K embeddings per item from its local features and global one.

Kim, Kim and Kwak (CVPR 2023) replace an item's one vector with a small set of
diverse vectors, so an image can sit near several different captions (and a
caption near several images) without one vector averaging them away. The head
here is slot-attention-like (Locatello et al. 2020):

- the inputs are the item's local features (image regions or text n-grams,
  projected into the joint space) plus its global joint vector as one more input;
- K learned slot queries, each shifted by the global vector, attend over the
  inputs for a few iterations. The softmax runs over the *slots* (slots compete
  for the inputs, which pushes them apart), the update is the attention-weighted
  mean of the inputs, a GRU cell and a residual MLP;
- each output is ``normalise(global + W * slot)``: a residual to the global
  embedding, so at initialisation (W starts at zero) every slot is the global
  vector and the set scores exactly as the single vector does.

Training (smooth-Chamfer contrastive loss and the diversity regulariser) is in
:mod:`training.set_losses`; sets are compared with :mod:`models.set_similarity`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.files import load_weights_entry, save_weights_entry


@dataclass(frozen=True)
class SetHeadConfig:
    """Architecture as data (for ``bundle.json``)."""

    local_dim: int  # width of the local features fed in
    dim: int  # joint space: the global vector and each slot
    slots: int = 4
    iterations: int = 3
    hidden: int = 256

    def __post_init__(self) -> None:
        if min(self.local_dim, self.dim, self.slots, self.iterations, self.hidden) < 1:
            raise ValueError("every size of the set head must be positive")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SetHead(nn.Module):
    """(local (B, L, local_dim), mask (B, L), global (B, dim)) -> (B, K, dim) unit slots."""

    def __init__(self, config: SetHeadConfig):
        super().__init__()
        self.config = config
        c = config
        self.local_in = nn.Linear(c.local_dim, c.dim)
        self.norm_inputs = nn.LayerNorm(c.dim)
        self.norm_slots = nn.LayerNorm(c.dim)
        # Distinct starting queries: identical ones would receive identical updates forever.
        self.slot_queries = nn.Parameter(torch.randn(c.slots, c.dim) / math.sqrt(c.dim))
        self.to_q = nn.Linear(c.dim, c.dim, bias=False)
        self.to_k = nn.Linear(c.dim, c.dim, bias=False)
        self.to_v = nn.Linear(c.dim, c.dim, bias=False)
        self.gru = nn.GRUCell(c.dim, c.dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(c.dim), nn.Linear(c.dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.dim)
        )
        self.out = nn.Linear(c.dim, c.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, local: torch.Tensor, mask: torch.Tensor | None, global_: torch.Tensor
    ) -> torch.Tensor:
        b = global_.shape[0]
        inputs = torch.cat([global_[:, None], self.local_in(local)], dim=1)  # (B, 1 + L, dim)
        valid = torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
        if mask is not None:
            valid[:, 1:] = mask.to(torch.bool)
        inputs = self.norm_inputs(inputs)
        keys, values = self.to_k(inputs), self.to_v(inputs)
        slots = self.slot_queries[None].expand(b, -1, -1) + global_[:, None]
        for _ in range(self.config.iterations):
            slots = self._step(slots, keys, values, valid)
        return F.normalize(global_[:, None] + self.out(slots), dim=-1)

    def _step(
        self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        b, k, d = slots.shape
        queries = self.to_q(self.norm_slots(slots))
        logits = torch.einsum("bkd,bld->bkl", queries, keys) / math.sqrt(d)
        attn = logits.softmax(dim=1) * valid[:, None, :].to(logits.dtype)  # compete over slots
        weights = attn / attn.sum(dim=-1, keepdim=True).clamp_min(1e-8)  # mean over inputs
        updates = torch.einsum("bkl,bld->bkd", weights, values)
        slots = self.gru(updates.reshape(b * k, d), slots.reshape(b * k, d)).reshape(b, k, d)
        return slots + self.mlp(slots)


# --------------------------------------------------------------------------- bundle I/O

# A bundle may carry one head per modality: "image" (over image regions) and "text"
# (over word n-gram vectors; recipes use it too, over their title and ingredients).
SET_MODALITIES = ("image", "text")


def save_set_head(
    directory: Path, modality: str, head: SetHead, *, half: bool = False
) -> dict[str, Any]:
    """Write one head's weights (float16 with ``half``) into a bundle directory; returns its
    ``bundle.json`` entry."""
    if modality not in SET_MODALITIES:
        raise ValueError(f"set heads are for {SET_MODALITIES}, not {modality!r}")
    weights = directory / f"set_head_{modality}.safetensors"
    return save_weights_entry(weights, head, head.config.to_dict(), half=half)


def load_set_head(directory: Path, entry: Mapping[str, Any], device: str) -> SetHead:
    """The head a bundle's ``set_heads`` entry describes; ValueError on missing or changed
    weights, or weights that do not fit the config."""
    head = load_weights_entry(
        directory, entry, lambda config: SetHead(SetHeadConfig(**config)), "set head"
    )
    return head.to(device).eval()
