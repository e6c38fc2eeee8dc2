"""CBraMod (Wang et al., ICLR 2025), written from its published specification.

Input ``(B, C, N, 200)``: C channels of any count, N one-second patches at 200 Hz.  The
module tree reproduces the released checkpoint's 211 parameter names and shapes, so the
official ``pretrained_weights.pth`` loads strictly (:func:`physiofm.models.load_pretrained`).

* Patch embedding: a time-domain conv stack ``proj_in`` (each patch a 1x200 row; output index
  ``d = 8 * conv_channel + time_step``) plus the rFFT magnitude (101 bins, ``norm="forward"``)
  through ``spectral_proj``; masked patches are replaced by the constant zero
  ``mask_encoding`` before both branches; then an asymmetric conditional positional encoding
  (depthwise conv, 19 channels x 7 patches) is added.  It runs outside autocast.
* ``n_layer`` pre-norm criss-cross layers: the first half of the features attends across
  channels (per patch), the second half across patches (per channel), ``nhead // 2`` heads
  each, on ``nn.MultiheadAttention``-compatible weights.  q, k and v are strided views of the
  ``(B, C, N, ·)`` grid (no transposed copies of the input); attention is
  ``scaled_dot_product_attention`` on GPUs (any non-CPU device) and an explicit float32
  softmax(q kᵀ/√d) v on the CPU, where it is faster for such short sequences.  On the CPU,
  dropout uses a cheaper mask sampler (:func:`drop`).
* ``proj_out``: the reconstruction head (``forward``); ``encode`` returns the features before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 200
STEPS = 8  # width of the time-domain conv output: (200 + 2*24 - 49) // 25 + 1
CHANNEL_AXIS, PATCH_AXIS = 1, 2


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names, layout and init.

    ``in_proj_weight`` stacks ``[W_q; W_k; W_v]``; attention-weight dropout applies in training.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """Attend along ``axis`` of ``x`` (B, C, N, E): 1 = across channels, 2 = across patches."""
        B, C, N, E = x.shape
        if axis not in (CHANNEL_AXIS, PATCH_AXIS):
            raise ValueError(f"axis must be {CHANNEL_AXIS} (channels) or {PATCH_AXIS} (patches), got {axis}")
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, C, N, 3, self.heads, E // self.heads)
        # Strided views (batch..., heads, sequence, head_dim): across channels (B, N, H, C, d), across
        # patches (B, C, H, N, d).
        order = (0, 2, 3, 1, 4) if axis == CHANNEL_AXIS else (0, 1, 3, 2, 4)
        # unbind, not three selects: its backward stacks the three gradients once, where each select's
        # would fill a zero tensor of qkv's size and add it up.
        q, k, v = (t.permute(order) for t in qkv.unbind(3))
        out = attend(q, k, v, self.dropout if self.training else 0.0)
        back = (0, 3, 1, 2, 4) if axis == CHANNEL_AXIS else order  # to (B, C, N, H, d)
        return self.out_proj(out.permute(back).reshape(B, C, N, E))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v with attention-weight dropout, over (batch..., heads, sequence, d).

    :func:`sdpa_attention` except on the CPU, where SDPA's kernels cost 2-3x more than three
    plain ops for sequences as short as these (tens of channels or patches); there it runs in
    float32.
    """
    if q.device.type != "cpu":
        return sdpa_attention(q, k, v, dropout)
    with torch.autocast("cpu", enabled=False):  # float32: bfloat16 batched matmuls loop per matrix
        weights = torch.softmax((q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
        return (drop(weights, dropout, dropout > 0) @ v.float()).to(q.dtype)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """``scaled_dot_product_attention`` on 4-D copies of the inputs, as its fused kernels want."""
    shape = q.shape
    q, k, v = (t.reshape(-1, *shape[-3:]) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout).view(shape)


def drop(x: torch.Tensor, p: float, training: bool, inplace: bool = False) -> torch.Tensor:
    """``F.dropout``, but on the CPU the mask is made from uniform 15-bit integers by float arithmetic.

    Same distribution (drop probability quantised to 1/32768) from the same global RNG, at a
    fraction of the cost of the CPU Bernoulli sampler: one 64-bit draw (``random_`` fills
    ``[0, 2^63)``) yields four 15-bit values ``d``, and one below ``t = round(p * 32768)`` is
    dropped.  The mask is ``(clamp(d, t - 1, t) - (t - 1)) / (1 - p)`` in float32 (exactly 0 or
    1 before the scaling): vectorised passes only, where a comparison and ``torch.where`` on its
    boolean result took 5-7x longer for the same mask.  ``x`` is multiplied by the mask of 0 and
    ``1 / (1 - p)``, as ``F.dropout`` does: backward is one product (a masked fill and a scaling
    would be two passes).
    """
    if not training or x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training, inplace)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n].view(x.shape)
    threshold = round(p * 32768)
    keep = (draws & 0x7FFF).to(torch.float32).clamp_(threshold - 1, threshold).sub_(threshold - 1)
    keep = keep.mul_(1.0 / (1.0 - p)).to(x.dtype)
    return x.mul_(keep) if inplace else x * keep


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`drop`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop(x, self.p, self.training, self.inplace)


class CrissCrossLayer(nn.Module):
    """Pre-norm transformer layer whose attention is split into spatial and temporal halves."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        half = d_model // 2
        self.self_attn_s = SelfAttention(half, nhead // 2, dropout)
        self.self_attn_t = SelfAttention(half, nhead // 2, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        # In-place dropouts: their inputs are fresh tensors that backward does not need.
        self.dropout = Dropout(dropout, inplace=True)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout, inplace=True)
        self.dropout2 = Dropout(dropout, inplace=True)

    def criss_cross(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, N, D): dims ``:D/2`` attend across channels, ``D/2:`` across patches."""
        half = x.shape[-1] // 2
        # split, not two slices: one concatenation in backward instead of two zero-filled full-size gradients
        spatial, temporal = x.split([half, x.shape[-1] - half], dim=-1)
        return torch.cat([self.self_attn_s(spatial, CHANNEL_AXIS), self.self_attn_t(temporal, PATCH_AXIS)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout1(self.criss_cross(self.norm1(x)))
        hidden = self.linear1(self.norm2(x))
        # Without autograd, GELU in place spares a (tokens x FFN) buffer (and its page faults).
        hidden = F.gelu(hidden) if hidden.requires_grad else torch.ops.aten.gelu_(hidden)
        return x + self.dropout2(self.linear2(self.dropout(hidden)))


class Encoder(nn.Module):
    """The stack of criss-cross layers (no final norm, as upstream)."""

    def __init__(self, layers: list[CrissCrossLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class PatchEmbedding(nn.Module):
    """Masking, time-domain conv + spectral branches, and the convolutional positional encoding.

    The conv stack has ``d_model / 8`` channels in 5 GroupNorm groups (25 for the published
    ``d_model=200``); GroupNorm statistics span all patches of a sample, as upstream.
    """

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        if d_model % (STEPS * 5):
            raise ValueError(
                f"d_model must be a multiple of 40 (conv channels x {STEPS} steps, channels in 5 groups), got {d_model}"
            )
        self.d_model, width = d_model, d_model // STEPS
        self.positional_encoding = nn.Sequential(  # registered first: the checkpoint's key order
            nn.Conv2d(d_model, d_model, kernel_size=(19, 7), stride=(1, 1), padding=(9, 3), groups=d_model)
        )
        self.mask_encoding = nn.Parameter(torch.zeros(PATCH), requires_grad=False)
        self.proj_in = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=(1, 49), stride=(1, 25), padding=(0, 24)),
            nn.GroupNorm(5, width),
            nn.GELU(),
            nn.Conv2d(width, width, kernel_size=(1, 3), stride=(1, 1), padding=(0, 1)),
            nn.GroupNorm(5, width),
            nn.GELU(),
            nn.Conv2d(width, width, kernel_size=(1, 3), stride=(1, 1), padding=(0, 1)),
            nn.GroupNorm(5, width),
            nn.GELU(),
        )
        self.spectral_proj = nn.Sequential(nn.Linear(PATCH // 2 + 1, d_model), Dropout(dropout, inplace=True))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, N, P = x.shape
        if P != PATCH:
            raise ValueError(f"CBraMod needs patches of {PATCH} samples (1 s at 200 Hz), got {P}")
        # In the parameters' dtype whatever the autocast: the convolutions are small, and on CPUs
        # without bfloat16 support their bfloat16 versions fall back to slow loops.
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.mask_encoding.dtype)
            if mask is not None:
                x = torch.where(mask.bool()[..., None], self.mask_encoding, x)
            time = self.proj_in(x.reshape(B, 1, C * N, P))  # (B, d_model/8, C*N, 8)
            time = time.permute(0, 2, 1, 3).reshape(B, C, N, self.d_model)  # d = 8 * conv_channel + step
            spectrum = torch.fft.rfft(x.float(), dim=-1, norm="forward").abs().to(x.dtype)
            embedding = time + self.spectral_proj(spectrum)
            position = self.positional_encoding(embedding.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return embedding + position


class CBraMod(nn.Module):
    """The CBraMod encoder with its reconstruction head.

    ``CBraMod()`` is the published size (d_model 200, 12 layers, 8 heads, FFN 800; 4,924,000
    parameters).  The same class with another ``d_model`` (a multiple of 40), ``n_layer``,
    ``nhead`` or ``dim_feedforward`` is the symmetric ECG encoder; any channel count works, as
    the positional encoding is convolutional.  ``in_dim`` (must be 200) and ``seq_len``
    (unused) are accepted for upstream compatibility.
    """

    def __init__(
        self,
        in_dim: int = PATCH,
        out_dim: int = PATCH,
        d_model: int = 200,
        dim_feedforward: int = 800,
        seq_len: int = 30,
        n_layer: int = 12,
        nhead: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        del seq_len
        if in_dim != PATCH:
            raise ValueError(f"CBraMod's patch embedding is fixed to {PATCH}-sample patches, got in_dim={in_dim}")
        if nhead % 2 or d_model % nhead:
            raise ValueError(f"nhead must be even and divide d_model (split in two halves), got {nhead}, {d_model}")
        self.config = {
            "d_model": d_model,
            "dim_feedforward": dim_feedforward,
            "n_layer": n_layer,
            "nhead": nhead,
            "dropout": dropout,
            "out_dim": out_dim,
        }
        self.patch_embedding = PatchEmbedding(d_model, dropout)
        self.encoder = Encoder([CrissCrossLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(n_layer)])
        self.proj_out = nn.Sequential(nn.Linear(d_model, out_dim))
        for module in self.modules():  # upstream init; in_proj, convs and norms keep their defaults
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``(B, C, N, d_model)`` (what fine-tuning uses); ``mask`` (B, C, N), 1 = masked."""
        return self.encoder(self.patch_embedding(x, mask))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``(B, C, N, out_dim)`` through ``proj_out``, as upstream."""
        return self.proj_out(self.encode(x, mask))
