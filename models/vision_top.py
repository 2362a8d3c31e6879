"""The offline image tower cut in two: the frozen bottom and the (tunable) top.

EfficientNet-Lite0 is cut after stage ``SPLIT_STAGE`` (112 channels at 14 x 14
for a 224 input). Training tunes the top on cached bottom maps
(:mod:`training.tower_tuning`); a tuned top travels inside the bundle
(``tower.safetensors``), :class:`~models.towers.OfflineTowers` applies it, and
its hash is part of the towers' fingerprint.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import nn

SPLIT_STAGE = 5  # default cut: the bottom is stem + blocks[:5]; the top is blocks[5:] + head
SPLIT_STAGES = (4, 5, 6)  # where a cut may go (EfficientNet-Lite0 has blocks[0..6])


def check_split_stage(stage: int) -> int:
    if stage not in SPLIT_STAGES:
        raise ValueError(f"the tower can be cut before stage {SPLIT_STAGES}, not {stage}")
    return stage


def run_bottom(net: Any, batch: torch.Tensor, stage: int = SPLIT_STAGE) -> torch.Tensor:
    """Stem and the first ``stage`` stages: (n, 3, 224, 224) -> e.g. (n, 112, 14, 14) at 5."""
    x = net.bn1(net.conv_stem(batch))
    for block in net.blocks[:stage]:
        x = block(x)
    return x


class VisionTop(nn.Module):
    """The stages after the cut, the head conv and its batch norm, mean-pooled (n, 1280)."""

    def __init__(self, net: Any, stage: int = SPLIT_STAGE) -> None:
        super().__init__()
        self.split_stage = check_split_stage(stage)
        self.blocks = copy.deepcopy(net.blocks[stage:])
        self.conv_head = copy.deepcopy(net.conv_head)
        self.bn2 = copy.deepcopy(net.bn2)

    def feature_map(self, maps: torch.Tensor) -> torch.Tensor:
        """(n, 1280, h, w) before pooling: each cell is an image region's feature
        (7 x 7 cells for a 224 input), the local features of a re-ranker or set head."""
        x = maps
        for block in self.blocks:
            x = block(x)
        return self.bn2(self.conv_head(x))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.feature_map(maps).mean(dim=(2, 3))


def top_digest(top: VisionTop) -> str:
    """A short hash of the top's weights (part of the tuned towers' fingerprint)."""
    digest = hashlib.sha256()
    for key, value in sorted(top.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
