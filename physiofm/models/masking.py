"""Dual masking for reconstruction pretraining, and the loss on masked patches.

* intra-lead: each (lead, patch) is masked with probability ``intra_ratio`` (CBraMod's 0.5);
* inter-lead: whole leads are masked, ``inter_count`` of them or ``inter_ratio`` of the present
  leads (at least one, and always leaving one visible), to be rebuilt from the others;
* dual: per sample, intra-lead with probability ``p_intra`` else inter-lead (``combine="choice"``),
  or the union of both (``combine="union"``).

Absent leads (``lead_mask`` False) and zero-padded patches (``patch_mask`` False) are never
masked, so they are never reconstruction targets.  Masked patches are set to zero, the
encoder's mask token.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("intra", "inter", "dual")


class DualMasking(nn.Module):
    def __init__(self, mode: str = "dual", intra_ratio: float = 0.5, inter_ratio: float = 0.25,
                 inter_count: int | None = None, combine: str = "choice", p_intra: float = 0.5) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mask mode {mode!r} is not one of {MODES}")
        if combine not in ("choice", "union"):
            raise ValueError(f"combine {combine!r} is not 'choice' or 'union'")
        self.mode, self.intra_ratio, self.inter_ratio = mode, intra_ratio, inter_ratio
        self.inter_count, self.combine, self.p_intra = inter_count, combine, p_intra

    def intra(self, shape: tuple[int, int, int], generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, generator=generator) < self.intra_ratio

    def inter(self, present: torch.Tensor, patches: int, generator: torch.Generator | None) -> torch.Tensor:
        """Whole present leads, ``k`` per sample (``present`` (B, C) on the CPU)."""
        n_present = present.sum(dim=1)
        if self.inter_count is not None:
            k = torch.full_like(n_present, self.inter_count)
        else:
            k = torch.round(self.inter_ratio * n_present.float()).long().clamp(min=1)
        k = torch.minimum(k, (n_present - 1).clamp(min=0))
        scores = torch.rand(present.shape, generator=generator).masked_fill(~present, 2.0)
        rank = scores.argsort(dim=1).argsort(dim=1)  # 0 = lowest score among all leads
        chosen = rank < k[:, None]
        return chosen[:, :, None].expand(-1, -1, patches)

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None, patch_mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked x, mask)``; ``mask`` (B, C, N) bool, True = masked (a reconstruction target)."""
        B, C, N, _ = x.shape
        present = torch.ones(B, C, dtype=torch.bool) if lead_mask is None else lead_mask.bool().cpu()
        valid = torch.ones(B, N, dtype=torch.bool) if patch_mask is None else patch_mask.bool().cpu()
        if self.mode == "intra":
            mask = self.intra((B, C, N), generator)
        elif self.mode == "inter":
            mask = self.inter(present, N, generator)
        else:
            intra, inter = self.intra((B, C, N), generator), self.inter(present, N, generator)
            if self.combine == "union":
                mask = intra | inter
            else:
                pick = torch.rand(B, generator=generator) < self.p_intra
                mask = torch.where(pick[:, None, None], intra, inter)
        mask = (mask & present[:, :, None] & valid[:, None, :]).to(x.device)
        return x.masked_fill(mask[..., None], 0.0), mask


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the samples of masked patches only (0, with gradient, if none)."""
    selected = mask.bool()
    if not selected.any():
        return (prediction * 0).sum()
    return (prediction[selected] - target[selected]).pow(2).mean()
