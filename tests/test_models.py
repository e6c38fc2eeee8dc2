"""CBraMod, checkpoint loading, dual masking and the fusion classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from physiofm.models import CBraMod, CheckpointError, DualMasking, FusionClassifier, load_pretrained, masked_mse


def expected_keys() -> dict[str, tuple[int, ...]]:
    """The released checkpoint's 211 tensors (method.md §2.7), written out from the specification."""
    keys = {"patch_embedding.mask_encoding": (200,),
            "patch_embedding.positional_encoding.0.weight": (200, 1, 19, 7),
            "patch_embedding.positional_encoding.0.bias": (200,),
            "patch_embedding.proj_in.0.weight": (25, 1, 1, 49), "patch_embedding.proj_in.0.bias": (25,),
            "patch_embedding.spectral_proj.0.weight": (200, 101), "patch_embedding.spectral_proj.0.bias": (200,),
            "proj_out.0.weight": (200, 200), "proj_out.0.bias": (200,)}
    for i in (1, 4, 7):
        keys[f"patch_embedding.proj_in.{i}.weight"] = keys[f"patch_embedding.proj_in.{i}.bias"] = (25,)
    for i in (3, 6):
        keys[f"patch_embedding.proj_in.{i}.weight"], keys[f"patch_embedding.proj_in.{i}.bias"] = (25, 25, 1, 3), (25,)
    for i in range(12):
        p = f"encoder.layers.{i}."
        for attn in ("self_attn_s", "self_attn_t"):
            keys.update({f"{p}{attn}.in_proj_weight": (300, 100), f"{p}{attn}.in_proj_bias": (300,),
                         f"{p}{attn}.out_proj.weight": (100, 100), f"{p}{attn}.out_proj.bias": (100,)})
        keys.update({f"{p}linear1.weight": (800, 200), f"{p}linear1.bias": (800,), f"{p}linear2.weight": (200, 800),
                     f"{p}linear2.bias": (200,), f"{p}norm1.weight": (200,), f"{p}norm1.bias": (200,),
                     f"{p}norm2.weight": (200,), f"{p}norm2.bias": (200,)})
    return keys


def small(**kw) -> CBraMod:
    return CBraMod(n_layer=2, **kw)


def test_state_dict_matches_the_released_checkpoint():
    model = CBraMod()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(expected_keys()) == 211
    assert shapes == expected_keys()
    assert sum(p.numel() for p in model.parameters()) == 4_924_000
    assert not model.patch_embedding.mask_encoding.requires_grad and not model.patch_embedding.mask_encoding.any()


@pytest.mark.parametrize("channels", [19, 12, 2])
def test_any_channel_count_and_the_two_outputs(channels):
    model = small().eval()
    x = torch.randn(3, channels, 4, 200)
    features = model.encode(x)
    assert features.shape == model(x).shape == (3, channels, 4, 200)
    assert torch.allclose(model.proj_out(features), model(x))


def test_loading_official_and_braindecode_layouts(tmp_path):
    torch.manual_seed(1)
    source = CBraMod()
    torch.save(source.state_dict(), tmp_path / "pretrained_weights.pth")
    loaded = load_pretrained(tmp_path / "pretrained_weights.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    braindecode = {**{f"model.{k}": v for k, v in source.state_dict().items()},
                   "model.final_layer.weight": torch.zeros(3, 10)}
    torch.save(braindecode, tmp_path / "pytorch_model.bin")
    assert torch.equal(load_pretrained(tmp_path / "pytorch_model.bin").proj_out[0].weight, source.proj_out[0].weight)


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


def test_sdpa_attention_equals_multihead_attention_with_the_same_weights():
    ours = small().encoder.layers[0].self_attn_s.eval()
    reference = nn.MultiheadAttention(100, 4, dropout=0.1, batch_first=True).eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(7, 9, 100)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x, x, x, need_weights=False)[0], atol=1e-5)


def test_masked_patches_become_the_zero_token_before_both_branches():
    model = small().eval()
    x = torch.randn(2, 3, 4, 200)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = True
    zeroed = x.clone()
    zeroed[mask] = 0
    with torch.no_grad():
        assert torch.allclose(model(x, mask=mask), model(zeroed), atol=1e-6)
        assert not torch.allclose(model(x, mask=mask), model(x), atol=1e-3)


# ---- masking -------------------------------------------------------------------------------

def test_intra_lead_masking_statistics():
    generator = torch.Generator().manual_seed(0)
    masked, mask = DualMasking("intra", intra_ratio=0.5)(torch.randn(400, 12, 10, 200), generator=generator)
    assert abs(mask.float().mean().item() - 0.5) < 0.01
    assert (masked[mask] == 0).all()
    per_lead = mask.float().mean(dim=(0, 2))
    assert (per_lead - 0.5).abs().max() < 0.03  # no lead favoured


def test_inter_lead_masking_masks_whole_present_leads():
    present = torch.ones(500, 12, dtype=torch.bool)
    present[:, [2, 5]] = False  # absent leads
    generator = torch.Generator().manual_seed(1)
    _, mask = DualMasking("inter", inter_ratio=0.25)(torch.randn(500, 12, 10, 200), lead_mask=present,
                                                     generator=generator)
    assert (mask == mask[:, :, :1]).all()  # a lead is masked in all its patches or none
    assert (mask.any(dim=2).sum(dim=1) == round(0.25 * 10)).all()
    assert not mask[:, [2, 5]].any()
    chosen = mask[:, :, 0].float().mean(dim=0)[present[0]]
    assert (chosen - 2 / 10).abs().max() < 0.06  # 2 of the 10 present leads, uniformly
    _, two = DualMasking("inter", inter_count=5)(torch.randn(50, 2, 10, 200), generator=generator)
    assert (two.any(dim=2).sum(dim=1) == 1).all()  # always one visible lead left


def test_dual_masking_choice_union_and_padding():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(600, 12, 10, 200)
    valid = torch.arange(10)[None, :] < torch.tensor([7] * 300 + [10] * 300)[:, None]
    _, mask = DualMasking("dual", p_intra=0.5)(x, patch_mask=valid, generator=generator)
    whole = (mask[:, :, :7] == mask[:, :, :1]).all(dim=(1, 2))
    assert 0.4 < whole.float().mean() < 0.6  # half the samples got inter-lead masks
    assert not mask[:300, :, 7:].any()  # zero-padded patches are never targets
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    union = DualMasking("dual", combine="union")
    _, a = union(x[:50], generator=g1)
    intra = DualMasking("intra")
    inter = DualMasking("inter")
    g3 = torch.Generator().manual_seed(3)
    i_part = intra.intra((50, 12, 10), g3)
    e_part = inter.inter(torch.ones(50, 12, dtype=torch.bool), 10, g3)
    assert torch.equal(a, i_part | e_part) and (a >= e_part).all() and (a >= i_part).all()
    _, b = union(x[:50], generator=g2)
    assert torch.equal(a, b)  # same generator state, same mask


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
    assert empty.item() == 0 and prediction.grad is not None


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


def test_gradients_flow_through_both_branches_unless_frozen():
    model = FusionClassifier(eeg=small(), ecg=small(), n_targets=3)
    model(eeg=torch.randn(2, 14, 3, 200), ecg=torch.randn(2, 2, 3, 200)).sum().backward()
    for branch in (model.eeg, model.ecg):
        grads = [p.grad for p in branch.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    frozen = FusionClassifier(eeg=small(), ecg=small(), freeze_eeg=True)
    frozen(eeg=torch.randn(2, 14, 3, 200), ecg=torch.randn(2, 2, 3, 200)).sum().backward()
    assert all(p.grad is None for p in frozen.eeg.parameters())
    assert any(p.grad is not None for p in frozen.ecg.parameters())


def test_determinism_under_a_seed():
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        model = FusionClassifier(eeg=small(), ecg=small()).train()  # dropout active
        torch.manual_seed(12)
        outputs.append(model(eeg=torch.ones(2, 14, 3, 200), ecg=torch.ones(2, 2, 3, 200)))
    assert torch.equal(*outputs)
