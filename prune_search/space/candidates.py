"""A population of candidates as tensors: keep counts and strategy codes per group."""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CandidateBatch:
    """``keep[p, g]``: channels kept in group g by candidate p (int64 ``[P, G]``);
    ``strategy[p, g]``: index into the space's strategies (int64 ``[P, G]``)."""

    keep: Tensor
    strategy: Tensor

    def __len__(self) -> int:
        return self.keep.shape[0]

    def to(self, device: torch.device | str) -> "CandidateBatch":
        return CandidateBatch(self.keep.to(device), self.strategy.to(device))

    def __getitem__(self, index: int | slice | Tensor) -> "CandidateBatch":
        keep, strategy = self.keep[index], self.strategy[index]
        if keep.dim() == 1:
            keep, strategy = keep[None], strategy[None]
        return CandidateBatch(keep, strategy)

    @staticmethod
    def cat(batches: list["CandidateBatch"]) -> "CandidateBatch":
        return CandidateBatch(torch.cat([b.keep for b in batches]), torch.cat([b.strategy for b in batches]))
