"""Smooth-Chamfer similarity between sets of embeddings (DivE, Kim, Kim and Kwak, CVPR 2023).

An item represented by a small set of vectors (DivE's slots) is compared with
another set ``S1 = {x}``, ``S2 = {y}`` by::

    SC(S1, S2) = 1 / (2 |S1|) * sum_{x in S1} (1 / alpha) * log sum_{y in S2} exp(alpha * cos(x, y))
               + 1 / (2 |S2|) * sum_{y in S2} (1 / alpha) * log sum_{x in S1} exp(alpha * cos(x, y))

i.e. the mean over each set of a soft maximum (a log-sum-exp at inverse
temperature ``alpha``) of its cosine similarities to the other set, averaged over
both directions, so ``SC(S1, S2) == SC(S2, S1)``.

Why the soft maximum: every pair gets a gradient (a hard max trains one pair
per element), yet the set still matches on its best pairs. The temperature is
``1 / alpha``. For each element, ``max <= (1/alpha) * log-sum-exp <= max +
log(n) / alpha`` (n the size of the other set), so as ``alpha -> inf`` (the
temperature -> 0) SC tends to the max-based Chamfer similarity, the mean of the
maxima in both directions (the "mean of mins" of the Chamfer distance, with
similarity in place of distance). A consequence worth knowing: SC is not 0 for
orthogonal sets; it is ``log(n) / alpha`` there.

``alpha`` is a hyperparameter; :data:`DEFAULT_ALPHA` is this module's default,
not a value tuned on our data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_ALPHA = 16.0


def _soft_max_mean(
    cos: torch.Tensor, alpha: float, over_mask: torch.Tensor | None, mean_mask: torch.Tensor | None
) -> torch.Tensor:
    """``mean_i (1/alpha) * logsumexp_j alpha * cos[..., i, j]`` over valid i and j.

    ``over_mask`` (..., 1, J) marks the valid j; ``mean_mask`` (..., I) the valid i.
    """
    logits = alpha * cos
    if over_mask is not None:
        logits = logits.masked_fill(~over_mask, float("-inf"))
    soft = torch.logsumexp(logits, dim=-1) / alpha  # (..., I)
    if mean_mask is None:
        return soft.mean(dim=-1)
    weights = mean_mask.to(soft.dtype)
    # Padded rows of a set with no valid j give -inf; zero them before weighting.
    soft = soft.masked_fill(~mean_mask, 0.0)
    return (soft * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def smooth_chamfer_matrix(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    a_mask: torch.Tensor | None = None,
    b_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(A, B) smooth-Chamfer similarities of A sets (A, K, d) to B sets (B, M, d).

    ``a_mask`` (A, K) / ``b_mask`` (B, M) mark the valid vectors of sets padded to
    a common size (None: every vector is valid). Vectors need not be normalised:
    the similarity is of their cosines.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    cos = torch.einsum("akd,bmd->abkm", F.normalize(a, dim=-1), F.normalize(b, dim=-1))
    a_valid = a_mask[:, None, :] if a_mask is not None else None  # (A, 1, K)
    b_valid = b_mask[None, :, :] if b_mask is not None else None  # (1, B, M)
    a_to_b = _soft_max_mean(
        cos,
        alpha,
        b_valid[:, :, None, :] if b_valid is not None else None,
        a_valid.expand(-1, cos.shape[1], -1) if a_valid is not None else None,
    )
    b_to_a = _soft_max_mean(
        cos.transpose(-1, -2),
        alpha,
        a_valid[:, :, None, :] if a_valid is not None else None,
        b_valid.expand(cos.shape[0], -1, -1) if b_valid is not None else None,
    )
    return 0.5 * (a_to_b + b_to_a)


def smooth_chamfer(
    query: torch.Tensor,
    items: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    item_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N,) similarities of one query set (K, d) to N item sets (N, M, d): the batched
    form that re-scores the candidates of one search."""
    return smooth_chamfer_matrix(query[None], items, alpha, b_mask=item_mask)[0]


def chamfer_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) max-based Chamfer similarity: the mean of maxima in both directions, the
    limit of :func:`smooth_chamfer_matrix` as ``alpha -> inf``."""
    cos = torch.einsum("akd,bmd->abkm", F.normalize(a, dim=-1), F.normalize(b, dim=-1))
    return 0.5 * (cos.amax(dim=-1).mean(dim=-1) + cos.amax(dim=-2).mean(dim=-1))
