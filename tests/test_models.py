"""CBraMod, checkpoint loading, dual masking and the fusion classifier."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from physiofm.models import (
    MODEL_SIZES,
    CBraMod,
    CheckpointError,
    DualMasking,
    FusionClassifier,
    cbramod,
    create_model,
    load_pretrained,
    masked_mse,
    save_encoder,
)
from physiofm.models.cbramod import Dropout, drop


def expected_keys() -> dict[str, tuple[int, ...]]:
    """The released checkpoint's 211 tensors in order (method.md §2.7), written out from the specification."""
    keys = {
        "patch_embedding.mask_encoding": (200,),
        "patch_embedding.positional_encoding.0.weight": (200, 1, 19, 7),
        "patch_embedding.positional_encoding.0.bias": (200,),
        "patch_embedding.proj_in.0.weight": (25, 1, 1, 49),
        "patch_embedding.proj_in.0.bias": (25,),
        "patch_embedding.proj_in.1.weight": (25,),
        "patch_embedding.proj_in.1.bias": (25,),
        "patch_embedding.proj_in.3.weight": (25, 25, 1, 3),
        "patch_embedding.proj_in.3.bias": (25,),
        "patch_embedding.proj_in.4.weight": (25,),
        "patch_embedding.proj_in.4.bias": (25,),
        "patch_embedding.proj_in.6.weight": (25, 25, 1, 3),
        "patch_embedding.proj_in.6.bias": (25,),
        "patch_embedding.proj_in.7.weight": (25,),
        "patch_embedding.proj_in.7.bias": (25,),
        "patch_embedding.spectral_proj.0.weight": (200, 101),
        "patch_embedding.spectral_proj.0.bias": (200,),
    }
    for i in range(12):
        p = f"encoder.layers.{i}."
        for attn in ("self_attn_s", "self_attn_t"):
            keys.update(
                {
                    f"{p}{attn}.in_proj_weight": (300, 100),
                    f"{p}{attn}.in_proj_bias": (300,),
                    f"{p}{attn}.out_proj.weight": (100, 100),
                    f"{p}{attn}.out_proj.bias": (100,),
                }
            )
        keys.update(
            {
                f"{p}linear1.weight": (800, 200),
                f"{p}linear1.bias": (800,),
                f"{p}linear2.weight": (200, 800),
                f"{p}linear2.bias": (200,),
                f"{p}norm1.weight": (200,),
                f"{p}norm1.bias": (200,),
                f"{p}norm2.weight": (200,),
                f"{p}norm2.bias": (200,),
            }
        )
    keys.update({"proj_out.0.weight": (200, 200), "proj_out.0.bias": (200,)})
    return keys


def small(**kw) -> CBraMod:
    return CBraMod(n_layer=2, **kw)


class UpstreamLayer(nn.Module):
    """The criss-cross layer as the specification writes it (method.md §2.2 e), with nn.MultiheadAttention."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn_s = nn.MultiheadAttention(100, 4, dropout=0.1, batch_first=True)
        self.self_attn_t = nn.MultiheadAttention(100, 4, dropout=0.1, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(200, 800), nn.Linear(800, 200)
        self.norm1, self.norm2 = nn.LayerNorm(200), nn.LayerNorm(200)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, C, N, _ = x.shape
        xs = x[..., :100].transpose(1, 2).contiguous().view(B * N, C, 100)
        xs = self.self_attn_s(xs, xs, xs, need_weights=False)[0].view(B, N, C, 100).transpose(1, 2)
        xt = x[..., 100:].contiguous().view(B * C, N, 100)
        xt = self.self_attn_t(xt, xt, xt, need_weights=False)[0].view(B, C, N, 100)
        return torch.cat([xs, xt], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


# ---- encoder -------------------------------------------------------------------------------


def test_state_dict_matches_the_released_checkpoint():
    model = CBraMod()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(expected_keys()) == 211
    assert list(shapes.items()) == list(expected_keys().items())  # names, shapes and upstream order
    assert sum(p.numel() for p in model.parameters()) == 4_924_000
    assert not model.patch_embedding.mask_encoding.requires_grad and not model.patch_embedding.mask_encoding.any()


def test_initialisation_follows_upstream():
    torch.manual_seed(0)
    layer = CBraMod(n_layer=1).encoder.layers[0]
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / fan_out) for every Linear, MHA's out_proj included
    for linear in (layer.linear1, layer.linear2, layer.self_attn_s.out_proj):
        assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / linear.out_features), rel=0.05)
    # nn.MultiheadAttention's own init for the rest: xavier-uniform in_proj, zero biases
    bound = math.sqrt(6 / (300 + 100))
    weight = layer.self_attn_t.in_proj_weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert not layer.self_attn_t.in_proj_bias.any() and not layer.self_attn_t.out_proj.bias.any()


@pytest.mark.parametrize("channels", [19, 12, 2])
def test_any_channel_count_and_the_two_outputs(channels):
    model = small().eval()
    x = torch.randn(3, channels, 4, 200)
    features = model.encode(x)
    assert features.shape == model(x).shape == (3, channels, 4, 200)
    assert torch.allclose(model.proj_out(features), model(x))


def test_ecg_encoder_pretrains_on_12_leads_and_fine_tunes_on_2(tmp_path):
    torch.manual_seed(4)
    encoder = small()
    x = torch.randn(2, 12, 10, 200)
    mask = DualMasking()(x, generator=torch.Generator().manual_seed(0))[1]
    masked_mse(encoder(x, mask=mask), x, mask).backward()
    assert encoder.encoder.layers[1].self_attn_s.in_proj_weight.grad.abs().sum() > 0
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    loaded = load_pretrained(tmp_path / "encoder.pt", n_layer=2).eval()
    two_leads = torch.randn(3, 2, 10, 200)
    with torch.no_grad():
        assert torch.equal(loaded.encode(two_leads), encoder.eval().encode(two_leads))
    assert loaded.encode(two_leads).shape == (3, 2, 10, 200)


def test_other_sizes_and_invalid_configurations():
    model = CBraMod(d_model=120, nhead=4, dim_feedforward=240, n_layer=2).eval()
    x = torch.randn(2, 3, 5, 200)
    assert model.encode(x).shape == (2, 3, 5, 120) and model(x).shape == (2, 3, 5, 200)
    assert model.patch_embedding.proj_in[0].weight.shape == (15, 1, 1, 49)
    assert model.encoder.layers[0].self_attn_s.in_proj_weight.shape == (180, 60)
    for bad in ({"d_model": 104}, {"nhead": 3}, {"in_dim": 250}):
        with pytest.raises(ValueError):
            CBraMod(n_layer=1, **bad)
    with pytest.raises(ValueError, match="200 samples"):
        small()(torch.randn(1, 2, 3, 256))


def test_loading_official_and_braindecode_layouts(tmp_path):
    torch.manual_seed(1)
    source = CBraMod()
    torch.save(source.state_dict(), tmp_path / "pretrained_weights.pth")
    loaded = load_pretrained(tmp_path / "pretrained_weights.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    braindecode = {
        **{f"model.{k}": v for k, v in source.state_dict().items()},
        "model.final_layer.1.weight": torch.zeros(3, 10),
        "model.final_layer.1.bias": torch.zeros(3),
    }
    torch.save(braindecode, tmp_path / "pytorch_model.bin")
    assert torch.equal(load_pretrained(tmp_path / "pytorch_model.bin").proj_out[0].weight, source.proj_out[0].weight)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    assert torch.equal(
        load_pretrained(tmp_path / "wrapped.pt").encoder.layers[11].linear2.bias, source.encoder.layers[11].linear2.bias
    )


def test_loading_errors_name_the_keys(tmp_path):
    state = CBraMod().state_dict()
    broken = dict(state)
    del broken["encoder.layers.3.linear1.bias"]
    broken["encoder.layers.12.linear1.bias"] = torch.zeros(800)
    broken["proj_out.0.weight"] = torch.zeros(100, 200)
    torch.save(broken, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as error:
        load_pretrained(tmp_path / "bad.pth")
    message = str(error.value)
    assert "missing keys: encoder.layers.3.linear1.bias" in message
    assert "unexpected keys: encoder.layers.12.linear1.bias" in message
    assert "proj_out.0.weight (file (100, 200), model (200, 200))" in message
    torch.save(state, tmp_path / "full.pth")
    with pytest.raises(CheckpointError, match="unexpected keys: encoder.layers.2"):
        load_pretrained(tmp_path / "full.pth", n_layer=2)  # a 12-layer file into a 2-layer model
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_pretrained(tmp_path / "tensor.pt")


def test_named_sizes():
    base = create_model("cbramod-base")
    assert base.config == CBraMod().config  # the upstream defaults
    assert [(k, tuple(v.shape)) for k, v in base.state_dict().items()] == list(expected_keys().items())
    counts = {name: sum(p.numel() for p in create_model(name).parameters()) for name in MODEL_SIZES}
    assert counts == {"cbramod-base": 4_924_000, "cbramod-small": 1_703_200, "cbramod-tiny": 495_400}
    assert [len(create_model(name).encoder.layers) for name in MODEL_SIZES] == [12, 4, 1]
    tuned = create_model("cbramod-small", n_layer=2, dropout=0.0)
    assert len(tuned.encoder.layers) == 2 and tuned.config["dropout"] == 0.0
    assert create_model("cbramod-tiny").encode(torch.randn(1, 3, 2, 200)).shape == (1, 3, 2, 200)
    with pytest.raises(ValueError, match="cbramod-base, cbramod-small, cbramod-tiny"):
        create_model("cbramod-huge")


def test_an_encoder_file_carries_its_size(tmp_path):
    torch.manual_seed(2)
    source = create_model("cbramod-small", dropout=0.2)
    save_encoder(source, tmp_path / "encoder.pt")
    state = torch.load(tmp_path / "encoder.pt")  # still a plain state_dict with the checkpoint's names
    assert list(state) == list(source.state_dict())
    for where in (tmp_path / "encoder.pt", tmp_path, str(tmp_path)):  # the file or its run folder
        loaded = load_pretrained(where)
        assert len(loaded.encoder.layers) == 4 and loaded.config == source.config
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))
    assert load_pretrained(tmp_path, n_layer=4, d_model=200).config == source.config  # the same size may be repeated
    assert load_pretrained(tmp_path, dropout=0.0).config["dropout"] == 0.0  # not a size: may change
    with pytest.raises(CheckpointError, match=r"n_layer=2 \(saved 4\)"):
        load_pretrained(tmp_path, n_layer=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without encoder.pt"):
        load_pretrained(tmp_path / "empty")
    # a bare state_dict (older runs) has no size: it loads at the size given, and only at that one
    torch.save(dict(source.state_dict()), tmp_path / "old.pt")
    assert len(load_pretrained(tmp_path / "old.pt", n_layer=4).encoder.layers) == 4
    with pytest.raises(CheckpointError, match="missing keys: encoder.layers.4"):
        load_pretrained(tmp_path / "old.pt")


def test_embedding_order_is_conv_channel_major_then_time_step():
    model = small().eval()
    embedding = model.patch_embedding
    with torch.no_grad():  # keep only the time-domain branch
        for module in (embedding.spectral_proj[0], embedding.positional_encoding[0]):
            module.weight.zero_()
            module.bias.zero_()
    x = torch.randn(2, 3, 4, 200)
    out = embedding(x)
    conv = embedding.proj_in(x.reshape(2, 1, 12, 200))  # (B, 25 channels, C*N, 8 steps)
    for b, c, n, channel, step in [(0, 0, 0, 0, 0), (1, 2, 3, 24, 7), (0, 1, 2, 5, 3), (1, 0, 3, 13, 6)]:
        assert torch.isclose(out[b, c, n, 8 * channel + step], conv[b, channel, c * 4 + n, step])


def test_embedding_order_on_a_hand_checkable_input():
    embedding = small().eval().patch_embedding
    with torch.no_grad():  # proj_in = one conv whose channel k copies sample k + 1 of the window
        for module in (embedding.spectral_proj[0], embedding.positional_encoding[0]):
            module.weight.zero_()
            module.bias.zero_()
        embedding.proj_in[0].weight.zero_()
        embedding.proj_in[0].bias.zero_()
        for k in range(25):
            embedding.proj_in[0].weight[k, 0, 0, 24 + k] = 1.0  # window centre 25 t, so sample 25 t + k
    embedding.proj_in = embedding.proj_in[:1]
    x = torch.arange(200.0).expand(1, 1, 1, 200)
    out = embedding(x)[0, 0, 0]
    # d = 8 k + t holds sample 25 t + k (zero-padded left of 0): 8 conv steps of stride 25
    expected = torch.tensor([25.0 * t + k for k in range(25) for t in range(8)])
    assert torch.equal(out, expected)


def test_attention_split_spatial_then_temporal():
    layer = small().encoder.layers[0].eval()
    x = torch.randn(1, 5, 6, 200)
    bumped = x.clone()
    bumped[0, 2, 3] += 5.0  # one channel (2) at one patch (3)
    with torch.no_grad():
        delta = (layer.criss_cross(bumped) - layer.criss_cross(x)).abs()
    spatial, temporal = delta[..., :100], delta[..., 100:]
    other = [(c, n) for c in range(5) for n in range(6) if c != 2 and n != 3]
    assert all(spatial[0, c, n].max() == 0 and temporal[0, c, n].max() == 0 for c, n in other)
    assert all(spatial[0, c, 3].max() > 0 for c in range(5))  # across channels, at patch 3
    assert all(spatial[0, 2, n].max() == 0 for n in range(6) if n != 3)
    assert all(temporal[0, 2, n].max() > 0 for n in range(6))  # across patches, in channel 2
    assert all(temporal[0, c, 3].max() == 0 for c in range(5) if c != 2)


@pytest.mark.parametrize("shape", [(2, 5, 6, 200), (3, 12, 10, 200), (1, 2, 1, 200)])
def test_sdpa_layer_equals_multihead_attention_layer_with_the_same_weights(shape):
    ours = small().encoder.layers[1].eval()
    reference = UpstreamLayer().eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(ours.criss_cross(x), reference.attention(x), atol=1e-5)
        assert torch.allclose(ours(x), reference(x), atol=1e-4)


def test_layer_gradients_equal_multihead_attention_layer_gradients():
    """The backward path (unbind of q, k, v, split of the halves) gives upstream's gradients too."""
    ours = small(dropout=0.0).encoder.layers[0].train()
    reference = UpstreamLayer().train()
    reference.load_state_dict(ours.state_dict())
    reference.self_attn_s.dropout = reference.self_attn_t.dropout = 0.0
    x = torch.randn(2, 5, 6, 200)
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for layer, inp in zip((ours, reference), inputs):
        layer(inp).pow(2).sum().backward()
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad, atol=1e-4, rtol=1e-4)
    theirs = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, theirs[name].grad, atol=1e-4, rtol=1e-4, msg=name)


def test_the_sdpa_branch_computes_the_same_attention(monkeypatch):
    """The GPU branch (SDPA on the same strided q, k, v), run here on the CPU."""
    layer = small().encoder.layers[0].eval()
    x = torch.randn(2, 7, 5, 200)
    calls = []

    def sdpa(q, k, v, dropout):
        calls.append(tuple(q.shape))
        return cbramod.sdpa_attention(q, k, v, dropout)

    with torch.no_grad():
        explicit = layer.criss_cross(x)
        monkeypatch.setattr(cbramod, "attend", sdpa)
        assert torch.allclose(layer.criss_cross(x), explicit, atol=1e-5)
    assert calls == [(2, 5, 4, 7, 25), (2, 7, 4, 5, 25)]  # (B, N, heads, C, d), (B, C, heads, N, d)


def test_attention_dropout_only_in_training():
    layer = small().encoder.layers[0]
    layer.dropout.p = layer.dropout1.p = layer.dropout2.p = 0.0  # leave only the attention-weight dropout
    x = torch.randn(2, 6, 5, 200)
    with torch.no_grad():
        layer.eval()
        assert torch.equal(layer(x), layer(x))
        layer.train()
        assert not torch.allclose(layer(x), layer(x))


def test_cpu_dropout_keeps_one_minus_p_and_rescales():
    torch.manual_seed(5)
    x = torch.ones(400_000, requires_grad=True)
    dropout = Dropout(0.1).train()
    out = dropout(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003
    assert torch.allclose(out[kept], torch.tensor(1 / 0.9))
    out.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.9)
    torch.manual_seed(5)
    assert torch.equal(dropout(x), out)  # the global RNG drives it
    assert torch.equal(dropout.eval()(x), x)


@pytest.mark.parametrize("p", [0.1, 0.5, 1 / 3, 1e-6, 1 - 1e-6, 0.99999])
def test_cpu_dropout_mask_is_the_15_bit_comparison(p):
    """The arithmetic mask drops exactly the draws a comparison with round(p * 32768) drops (off by one, it would not)."""
    shape = (3, 5, 801)
    torch.manual_seed(11)
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n].view(shape)
    expected = torch.where((draws & 0x7FFF).int() < round(p * 32768), 0.0, 1.0 / (1.0 - p))  # int32: 32768 fits
    x = torch.randn(shape)
    torch.manual_seed(11)
    assert torch.equal(drop(x, p, True), x * expected)
    torch.manual_seed(11)
    assert torch.equal(drop(x.bfloat16(), p, True), x.bfloat16() * expected.bfloat16())
    assert (drop(x, p, True) == 0).any() == (round(p * 32768) > 0)


def test_masked_patches_become_the_zero_token_before_both_branches():
    model = small().eval()
    x = torch.randn(2, 3, 4, 200)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = True
    zeroed = x.clone()
    zeroed[mask] = 0
    embedding = model.patch_embedding
    with torch.no_grad():
        assert torch.allclose(model(x, mask=mask), model(zeroed), atol=1e-6)
        assert not torch.allclose(model(x, mask=mask), model(x), atol=1e-3)
        assert torch.equal(model(x, mask=mask.long()), model(x, mask=mask))  # upstream's {0, 1} long masks
        # the frequency branch alone sees the zero patch too: its embedding is the bias (|rfft(0)| = 0)
        embedding.proj_in = nn.Sequential(nn.Conv2d(1, 25, (1, 49), (1, 25), (0, 24), bias=False))
        nn.init.zeros_(embedding.proj_in[0].weight)
        embedding.positional_encoding[0].weight.zero_()
        embedding.positional_encoding[0].bias.zero_()
        out = embedding(x, mask)
        assert torch.allclose(out[0, 1, 2], embedding.spectral_proj[0].bias)
        assert not torch.allclose(out[0, 1, 1], embedding.spectral_proj[0].bias)


# ---- masking -------------------------------------------------------------------------------


def test_intra_lead_masking_statistics():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, 10, 200)
    masked, mask = DualMasking("intra", intra_ratio=0.5)(x, generator=generator)
    assert abs(mask.float().mean().item() - 0.5) < 0.01
    assert (masked[mask] == 0).all() and torch.equal(masked[~mask], x[~mask])
    per_lead = mask.float().mean(dim=(0, 2))
    assert (per_lead - 0.5).abs().max() < 0.03  # no lead favoured
    _, sparse = DualMasking("intra", intra_ratio=0.15)(x, generator=generator)
    assert abs(sparse.float().mean().item() - 0.15) < 0.01


def test_inter_lead_masking_masks_whole_present_leads():
    present = torch.ones(500, 12, dtype=torch.bool)
    present[:, [2, 5]] = False  # absent leads
    generator = torch.Generator().manual_seed(1)
    _, mask = DualMasking("inter", inter_ratio=0.25, inter_unit="lead")(
        torch.randn(500, 12, 10, 200), lead_mask=present, generator=generator
    )
    assert (mask == mask[:, :, :1]).all()  # a lead is masked in all its patches or none
    assert (mask.any(dim=2).sum(dim=1) == math.ceil(0.25 * 10)).all()  # ceil(ratio x present leads)
    assert not mask[:, [2, 5]].any()
    chosen = mask[:, :, 0].float().mean(dim=0)[present[0]]
    assert (chosen - 3 / 10).abs().max() < 0.07  # 3 of the 10 present leads, uniformly
    _, two = DualMasking("inter", inter_count=5)(torch.randn(50, 2, 10, 200), generator=generator)
    assert (two.any(dim=2).sum(dim=1) == 1).all()  # always one visible lead left
    ragged = torch.arange(12)[None, :] < torch.tensor([1, 2, 8, 12])[:, None]
    single = DualMasking("inter", inter_count=4, inter_unit="lead")
    _, some = single(torch.randn(4, 12, 3, 200), lead_mask=ragged, generator=generator)
    assert some[:, :, 0].sum(dim=1).tolist() == [0, 1, 4, 4] and not (some[:, :, 0] & ~ragged).any()


def test_dual_masking_choice_union_and_padding():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(600, 12, 10, 200)
    valid = torch.arange(10)[None, :] < torch.tensor([7] * 300 + [10] * 300)[:, None]
    _, mask = DualMasking("dual", p_intra=0.5)(x, patch_mask=valid, generator=generator)
    whole = (mask[:, :, :7] == mask[:, :, :1]).all(dim=(1, 2))
    assert 0.4 < whole.float().mean() < 0.6  # half the samples got inter-lead masks
    assert not mask[:300, :, 7:].any()  # zero-padded patches are never targets
    _, mostly_intra = DualMasking("dual", p_intra=0.9)(x, generator=generator)
    assert 0.05 < (mostly_intra == mostly_intra[:, :, :1]).all(dim=(1, 2)).float().mean() < 0.15
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    union = DualMasking("dual", combine="union")
    _, a = union(x[:50], generator=g1)
    g3 = torch.Generator().manual_seed(3)
    i_part = union.intra((50, 12, 10), g3)
    e_part = union.inter(torch.ones(50, 12, dtype=torch.bool), 10, g3)
    assert torch.equal(a, i_part | e_part) and (a >= e_part).all() and (a >= i_part).all()
    assert a.float().mean() > i_part.float().mean() + 0.05  # the union adds whole leads to the intra mask
    _, b = union(x[:50], generator=g2)
    assert torch.equal(a, b)  # same seed, same mask
    _, c = union(x[:50], generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a, c)


def test_masking_rejects_bad_settings():
    for bad in ({"mode": "both"}, {"combine": "sum"}, {"intra_ratio": 1.5}, {"inter_count": -1}):
        with pytest.raises(ValueError):
            DualMasking(**bad)


def test_masked_mse_counts_only_masked_patches():
    target = torch.zeros(2, 3, 4, 200)
    prediction = torch.zeros(2, 3, 4, 200, requires_grad=True)
    with torch.no_grad():
        prediction[0, 0, 0] = 2.0  # masked: counts
        prediction[1, 2, 3] = 100.0  # not masked: ignored
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True
    assert masked_mse(prediction, target, mask).item() == pytest.approx(4.0 / 2)
    empty = masked_mse(prediction, target, torch.zeros_like(mask))
    empty.backward()
    assert empty.item() == 0 and prediction.grad is not None and not prediction.grad.isnan().any()


# ---- fusion --------------------------------------------------------------------------------


def test_fusion_eeg_only_ecg_only_and_both():
    eeg, ecg = torch.randn(4, 14, 3, 200), torch.randn(4, 2, 3, 200)
    assert FusionClassifier(eeg=small(), n_targets=3)(eeg=eeg).shape == (4, 3)
    assert FusionClassifier(ecg=small(), n_targets=2)(ecg=ecg).shape == (4, 2)
    both = FusionClassifier(eeg=small(), ecg=small(), n_targets=3)
    assert both(eeg=eeg, ecg=ecg).shape == (4, 3)
    assert both.head[0].in_features == 400
    flat = FusionClassifier(eeg=small(), ecg=small(), pooling="flatten", eeg_shape=(14, 3), ecg_shape=(2, 3))
    assert flat(eeg=eeg, ecg=ecg).shape == (4, 3) and flat.head[0].in_features == (14 + 2) * 3 * 200
    with pytest.raises(ValueError, match="pass ecg"):
        both(eeg=eeg)
    with pytest.raises(ValueError, match="no ecg encoder"):
        FusionClassifier(eeg=small())(eeg=eeg, ecg=ecg)
    with pytest.raises(ValueError, match="eeg_shape"):
        FusionClassifier(eeg=small(), pooling="flatten")


def test_mean_pooling_over_present_leads_only():
    model = FusionClassifier(ecg=small()).eval()
    x = torch.randn(2, 3, 4, 200)
    present = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        features = model.ecg.encode(x)
        pooled = model.embed(model.ecg, x, present)
    assert torch.allclose(pooled[0], features[0, [0, 2]].mean(dim=(0, 1)), atol=1e-6)
    assert torch.allclose(pooled[1], features[1].mean(dim=(0, 1)), atol=1e-6)


def test_gradients_flow_through_both_branches_unless_frozen():
    model = FusionClassifier(eeg=small(), ecg=small(), n_targets=3)
    model(eeg=torch.randn(2, 14, 3, 200), ecg=torch.randn(2, 2, 3, 200)).sum().backward()
    for branch in (model.eeg, model.ecg):
        grads = [p.grad for p in branch.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads)
    frozen = FusionClassifier(eeg=small(), ecg=small(), freeze_eeg=True).train()
    assert not frozen.eeg.training and frozen.ecg.training and frozen.head.training
    eeg = torch.randn(2, 14, 3, 200)
    with torch.no_grad():
        assert torch.equal(frozen.eeg.encode(eeg), frozen.eeg.encode(eeg))  # no dropout in a frozen branch
    frozen(eeg=eeg, ecg=torch.randn(2, 2, 3, 200)).sum().backward()
    assert all(p.grad is None for p in frozen.eeg.parameters())
    assert all(p.grad is not None for p in frozen.ecg.parameters() if p.requires_grad)


def test_determinism_under_a_seed():
    outputs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        model = FusionClassifier(eeg=small(), ecg=small()).train()  # dropout active
        outputs.append(model(eeg=torch.ones(2, 14, 3, 200), ecg=torch.ones(2, 2, 3, 200)))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
