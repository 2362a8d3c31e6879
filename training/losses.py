"""Metric-learning losses shared by the fusion model, the heads and the recipe encoder.

Every loss works on similarity logits from :func:`pairwise_similarity`, so each
comes in a cosine and a Euclidean flavour:

- ``cosine``: dot products of L2-normalised vectors, in [-1, 1];
- ``euclidean``: negative squared distances of the raw vectors (closer is larger),
  the logit of Prototypical Networks.

Temperatures are divided out of the logits; :class:`LearnableTemperature` learns
one on a log scale as CLIP does, clamped so the logits cannot blow up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.types import Metric, check_metric


def pairwise_similarity(a: torch.Tensor, b: torch.Tensor, metric: Metric) -> torch.Tensor:
    """(n, m) similarities of the rows of ``a`` (n, d) to the rows of ``b`` (m, d)."""
    match check_metric(metric):
        case "cosine":
            return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        case "euclidean":
            # Expanded form: one matmul instead of an (n, m, d) difference tensor.
            sq = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1) - 2.0 * (a @ b.T)
            return -sq.clamp_min(0.0)


class LearnableTemperature(nn.Module):
    """A temperature learned as ``log(1 / tau)``, clamped to [min_tau, max_tau]."""

    def __init__(self, initial: float = 0.07, min_tau: float = 0.01, max_tau: float = 1.0):
        super().__init__()
        if not 0 < min_tau <= initial <= max_tau:
            raise ValueError("need 0 < min_tau <= initial <= max_tau")
        self.log_inverse = nn.Parameter(torch.tensor(math.log(1.0 / initial)))
        self.bounds = (math.log(1.0 / max_tau), math.log(1.0 / min_tau))

    def forward(self) -> torch.Tensor:
        return torch.exp(-self.log_inverse.clamp(*self.bounds))


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: torch.Tensor | float,
    metric: Metric = "cosine",
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) over paired rows: row i of ``a`` matches row i of ``b``.

    The other rows of the batch are the negatives, in both directions.
    """
    _check_paired(a, b)
    logits = pairwise_similarity(a, b, metric) / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def grouped_info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    groups: torch.Tensor,
    temperature: torch.Tensor | float,
    metric: Metric = "cosine",
) -> torch.Tensor:
    """Symmetric InfoNCE where rows of one group are all positives of each other.

    Row i of ``a`` matches every row j of ``b`` with ``groups[j] == groups[i]``
    (its own pair included); the loss is ``-log`` of the softmax mass on those.
    Used when several items share a text (food101 class names, repeated dish
    titles), so that they are not pushed apart as false negatives. With all
    groups distinct this equals :func:`info_nce`.
    """
    _check_paired(a, b)
    if groups.shape != (a.shape[0],):
        raise ValueError(f"groups must be ({a.shape[0]},), got {tuple(groups.shape)}")
    logits = pairwise_similarity(a, b, metric) / temperature
    positive = groups[:, None] == groups[None, :]

    def direction(lg: torch.Tensor) -> torch.Tensor:
        on_positives = lg.masked_fill(~positive, float("-inf")).logsumexp(dim=1)
        return (lg.logsumexp(dim=1) - on_positives).mean()

    return 0.5 * (direction(logits) + direction(logits.T))


def nt_xent(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    temperature: torch.Tensor | float,
    metric: Metric = "cosine",
) -> torch.Tensor:
    """SimCLR's NT-Xent: two views per sample, the other 2n - 2 views are negatives."""
    _check_paired(view_a, view_b)
    n = view_a.shape[0]
    labels = torch.arange(n, device=view_a.device).repeat(2)
    return supervised_contrastive(torch.cat([view_a, view_b]), labels, temperature, metric)


def supervised_contrastive(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: torch.Tensor | float,
    metric: Metric = "cosine",
) -> torch.Tensor:
    """SupCon (Khosla et al. 2020): every other row with the same label is a positive.

    Each anchor's loss averages ``-log softmax`` over its positives, with every
    other row (positive or not) in the denominator; anchors without a positive
    are left out. With one positive per anchor this is exactly NT-Xent.
    """
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError("embeddings and labels must have the same number of rows")
    n = embeddings.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = pairwise_similarity(embeddings, embeddings, metric) / temperature
    log_prob = logits.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_positives = positives.sum(1)
    has_positive = n_positives > 0
    if not bool(has_positive.any()):
        raise ValueError("no anchor has a positive: every label occurs once")
    summed = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(summed[has_positive] / n_positives[has_positive]).mean()


def triplet_ranking(
    a: torch.Tensor,
    b: torch.Tensor,
    margin: float = 0.2,
    metric: Metric = "cosine",
    hardest: bool = True,
) -> torch.Tensor:
    """Bidirectional hinge ranking loss over paired rows (VSE++, Faghri et al. 2018).

    With ``hardest`` each positive pair is charged only for its hardest in-batch
    negative in each direction (max of hinges); otherwise hinges are summed over
    all negatives (VSE0). Averaged over the batch.
    """
    _check_paired(a, b)
    scores = pairwise_similarity(a, b, metric)
    positive = scores.diagonal()
    off_diagonal = ~torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    cost_a_to_b = (margin + scores - positive[:, None]).clamp_min(0.0) * off_diagonal
    cost_b_to_a = (margin + scores - positive[None, :]).clamp_min(0.0) * off_diagonal
    if hardest:
        return (cost_a_to_b.max(dim=1).values + cost_b_to_a.max(dim=0).values).mean()
    return (cost_a_to_b.sum(dim=1) + cost_b_to_a.sum(dim=0)).mean()


class SemanticRegularizer(nn.Module):
    """im2recipe's semantic regularisation: one classifier shared by every modality.

    The same linear head classifies the embeddings of each modality; its mean
    cross-entropy, times ``weight``, is added to the retrieval loss so that the
    joint space also separates the classes.
    """

    def __init__(self, dim: int, n_classes: int, weight: float = 0.02):
        super().__init__()
        if weight < 0:
            raise ValueError("weight must be non-negative")
        self.head = nn.Linear(dim, n_classes)
        self.weight = weight

    def forward(self, *embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not embeddings:
            raise ValueError("need at least one batch of embeddings")
        losses = [F.cross_entropy(self.head(e), labels) for e in embeddings]
        return self.weight * torch.stack(losses).mean()


def _check_paired(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (n, d) batches of one shape, got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError("a contrastive batch needs at least two pairs")
