"""The tiny index encoder with random-init DivE set heads, as a bundle carries trained ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from models.set_encoding import SetEncoder
from models.set_head import SetHead, SetHeadConfig
from tests.index.tiny_encoder import TinyEncoder

SLOTS = 3


class SetTinyEncoder(TinyEncoder):
    """Same single vectors (and fingerprint) as TinyEncoder(32, 0), plus K set vectors per
    image, text and recipe from seeded heads whose output layer is moved off zero, so the
    slots differ as a trained head's do."""

    towers = None  # no image regions: the image head sees the photo's vector alone

    def __init__(self) -> None:
        super().__init__(dim=32, seed=0)
        torch.manual_seed(0)
        heads = {
            "image": SetHead(SetHeadConfig(local_dim=16, dim=32, slots=SLOTS, hidden=16)),
            "text": SetHead(SetHeadConfig(local_dim=32, dim=32, slots=SLOTS, hidden=16)),
        }
        for head in heads.values():
            nn.init.normal_(head.out.weight, std=0.5)
        self.sets = SetEncoder(self, heads)  # type: ignore[arg-type]


class CountingSetTinyEncoder(SetTinyEncoder):
    """The set encoder, counting the inputs its set path is given per modality."""

    def __init__(self) -> None:
        super().__init__()
        self.set_inputs = {"image": 0, "text": 0, "recipe": 0}
        sets = self.sets
        for modality in self.set_inputs:
            method = getattr(sets, f"{modality}_sets")
            setattr(sets, f"{modality}_sets", self._counted(modality, method))

    def _counted(self, modality: str, method: Callable[[Sequence[Any]], np.ndarray]) -> Any:
        def counted(inputs: Sequence[Any]) -> np.ndarray:
            self.set_inputs[modality] += len(inputs)
            return method(inputs)

        return counted
