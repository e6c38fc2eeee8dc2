"""CBraMod (Wang et al., ICLR 2025), written from its published specification.

Input ``(B, C, N, 200)``: C channels of any count, N one-second patches at 200 Hz.  The
module tree reproduces the released checkpoint's 211 parameter names and shapes, so the
official ``pretrained_weights.pth`` loads strictly (:func:`physiofm.models.load_pretrained`).

* Patch embedding: a time-domain conv stack ``proj_in`` (each patch a 1x200 row; output index
  ``d = 8 * conv_channel + time_step``) plus the rFFT magnitude (101 bins, ``norm="forward"``)
  through ``spectral_proj``; masked patches are replaced by the constant zero
  ``mask_encoding`` before both branches; then an asymmetric conditional positional encoding
  (depthwise conv, 19 channels x 7 patches) is added.
* ``n_layer`` pre-norm criss-cross layers: the first half of the features attends across
  channels (per patch), the second half across patches (per channel), ``nhead // 2`` heads
  each, with ``scaled_dot_product_attention`` on ``nn.MultiheadAttention``-compatible weights.
* ``proj_out``: the reconstruction head (``forward``); ``encode`` returns the features before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 200


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names and layout."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # [W_q; W_k; W_v]
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, sequence, dim) → same shape."""
        batch, length, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class CrissCrossLayer(nn.Module):
    """Pre-norm transformer layer whose attention is split into spatial and temporal halves."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        half = d_model // 2
        self.self_attn_s = SelfAttention(half, nhead // 2, dropout)
        self.self_attn_t = SelfAttention(half, nhead // 2, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def criss_cross(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, N, D): dims ``:D/2`` attend across channels, ``D/2:`` across patches."""
        B, C, N, D = x.shape
        half = D // 2
        spatial = x[..., :half].transpose(1, 2).reshape(B * N, C, half)
        spatial = self.self_attn_s(spatial).view(B, N, C, half).transpose(1, 2)
        temporal = self.self_attn_t(x[..., half:].reshape(B * C, N, half)).view(B, C, N, half)
        return torch.cat([spatial, temporal], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout1(self.criss_cross(self.norm1(x)))
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))


class Encoder(nn.Module):
    def __init__(self, layers: list[CrissCrossLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class PatchEmbedding(nn.Module):
    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        if d_model != 200:
            raise ValueError("CBraMod's patch embedding produces 25 conv channels x 8 steps = 200 features")
        self.mask_encoding = nn.Parameter(torch.zeros(PATCH), requires_grad=False)
        self.proj_in = nn.Sequential(
            nn.Conv2d(1, 25, kernel_size=(1, 49), stride=(1, 25), padding=(0, 24)), nn.GroupNorm(5, 25), nn.GELU(),
            nn.Conv2d(25, 25, kernel_size=(1, 3), stride=(1, 1), padding=(0, 1)), nn.GroupNorm(5, 25), nn.GELU(),
            nn.Conv2d(25, 25, kernel_size=(1, 3), stride=(1, 1), padding=(0, 1)), nn.GroupNorm(5, 25), nn.GELU(),
        )
        self.spectral_proj = nn.Sequential(nn.Linear(PATCH // 2 + 1, d_model), nn.Dropout(dropout))
        self.positional_encoding = nn.Sequential(
            nn.Conv2d(d_model, d_model, kernel_size=(19, 7), stride=(1, 1), padding=(9, 3), groups=d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, N, P = x.shape
        if P != PATCH:
            raise ValueError(f"CBraMod needs patches of {PATCH} samples (1 s at 200 Hz), got {P}")
        if mask is not None:
            x = torch.where(mask.bool()[..., None], self.mask_encoding.to(x.dtype), x)
        time = self.proj_in(x.reshape(B, 1, C * N, P))  # (B, 25, C*N, 8)
        time = time.permute(0, 2, 1, 3).reshape(B, C, N, 200)
        spectrum = torch.fft.rfft(x.float(), dim=-1, norm="forward").abs()
        embedding = time + self.spectral_proj(spectrum.to(time.dtype))
        position = self.positional_encoding(embedding.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return embedding + position


class CBraMod(nn.Module):
    """The CBraMod encoder with its reconstruction head.

    ``CBraMod()`` is the published size (12 layers, 8 heads, FFN 800; 4,924,000 parameters).
    The same class, with other ``n_layer``/``nhead``/``dim_feedforward``, is the symmetric ECG
    encoder; any channel count works, as the positional encoding is convolutional.
    """

    def __init__(self, in_dim: int = 200, out_dim: int = 200, d_model: int = 200, dim_feedforward: int = 800,
                 seq_len: int = 30, n_layer: int = 12, nhead: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        del in_dim, seq_len  # accepted for upstream compatibility; fixed by the patch embedding / unused
        self.config = {"d_model": d_model, "dim_feedforward": dim_feedforward, "n_layer": n_layer, "nhead": nhead,
                       "dropout": dropout, "out_dim": out_dim}
        self.patch_embedding = PatchEmbedding(d_model, dropout)
        self.encoder = Encoder([CrissCrossLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(n_layer)])
        self.proj_out = nn.Sequential(nn.Linear(d_model, out_dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``(B, C, N, d_model)`` (what fine-tuning uses)."""
        return self.encoder(self.patch_embedding(x, mask))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``(B, C, N, 200)`` through ``proj_out``, as upstream."""
        return self.proj_out(self.encode(x, mask))
