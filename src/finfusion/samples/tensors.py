"""A dataset of samples held as stacked tensors (one dict of [N, ...] tensors): item i is the dict of row i."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class TensorSamples(Dataset[dict[str, torch.Tensor]]):
    """Samples as tensors [N, ...] by contract key; `subset(mask)` keeps some rows, `column(key)` reads one as numpy."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}

    def subset(self, mask: np.ndarray) -> TensorSamples:
        chosen = torch.from_numpy(np.flatnonzero(mask))
        return TensorSamples({key: value[chosen] for key, value in self.tensors.items()})

    def column(self, key: str) -> np.ndarray:
        return self.tensors[key].numpy()
