"""A compact SGRAF scorer (Diao et al., AAAI 2021, "Similarity Reasoning and Filtration").

One score per (query, candidate) pair from *vector-valued* similarities:

- **Similarity representations.** ``s(x, y) = W |x - y|^2 / ||W |x - y|^2||_2``:
  the element-wise squared difference, linearly mapped to ``sim_dim`` and
  L2-normalised, so a similarity keeps *which* dimensions agree, not just how much.
  - local: each query part ``t_i`` (a word / n-gram) attends over the candidate's
    parts (image regions, or whatever local rows it has), ``a_i = sum_j
    softmax_j(lambda * cos(t_i, v_j)) v_j``, and ``s_i = s(a_i, t_i)``;
  - global: ``s_g = s(whole query, whole candidate)``.
- **SGR** (similarity graph reasoning): the nodes ``[s_g, s_1, ..., s_L]`` are a
  fully connected graph with edges ``softmax_q((W_in s_p) . (W_out s_q))``; a few
  steps of ``s_p <- ReLU(W_r sum_q e_pq s_q)``; the global node then gives a score.
- **SAF** (similarity attention filtration): each node gets a weight
  ``sigmoid(LN(W_f s_p))``, normalised over the nodes, so meaningless alignments
  (stop words, background regions) are filtered out of the weighted sum, which
  gives a second score.

The paper trains SGR and SAF as two models and averages their scores; here they
share the similarity representations and the final score is the mean of the two
heads. Differences from the paper, and why: LayerNorm in place of BatchNorm in
SAF (a candidate's score must not depend on the other candidates in the batch,
which the re-ranker's order invariance needs); the inputs are already joint-space
vectors, so there is no region or word encoder here.

Every candidate is scored independently of the others, so permuting the
candidates permutes the scores; nothing is random at inference.

:class:`SgrafReranker` puts the module behind :class:`models.rerank.Reranker`;
:func:`save_sgraf` / :func:`load_sgraf` are its part of a bundle directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.files import load_weights_entry, save_weights_entry
from models.rerank import SGRAF, SetFeatures


@dataclass(frozen=True)
class SgrafConfig:
    """Architecture as data (saved beside the weights in the bundle)."""

    dim: int  # width of the query and candidate vectors (the joint space)
    sim_dim: int = 64
    steps: int = 3  # graph reasoning steps
    attention_scale: float = 9.0  # lambda of the local attention (as in SCAN / SGRAF)
    # When set, the score adds a learned multiple (starting here) of the cosine of the two
    # wholes: a re-ranker then starts from the vector search's order and learns corrections
    # to it, instead of having to rediscover it through the similarity vectors.
    vector_scale: float | None = None

    def __post_init__(self) -> None:
        if min(self.dim, self.sim_dim, self.steps) < 1:
            raise ValueError("every size of the SGRAF scorer must be positive")
        if self.attention_scale <= 0:
            raise ValueError("attention_scale must be positive")
        if self.vector_scale is not None and self.vector_scale < 0:
            raise ValueError("vector_scale must not be negative")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SimilarityRepresentation(nn.Module):
    """``W |x - y|^2`` normalised: a vector-valued similarity of two (..., dim) tensors."""

    def __init__(self, dim: int, sim_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, sim_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj((x - y).pow(2)), dim=-1)


class GraphReasoning(nn.Module):
    """One SGR step over (N, P, sim_dim) nodes."""

    def __init__(self, sim_dim: int):
        super().__init__()
        self.w_in = nn.Linear(sim_dim, sim_dim)
        self.w_out = nn.Linear(sim_dim, sim_dim)
        self.w_r = nn.Linear(sim_dim, sim_dim)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        edges = torch.softmax(self.w_in(nodes) @ self.w_out(nodes).transpose(1, 2), dim=-1)
        return F.relu(self.w_r(edges @ nodes))


class AttentionFiltration(nn.Module):
    """SAF: a weighted sum of the (N, P, sim_dim) nodes, weights from each node alone."""

    def __init__(self, sim_dim: int):
        super().__init__()
        self.w_f = nn.Linear(sim_dim, 1)
        self.norm = nn.LayerNorm(1)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.norm(self.w_f(nodes)))  # (N, P, 1)
        weights = gates / gates.sum(dim=1, keepdim=True)
        return F.normalize((weights * nodes).sum(dim=1), dim=-1)


class Sgraf(nn.Module):
    """Scores N candidates for one query; see the module docstring."""

    def __init__(self, config: SgrafConfig):
        super().__init__()
        self.config = config
        c = config
        self.local_sim = SimilarityRepresentation(c.dim, c.sim_dim)
        self.global_sim = SimilarityRepresentation(c.dim, c.sim_dim)
        self.reasoning = nn.ModuleList(GraphReasoning(c.sim_dim) for _ in range(c.steps))
        self.filtration = AttentionFiltration(c.sim_dim)
        self.sgr_score = nn.Linear(c.sim_dim, 1)
        self.saf_score = nn.Linear(c.sim_dim, 1)
        if c.vector_scale is not None:
            self.vector_scale = nn.Parameter(torch.tensor(float(c.vector_scale)))

    def forward(
        self,
        query_parts: torch.Tensor,
        query_whole: torch.Tensor,
        cand_parts: torch.Tensor,
        cand_mask: torch.Tensor | None,
        cand_whole: torch.Tensor,
    ) -> torch.Tensor:
        """(N,) scores: in (0, 1), plus ``vector_scale`` times the wholes' cosine when the
        config has one.

        query_parts (Lq, dim), query_whole (dim,), cand_parts (N, Lc, dim) padded,
        cand_mask (N, Lc) its valid rows (None: all valid), cand_whole (N, dim).
        """
        nodes = self.similarity_nodes(query_parts, query_whole, cand_parts, cand_mask, cand_whole)
        reasoned = nodes
        for step in self.reasoning:
            reasoned = step(reasoned)
        sgr = torch.sigmoid(self.sgr_score(reasoned[:, 0])).squeeze(-1)
        saf = torch.sigmoid(self.saf_score(self.filtration(nodes))).squeeze(-1)
        score = 0.5 * (sgr + saf)
        if self.config.vector_scale is not None:
            cosine = F.normalize(cand_whole, dim=-1) @ F.normalize(query_whole, dim=-1)
            score = score + self.vector_scale * cosine
        return score

    def similarity_nodes(
        self,
        query_parts: torch.Tensor,
        query_whole: torch.Tensor,
        cand_parts: torch.Tensor,
        cand_mask: torch.Tensor | None,
        cand_whole: torch.Tensor,
    ) -> torch.Tensor:
        """(N, 1 + Lq, sim_dim): the global similarity then one local one per query part."""
        n = cand_parts.shape[0]
        query_unit, cand_unit = F.normalize(query_parts, dim=-1), F.normalize(cand_parts, dim=-1)
        cos = torch.einsum("qd,nld->nql", query_unit, cand_unit)  # (N, Lq, Lc)
        logits = self.config.attention_scale * cos
        if cand_mask is not None:
            logits = logits.masked_fill(~cand_mask[:, None, :].to(torch.bool), float("-inf"))
        attended = torch.softmax(logits, dim=-1) @ cand_unit  # (N, Lq, dim)
        local = self.local_sim(attended, query_unit[None].expand(n, -1, -1))
        whole = self.global_sim(
            F.normalize(cand_whole, dim=-1), F.normalize(query_whole, dim=-1)[None]
        )
        return torch.cat([whole[:, None], local], dim=1)


class SgrafReranker:
    """:class:`~models.sgraf.Sgraf` behind the :class:`Reranker` interface."""

    name = SGRAF

    def __init__(self, model: Sgraf, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = device

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def score(self, query: SetFeatures, candidates: Sequence[SetFeatures]) -> np.ndarray:
        if not candidates:
            return np.empty((0,), np.float32)
        longest = max(len(c.parts) for c in candidates)
        parts = np.zeros((len(candidates), longest, self.model.config.dim), np.float32)
        mask = np.zeros((len(candidates), longest), bool)
        for i, c in enumerate(candidates):
            parts[i, : len(c.parts)], mask[i, : len(c.parts)] = c.parts, True
        wholes = np.stack([c.whole for c in candidates])
        with torch.inference_mode():
            scores = self.model(
                self._tensor(query.parts),
                self._tensor(query.whole),
                self._tensor(parts),
                torch.from_numpy(mask).to(self.device),
                self._tensor(wholes),
            )
        return scores.float().cpu().numpy()


def save_sgraf(directory: Path, model: Sgraf, *, half: bool = False) -> dict[str, Any]:
    """Write the weights (float16 with ``half``) into a bundle directory; returns its
    ``bundle.json`` entry."""
    weights = directory / f"{SGRAF}.safetensors"
    return save_weights_entry(weights, model, model.config.to_dict(), half=half)


def load_sgraf(directory: Path, entry: Mapping[str, Any], device: str) -> SgrafReranker:
    """The re-ranker a bundle's ``rerankers.sgraf`` entry describes; ValueError on a
    missing or changed weights file or weights that do not fit the config."""
    model = load_weights_entry(
        directory, entry, lambda config: Sgraf(SgrafConfig(**config)), "re-ranker"
    )
    return SgrafReranker(model, device)
