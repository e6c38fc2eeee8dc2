"""The fusion classifier: EEG and ECG encoders → pooled embeddings → concatenation → MLP → logits.

Either branch may be absent (EEG-only and ECG-only baselines are the same class), frozen, or
loaded from a checkpoint (:func:`physiofm.models.load_pretrained`) before it is passed in.
Pooling ``mean`` averages the features over channels (present ECG leads only, when a lead mask
is given) and patches; ``flatten`` keeps every (channel, patch, feature) as CBraMod's
fine-tuning heads do and needs each branch's ``(channels, patches)`` at construction.
"""

from __future__ import annotations

import torch
from torch import nn

from physiofm.models.cbramod import CBraMod

POOLINGS = ("mean", "flatten")


class FusionClassifier(nn.Module):
    """``head(concat(pool(eeg.encode(eeg)), pool(ecg.encode(ecg))))``: one logit per target.

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
    ) -> None:
        super().__init__()
        if eeg is None and ecg is None:
            raise ValueError("a classifier needs at least one encoder")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.eeg, self.ecg, self.pooling = eeg, ecg, pooling
        self.frozen = {
            name
            for name, encoder, frozen in (("eeg", eeg, freeze_eeg), ("ecg", ecg, freeze_ecg))
            if encoder is not None and frozen
        }
        width = 0
        for name, encoder, shape in (("eeg", eeg, eeg_shape), ("ecg", ecg, ecg_shape)):
            if encoder is None:
                continue
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
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, n_targets))

    def train(self, mode: bool = True) -> FusionClassifier:
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def embed(self, encoder: CBraMod, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features of one branch: (B, d_model) for ``mean``, (B, C·N·d_model) for ``flatten``."""
        features = encoder.encode(x)  # (B, C, N, D)
        if lead_mask is not None:
            features = features * lead_mask.to(features.dtype)[:, :, None, None]
        if self.pooling == "flatten":
            return features.flatten(1)
        if lead_mask is None:
            return features.mean(dim=(1, 2))
        present = lead_mask.to(features.dtype).sum(dim=1, keepdim=True).clamp(min=1)
        return features.sum(dim=(1, 2)) / (present * features.shape[2])

    def forward(
        self,
        eeg: torch.Tensor | None = None,
        ecg: torch.Tensor | None = None,
        ecg_lead_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, n_targets)`` from ``eeg`` (B, C, N, 200) and/or ``ecg`` (B, L, N, 200).

        Pass the modalities this classifier has; ``ecg_lead_mask`` (B, L) True = present lead.
        """
        parts = []
        for name, encoder, x in (("eeg", self.eeg, eeg), ("ecg", self.ecg, ecg)):
            if encoder is None:
                if x is not None:
                    raise ValueError(f"this classifier has no {name} encoder, but {name}=... was passed")
                continue
            if x is None:
                raise ValueError(f"this classifier has an {name} encoder: pass {name}=...")
            parts.append(self.embed(encoder, x, ecg_lead_mask if name == "ecg" else None))
        return self.head(torch.cat(parts, dim=-1))
