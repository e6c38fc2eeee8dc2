"""The fusion classifier: EEG and ECG encoders → pooled embeddings → per-branch standardisation → concatenation →
MLP → logits.

Either branch may be absent (EEG-only and ECG-only baselines are the same class), frozen, or
loaded from a checkpoint (:func:`physiofm.models.load_pretrained`) before it is passed in.
Pooling ``mean`` averages the features over channels (present ECG leads only, when a lead mask
is given) and patches; ``flatten`` keeps every (channel, patch, feature) as CBraMod's
fine-tuning heads do and needs each branch's ``(channels, patches)`` at construction.

Why each branch is standardised (:class:`BranchNorm`, on by default): pooled CBraMod features
of the two encoders differ in scale and, above all, in how much of their variance carries the
target (a heart-rate feature of the ECG branch can be a small-variance direction beside the
EEG branch's large subject-specific ones).  Concatenated raw, the head follows the large
directions first: on the synthetic emotion data (docs/planted-relation.md) fusion then learned
arousal (planted in the ECG only) and dominance (split between both) more slowly than the
single-branch models and scored below them at the same budget.  Standardising every pooled
feature (running mean and variance over training samples, no affine part) puts the branches
on one footing; optional *modality dropout* (``modality_dropout``: per training sample, one
branch's standardised features replaced by their mean, i.e. zero, with this probability) makes
the head use each branch on its own too.
"""

from __future__ import annotations

import torch
from torch import nn

from physiofm.models.cbramod import CBraMod

POOLINGS = ("mean", "flatten")


def pool_features(features: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``features`` (B, C, N, D) over channels and patches: (B, D); with ``lead_mask`` (B, C),
    True = present, over the present channels only."""
    if lead_mask is None:
        return features.mean(dim=(1, 2))
    weights = lead_mask.to(features.dtype)
    present = weights.sum(dim=1, keepdim=True).clamp(min=1)
    return (features * weights[:, :, None, None]).sum(dim=(1, 2)) / (present * features.shape[2])


class BranchNorm(nn.Module):
    """Standardise each feature with running statistics (BatchNorm without its affine part).

    In training the statistics are those of the batch's real samples (``keep``; padding left out),
    which also update the running ones (momentum ``momentum``); a batch of fewer than two real
    samples, and evaluation, use the running statistics.
    """

    def __init__(self, width: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))
        self.register_buffer("tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x32 = x.float()
        if self.training:
            real = x32 if keep is None else x32[keep]
            if len(real) >= 2:
                mean, var = real.mean(dim=0), real.var(dim=0, unbiased=False)
                with torch.no_grad():
                    first = int(self.tracked) == 0
                    rate = 1.0 if first else self.momentum
                    self.running_mean.lerp_(mean.detach(), rate)
                    self.running_var.lerp_(real.var(dim=0, unbiased=True).detach(), rate)
                    self.tracked += 1
                return ((x32 - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        return ((x32 - self.running_mean) * torch.rsqrt(self.running_var + self.eps)).to(x.dtype)


class FusionClassifier(nn.Module):
    """``head(concat(norm(pool(eeg.encode(eeg))), norm(pool(ecg.encode(ecg)))))``: one logit per target.

    ``branch_norm``: standardise each branch's pooled features (:class:`BranchNorm`; see the
    module docstring).  ``modality_dropout``: in training, per sample and with this probability,
    one of two branches (either, equally likely) is dropped (its standardised features set to 0).
    The head is ``Linear(width, hidden) → ELU → Dropout → Linear(hidden, n_targets)`` (train with
    ``BCEWithLogitsLoss`` for multi-label targets).  The encoders' reconstruction heads are
    replaced by ``Identity``, as in CBraMod's fine-tuning.  A frozen encoder gets no gradient
    and stays in eval mode (no dropout) when the classifier is trained.
    """

    def __init__(
        self,
        eeg: CBraMod | None = None,
        ecg: CBraMod | None = None,
        n_targets: int = 3,
        pooling: str = "mean",
        hidden: int = 200,
        dropout: float = 0.1,
        freeze_eeg: bool = False,
        freeze_ecg: bool = False,
        eeg_shape: tuple[int, int] | None = None,
        ecg_shape: tuple[int, int] | None = None,
        branch_norm: bool = True,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if eeg is None and ecg is None:
            raise ValueError("a classifier needs at least one encoder")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.eeg, self.ecg, self.pooling = eeg, ecg, pooling
        self.modality_dropout = modality_dropout
        self.frozen = {
            name
            for name, encoder, frozen in (("eeg", eeg, freeze_eeg), ("ecg", ecg, freeze_ecg))
            if encoder is not None and frozen
        }
        width = 0
        self.norms = nn.ModuleDict()
        for name, encoder, shape in (("eeg", eeg, eeg_shape), ("ecg", ecg, ecg_shape)):
            if encoder is None:
                continue
            before = width
            encoder.proj_out = nn.Identity()
            if name in self.frozen:
                encoder.requires_grad_(False).eval()
            d_model = encoder.config["d_model"]
            if pooling == "flatten":
                if shape is None:
                    raise ValueError(f"pooling='flatten' needs {name}_shape=(channels, patches)")
                width += shape[0] * shape[1] * d_model
            else:
                width += d_model
            if branch_norm:
                self.norms[name] = BranchNorm(width - before)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, n_targets))

    def train(self, mode: bool = True) -> FusionClassifier:
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def embed(self, encoder: CBraMod, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features of one branch: (B, d_model) for ``mean``, (B, C·N·d_model) for ``flatten``."""
        features = encoder.encode(x)  # (B, C, N, D)
        if self.pooling == "flatten":
            if lead_mask is not None:
                features = features * lead_mask.to(features.dtype)[:, :, None, None]
            return features.flatten(1)
        return pool_features(features, lead_mask)

    def forward(
        self,
        eeg: torch.Tensor | None = None,
        ecg: torch.Tensor | None = None,
        ecg_lead_mask: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, n_targets)`` from ``eeg`` (B, C, N, 200) and/or ``ecg`` (B, L, N, 200).

        Pass the modalities this classifier has; ``ecg_lead_mask`` (B, L) True = present lead;
        ``keep`` (B,) True = a real sample (padding is left out of the branch statistics).
        """
        parts = []
        for name, encoder, x in (("eeg", self.eeg, eeg), ("ecg", self.ecg, ecg)):
            if encoder is None:
                if x is not None:
                    raise ValueError(f"this classifier has no {name} encoder, but {name}=... was passed")
                continue
            if x is None:
                raise ValueError(f"this classifier has an {name} encoder: pass {name}=...")
            pooled = self.embed(encoder, x, ecg_lead_mask if name == "ecg" else None)
            parts.append(self.norms[name](pooled, keep) if name in self.norms else pooled)
        if self.training and self.modality_dropout > 0 and len(parts) == 2:
            batch = parts[0].shape[0]
            dropped = torch.rand(batch, device=parts[0].device) < self.modality_dropout
            which = torch.randint(0, 2, (batch,), device=parts[0].device)
            parts = [p * (~(dropped & (which == i)))[:, None].to(p.dtype) for i, p in enumerate(parts)]
        return self.head(torch.cat(parts, dim=-1))
