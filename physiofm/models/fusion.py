"""The fusion classifier: EEG and ECG encoders → pooled embeddings → concatenation → MLP → logits.

Either branch may be absent (EEG-only and ECG-only baselines are the same class), frozen, or
loaded from a checkpoint before it is passed in.  Pooling ``mean`` averages the features over
channels (present ECG leads only, when a lead mask is given) and patches; ``flatten`` keeps
every (channel, patch, feature) as CBraMod's fine-tuning heads do and needs the input shape.
"""

from __future__ import annotations

import torch
from torch import nn

from physiofm.models.cbramod import CBraMod


class FusionClassifier(nn.Module):
    def __init__(self, eeg: CBraMod | None = None, ecg: CBraMod | None = None, n_targets: int = 3,
                 pooling: str = "mean", hidden: int = 200, dropout: float = 0.1, freeze_eeg: bool = False,
                 freeze_ecg: bool = False, eeg_shape: tuple[int, int] | None = None,
                 ecg_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        if eeg is None and ecg is None:
            raise ValueError("a classifier needs at least one encoder")
        if pooling not in ("mean", "flatten"):
            raise ValueError(f"pooling {pooling!r} is not 'mean' or 'flatten'")
        self.eeg, self.ecg, self.pooling = eeg, ecg, pooling
        for encoder, frozen in ((eeg, freeze_eeg), (ecg, freeze_ecg)):
            if encoder is not None:
                encoder.proj_out = nn.Identity()  # the reconstruction head is not used downstream
                if frozen:
                    encoder.requires_grad_(False)
        width = 0
        for encoder, shape, name in ((eeg, eeg_shape, "eeg"), (ecg, ecg_shape, "ecg")):
            if encoder is None:
                continue
            d_model = encoder.config["d_model"]
            if pooling == "flatten":
                if shape is None:
                    raise ValueError(f"pooling='flatten' needs {name}_shape=(channels, patches)")
                width += shape[0] * shape[1] * d_model
            else:
                width += d_model
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, n_targets))

    def embed(self, encoder: CBraMod, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = encoder.encode(x)  # (B, C, N, D)
        if self.pooling == "flatten":
            return features.flatten(1)
        if lead_mask is None:
            return features.mean(dim=(1, 2))
        weights = lead_mask.to(features.dtype)[:, :, None, None]
        return (features * weights).sum(dim=(1, 2)) / (weights.sum(dim=(1, 2)) * features.shape[2]).clamp(min=1)

    def forward(self, eeg: torch.Tensor | None = None, ecg: torch.Tensor | None = None,
                ecg_lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, n_targets)``; pass the modalities this classifier has."""
        parts = []
        for encoder, x, name in ((self.eeg, eeg, "eeg"), (self.ecg, ecg, "ecg")):
            if encoder is None:
                continue
            if x is None:
                raise ValueError(f"this classifier has an {name} encoder: pass {name}=...")
            parts.append(self.embed(encoder, x, ecg_lead_mask if name == "ecg" else None))
        return self.head(torch.cat(parts, dim=-1))
