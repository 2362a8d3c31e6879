"""Losses that train the DivE set head (:mod:`models.set_head`).

- :func:`set_contrastive_loss`: symmetric InfoNCE over the (B, B) smooth-Chamfer
  similarities of a batch of image sets and text sets (pair i is the positive of
  row i and of column i). DivE trains with the smooth-Chamfer similarity inside a
  contrastive objective; InfoNCE is the objective the rest of this project trains
  with (:mod:`training.losses`), kept here for the same reason.
- :func:`slot_diversity_loss`: the diversity regulariser, the mean cosine
  similarity of every pair of distinct slots of one item. Without it, nothing in
  the contrastive loss stops all K slots from collapsing onto the global vector
  (a set of K copies scores exactly as one vector does).

Not implemented: DivE's other regularisers beyond the diversity term. Note that
the diversity term has no gradient at slots that are exact copies (its maximum),
which is how the zero-initialised head starts (``train-set --slot-init-std``,
:mod:`training.train_set`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.set_similarity import DEFAULT_ALPHA, smooth_chamfer_matrix


def set_contrastive_loss(
    image_sets: torch.Tensor,
    text_sets: torch.Tensor,
    temperature: float = 0.05,
    alpha: float = DEFAULT_ALPHA,
) -> torch.Tensor:
    """Symmetric InfoNCE over smooth-Chamfer similarities of (B, K, d) image and text sets."""
    logits = smooth_chamfer_matrix(image_sets, text_sets, alpha) / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def slot_diversity_loss(sets: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine between the distinct slots of each item of (B, K, d); 0 for K=1."""
    k = sets.shape[1]
    if k < 2:
        return sets.new_zeros(())
    unit = F.normalize(sets, dim=-1)
    cos = unit @ unit.transpose(1, 2)  # (B, K, K)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=sets.device)
    return cos[:, off_diagonal].mean()
