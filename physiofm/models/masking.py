"""Dual masking for reconstruction pretraining, and the loss on masked patches.

* intra-lead: each (lead, patch) is masked with probability ``intra_ratio`` (CBraMod's 0.5);
* inter-lead: whole leads are masked, ``inter_count`` of them or ``ceil(inter_ratio x present
  leads)`` (method.md 1.4), always leaving one present lead visible, to be rebuilt from the others;
  with ``inter_unit="limb-group"`` (12 channels in the standard order I, II, III, aVR, aVL, aVF,
  V1–V6) the six limb leads are one unit, masked together, and each chest lead is its own unit:
  ``k`` units of the present ones (``ceil(inter_ratio x present units)``, at least one left visible).
  Four limb leads are sums of I and II (Einthoven: III = II − I; Goldberger: aVR = −(I + II)/2,
  aVL = I − II/2, aVF = II − I/2), so a single hidden limb lead is rebuilt exactly by arithmetic
  from two visible ones; hidden as a group they must be inferred from the chest leads.  Inputs
  with another channel count (EEG, 2-lead ECG) have no limb group: every channel is a unit;
* dual: per sample, intra-lead with probability ``p_intra`` else inter-lead (``combine="choice"``),
  or the union of both (``combine="union"``).

Absent leads (``lead_mask`` False) and zero-padded patches (``patch_mask`` False) are never
masked, so they are never reconstruction targets.  Masked patches are set to zero, the
encoder's mask token.  Random draws come from ``generator`` (on its device), so a seeded
generator gives the same masks on any device.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("intra", "inter", "dual")
COMBINES = ("choice", "union")
INTER_UNITS = ("lead", "limb-group")
DEFAULT_INTER_UNIT = "limb-group"
"""Chosen by ``bench/masking_ablation.py`` (the README's "Inter-lead masking" has its figures)."""
LIMB_LEADS = 6  # I, II, III, aVR, aVL, aVF: the first six of the standard 12-lead order
STANDARD_LEADS = 12


class DualMasking(nn.Module):
    """``DualMasking(...)(x, lead_mask, patch_mask, generator)`` → ``(masked x, mask)``."""

    def __init__(
        self,
        mode: str = "dual",
        intra_ratio: float = 0.5,
        inter_ratio: float = 0.25,
        inter_count: int | None = None,
        combine: str = "choice",
        p_intra: float = 0.5,
        inter_unit: str = DEFAULT_INTER_UNIT,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mask mode {mode!r} is not one of {MODES}")
        if inter_unit not in INTER_UNITS:
            raise ValueError(f"inter_unit {inter_unit!r} is not one of {INTER_UNITS}")
        if combine not in COMBINES:
            raise ValueError(f"combine {combine!r} is not one of {COMBINES}")
        for name, value in (("intra_ratio", intra_ratio), ("inter_ratio", inter_ratio), ("p_intra", p_intra)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if inter_count is not None and inter_count < 0:
            raise ValueError(f"inter_count must be >= 0, got {inter_count}")
        self.mode, self.intra_ratio, self.inter_ratio = mode, intra_ratio, inter_ratio
        self.inter_count, self.combine, self.p_intra = inter_count, combine, p_intra
        self.inter_unit = inter_unit

    def intra(
        self, shape: tuple[int, int, int], generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Bernoulli(``intra_ratio``) over (B, C, N)."""
        return _rand(shape, generator, device) < self.intra_ratio

    def units(self, channels: int, device: torch.device | None = None) -> torch.Tensor:
        """The unit of each channel (C,) int64: the limb group is unit 0 with ``limb-group`` on 12 channels,
        else each channel is its own unit."""
        if self.inter_unit == "limb-group" and channels == STANDARD_LEADS:
            return torch.tensor([0] * LIMB_LEADS + list(range(1, STANDARD_LEADS - LIMB_LEADS + 1)), device=device)
        return torch.arange(channels, device=device)

    def inter(self, present: torch.Tensor, patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Whole leads, ``k`` units per sample chosen uniformly among the present ones: (B, C, ``patches``)."""
        unit = self.units(present.shape[1], present.device)
        if unit.max() + 1 < present.shape[1]:  # grouped: a unit is present when any of its leads is
            limbs = present[:, :LIMB_LEADS].any(dim=1, keepdim=True)
            chosen = self._choose(torch.cat([limbs, present[:, LIMB_LEADS:]], dim=1), generator)
            return (chosen[:, unit] & present)[:, :, None].expand(-1, -1, patches)
        return self._choose(present, generator)[:, :, None].expand(-1, -1, patches)

    def _choose(self, present: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``k`` of the present units of each row, uniformly: (B, U) bool."""
        n_present = present.sum(dim=1)
        if self.inter_count is not None:
            k = torch.full_like(n_present, self.inter_count)
        else:
            k = torch.ceil(self.inter_ratio * n_present.double()).long()
        k = torch.minimum(k, (n_present - 1).clamp(min=0))
        scores = _rand(tuple(present.shape), generator, present.device)
        scores = scores.masked_fill(~present, 2.0)  # absent leads rank last, never chosen
        rank = scores.argsort(dim=1).argsort(dim=1)
        return rank < k[:, None]

    def forward(
        self,
        x: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, C, N, P), ``lead_mask`` (B, C) True = present, ``patch_mask`` (B, N) True = valid.

        Returns ``(masked x, mask)``; ``mask`` (B, C, N) bool on ``x``'s device, True = masked
        (a reconstruction target).
        """
        B, C, N, _ = x.shape
        device = generator.device if generator is not None else x.device
        present = torch.ones(B, C, dtype=torch.bool, device=device) if lead_mask is None else lead_mask
        valid = torch.ones(B, N, dtype=torch.bool, device=device) if patch_mask is None else patch_mask
        present, valid = present.bool().to(device), valid.bool().to(device)
        if self.mode == "intra":
            mask = self.intra((B, C, N), generator, device)
        elif self.mode == "inter":
            mask = self.inter(present, N, generator)
        else:
            intra, inter = self.intra((B, C, N), generator, device), self.inter(present, N, generator)
            if self.combine == "union":
                mask = intra | inter
            else:
                pick = _rand((B,), generator, device) < self.p_intra
                mask = torch.where(pick[:, None, None], intra, inter)
        # drawn on the generator's device (the CPU in training); the copy to x's device does not wait for it
        mask = (mask & present[:, :, None] & valid[:, None, :]).to(x.device, non_blocking=True)
        return x.masked_fill(mask[..., None], 0.0), mask


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | None) -> torch.Tensor:
    """Uniform draws on the generator's device (or ``device`` when drawing from the global stream)."""
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else device)


def masked_squared_error(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum of squared errors over the masked patches (``mask`` (B, C, N), nonzero = masked) and
    how many patches that is: the parts of :func:`masked_mse`, summable across processes.

    Each patch's squared error is summed and the unmasked patches' sums replaced by zeros (not
    selected by boolean indexing: its result's size is known only once the device has computed the
    mask, so indexing would make the host wait for the GPU in the middle of a training step).
    """
    selected = mask.bool()
    per_patch = (prediction - target).pow(2).sum(dim=-1)
    return torch.where(selected, per_patch, 0.0).sum(), selected.sum()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the samples of masked patches only (``mask`` (B, C, N), nonzero = masked).

    Returns 0 with a (zero) gradient when nothing is masked, never NaN.
    """
    error, patches = masked_squared_error(prediction, target, mask)
    return error / (patches * prediction.shape[-1]).clamp(min=1)
