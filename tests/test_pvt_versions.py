"""Every arch of PVT v1 and v2 through one suite: parameter counts against the papers,
pyramid shapes at odd sizes, official-weight parity, backward, activation checkpointing and
frozen stages. v1 and v2 are one class fed different arch data, so one suite covers both,
parametrised over the arch table (:mod:`pvt_mm.models.backbones.archs`). The heavy archs (over
60 M parameters: large, b4, b5) only get the cheap checks (counts, shapes at tiny sizes)."""
import math

import pytest
import torch
from torch import nn

from pvt_mm import ARCH_ZOO, PVT, PVTv2
from pvt_mm.models.backbones import archs

from .official_pvt import OfficialPVT
from .official_pvt_v2 import OfficialPVTv2

V1_ARCHS, V2_ARCHS = archs.names('v1'), archs.names('v2')
ALL = archs.names()
# Official ImageNet classifiers incl. the 1000-class head, in millions (the rows' published
# counts: v1 paper Table 2, v2 official README).
OFFICIAL_PARAMS_M = {row.name: row.params_m for row in archs.rows()}
BIG = tuple(row.name for row in archs.rows() if row.heavy)  # cheap checks only
# The training checks: the smallest arch of each version and every linear-SRA one.
LIGHT = tuple(sorted({min(archs.rows(v), key=lambda r: r.params_m).name for v in ('v1', 'v2')}
                     | {row.name for row in archs.rows() if row.fields['linear_sra']},
                     key=ALL.index))
# Parity with the official code: all but the batch-1-recipe giants (b4, b5: minutes each).
PARITY = tuple(row.name for row in archs.rows() if not row.big)


def _cls(arch):
    return PVT if archs.arch_row(arch).version == 'v1' else PVTv2


def _official(arch):
    table = ARCH_ZOO[arch]
    common = dict(depths=table['depths'], dims=table['embed_dims'], heads=table['num_heads'],
                  mlp_ratios=table['mlp_ratios'], sr_ratios=table['sr_ratios'])
    if arch in V1_ARCHS:
        return OfficialPVT(**common).eval()
    return OfficialPVTv2(linear=table['linear_sra'], **common).perturb_norms_().eval()


def _expected_sizes(arch, size):
    """Stage sizes from the conv arithmetic: v1 floors, v2's padded 7/4/3, 3/2/1 ceil."""
    table, sizes = ARCH_ZOO[arch], []
    for stride, kernel, padding in zip(table['patch_sizes'], table['patch_kernels'],
                                       table['patch_paddings'], strict=True):
        size = tuple((s + 2 * padding - kernel) // stride + 1 for s in size)
        sizes.append(size)
    return sizes


def test_the_suite_covers_every_preset():
    assert set(ALL) == set(ARCH_ZOO) == set(OFFICIAL_PARAMS_M)
    assert set(PVT.arch_zoo) == set(V1_ARCHS) and set(PVTv2.arch_zoo) == set(V2_ARCHS)


@pytest.mark.parametrize('arch', ALL)
def test_parameter_counts_match_the_official_models(arch):
    """v1 with its class token and final norm, v2 as it is (its stage norms are part of
    the backbone), each plus the 1000-class head."""
    if arch in V1_ARCHS:
        backbone = PVT(arch=arch, with_cls_token=True)
    else:
        backbone = PVTv2(arch=arch)
    head = nn.Linear(backbone.embed_dims[-1], 1000)
    total = sum(p.numel() for m in (backbone, head) for p in m.parameters())
    assert abs(total / 1e6 - OFFICIAL_PARAMS_M[arch]) <= 0.05, \
        f'{arch}: {total / 1e6:.3f} M vs official {OFFICIAL_PARAMS_M[arch]} M'


@pytest.mark.parametrize('arch', ALL)
@pytest.mark.compat
def test_pyramid_shapes_at_odd_sizes(arch):
    model = _cls(arch)(arch=arch).eval()
    table = ARCH_ZOO[arch]
    assert [len(stage.layers) for stage in model.stages] == list(table['depths'])
    sizes = [(33, 47)] if arch in V1_ARCHS else [(31, 31), (29, 45)]
    if arch not in BIG:
        sizes.append((112, 137))
    for size in sizes:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *size))
        expected = [(dims, *hw) for dims, hw in zip(table['embed_dims'], _expected_sizes(arch, size))]
        assert [tuple(o.shape[1:]) for o in outs] == expected
        assert all(torch.isfinite(o).all() for o in outs)


def test_v2_sizes_are_the_ones_mmdet_asserts():
    model = PVTv2(arch='b0').eval()
    with torch.no_grad():
        for size, maps in (((31, 31), [(8, 8), (4, 4), (2, 2), (1, 1)]),
                           ((112, 137), [(28, 35), (14, 18), (7, 9), (4, 5)])):
            assert [tuple(o.shape[2:]) for o in model(torch.randn(1, 3, *size))] == maps


@pytest.mark.parametrize('arch', PARITY)
def test_official_weights_reproduce_official_features(arch, tmp_path):
    """An independent model of the official code, saved in release format, loaded through
    init_cfg: the same features at odd sizes (v1: every position embedding resized)."""
    torch.manual_seed(ALL.index(arch))
    official = _official(arch)
    path = tmp_path / f'{arch}.pth'
    torch.save({'model': official.state_dict()}, path)
    model = _cls(arch)(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    sizes = [(128, 160)] if arch in V1_ARCHS else [(61, 93)]
    if arch in LIGHT:
        sizes.append((97, 131))
    for size in sizes:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            ours, ref = model(x), official.forward_dense(x)
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize('arch', LIGHT)
def test_backward_and_activation_checkpointing_give_the_same_gradients(arch):
    torch.manual_seed(0)
    plain = _cls(arch)(arch=arch, drop_path_rate=0.0)
    plain.init_weights()
    ckpt = _cls(arch)(arch=arch, drop_path_rate=0.0, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 48)
    for model in (plain, ckpt):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert p1.grad is not None and torch.isfinite(p1.grad).all(), name
        torch.testing.assert_close(p1.grad, p2.grad, msg=name, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('arch', LIGHT)
def test_frozen_stages_stay_frozen_and_in_eval_mode(arch):
    model = _cls(arch)(arch=arch, frozen_stages=2, drop_rate=0.1)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert stage.training != frozen
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is None for p in model.stages[0].parameters())
    assert all(p.grad is not None for p in model.stages[3].parameters())


# ----------------------------------------------------------------------- v2 specifics
def test_v2_structure_is_the_official_one():
    model = PVTv2(arch='b2_li')
    stage = model.stages[0]
    assert stage.pos_embed is None and stage.norm is not None
    assert (stage.patch_embed.proj.kernel_size, stage.patch_embed.proj.stride,
            stage.patch_embed.proj.padding) == ((7, 7), (4, 4), (3, 3))
    proj = model.stages[1].patch_embed.proj
    assert (proj.kernel_size, proj.stride, proj.padding) == ((3, 3), (2, 2), (1, 1))
    layer = stage.layers[0]
    assert layer.attn.linear and layer.attn.reduced_hw((50, 3)) == (7, 7)
    assert layer.mlp.relu is not None and layer.mlp.dwconv.groups == 512
    assert not PVTv2(arch='b2').stages[0].layers[0].attn.linear


def test_layer_norm_eps_follow_the_official_code():
    """torch's default (1e-5) in patch embeddings and attention reductions, 1e-6 (norm_eps)
    in the blocks and stage norms, in v1 and v2 alike."""
    for model in (PVT(arch='tiny', with_cls_token=True), PVTv2(arch='b0')):
        for stage in model.stages:
            assert stage.patch_embed.norm.eps == 1e-5
            assert stage.norm is None or stage.norm.eps == 1e-6
            for layer in stage.layers:
                assert layer.norm1.eps == layer.norm2.eps == 1e-6
                assert not layer.attn.reduces or layer.attn.norm.eps == 1e-5
    custom = PVTv2(arch='b0', norm_eps=1e-5)
    assert custom.stages[0].layers[0].norm1.eps == custom.stages[3].norm.eps == 1e-5


def test_depthwise_conv_init_divides_fan_out_by_groups():
    torch.manual_seed(0)
    model = PVTv2(arch='b0')
    model.init_weights()
    dwconv = model.stages[0].layers[0].mlp.dwconv  # 256 channels, 3x3, groups=256
    assert dwconv.weight.std().item() == pytest.approx(math.sqrt(2.0 / 9), rel=0.1)
    embed = model.stages[0].patch_embed.proj  # 32 x 3 x 7 x 7, groups=1
    assert embed.weight.std().item() == pytest.approx(math.sqrt(2.0 / (49 * 32)), rel=0.1)


def test_v2_ffn_is_never_split_across_the_grid():
    """The depth-wise conv mixes neighbours: ops never chunks v2's FFN, whatever the user
    setting, so the result is the unchunked one."""
    torch.manual_seed(0)
    whole = PVTv2(arch='b0', ffn_chunk_tokens=None).eval()
    small_chunks = PVTv2(arch='b0', ffn_chunk_tokens=16).eval()
    small_chunks.load_state_dict(whole.state_dict())
    calls = []
    small_chunks.stages[0].layers[0].mlp.fc1.register_forward_hook(
        lambda m, i, o: calls.append(i[0].shape[1]))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(small_chunks(x), whole(x), strict=True):
            torch.testing.assert_close(a, b)
    assert calls == [16 * 24]  # the whole stage-1 grid at once


def test_v2_li_ffn_is_fc1_relu_dwconv_gelu_fc2():
    """The official order (ReLU right after fc1 for -li, the depth-wise conv before GELU),
    on the training path; without the grid it is an error that says what to pass."""
    from pvt_mm.models.layers import FFN
    torch.manual_seed(0)
    ffn = FFN(8, 32, dwconv=True, relu=True).train()
    x = torch.randn(2, 5 * 7, 8, requires_grad=True)
    out = ffn(x, (5, 7))
    grid = torch.relu(ffn.fc1(x)).reshape(2, 5, 7, 32).permute(0, 3, 1, 2)
    hidden = torch.nn.functional.gelu(ffn.dwconv(grid).flatten(2).transpose(1, 2))
    torch.testing.assert_close(out, ffn.fc2(hidden))
    with pytest.raises(ValueError, match='call it with .*hw'):
        ffn(x)


@pytest.mark.parametrize('build, match', [
    (lambda: PVT(arch='b2'), 'PVT v2 arch: use type="PVTv2"'),
    (lambda: PVTv2(arch='small'), 'PVT v1 arch: use type="PVT"'),
    (lambda: PVTv2(arch='b0', with_cls_token=True), 'mean-pooled'),
])
def test_bad_input_version_mix_ups_say_what_to_do(build, match):
    with pytest.raises((KeyError, ValueError), match=match):
        build()


def test_v2_input_size_limit():
    model = PVTv2(arch='b0').eval()
    assert model.min_input_side == 29  # stage 1 needs 8 cells for its 8x8 reduction
    with pytest.raises(ValueError, match='needs at least 29x29 pixels'):
        model(torch.randn(1, 3, 28, 64))
    li = PVTv2(arch=dict(depths=(1, 1, 1, 1), linear_sra=True)).eval()
    assert li.min_input_side == 1  # pooling to 7x7 works from any grid
    with torch.no_grad():
        assert [tuple(o.shape[2:]) for o in li(torch.randn(1, 3, 9, 5))] == [(3, 2), (2, 1), (1, 1), (1, 1)]


def test_v2_dict_arch_defaults_to_v2_data():
    model = PVTv2(arch=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 80, 128)))
    assert model.arch['patch_kernels'] == (7, 3, 3, 3) and model.arch['stage_norm']
    assert model.stages[0].pos_embed is None
    v1_like = PVT(arch=dict(depths=(1, 1, 1, 1), ffn_dwconv=True, pos_embed=False,
                            stage_norm=True))
    assert v1_like.stages[0].layers[0].mlp.dwconv is not None
    assert v1_like.arch['patch_kernels'] == (4, 2, 2, 2)


def test_v2_state_dict_round_trips_to_the_official_names():
    from pvt_mm.models.backbones.pvt_convert import convert_official_keys, to_official_keys
    official = OfficialPVTv2(linear=True)
    model = PVTv2(arch=dict(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256),
                            linear_sra=True))
    names = to_official_keys(model.state_dict(), stage_norms=True)
    assert set(names) == set(official.state_dict()) - {'head.weight', 'head.bias'}
    assert 'block1.0.mlp.dwconv.dwconv.weight' in names and 'norm4.weight' in names
    assert list(convert_official_keys(names)) == list(model.state_dict())


@pytest.mark.compat
def test_v2_checkpoint_of_another_variant_is_a_strict_report(tmp_path):
    from pvt_mm.checkpoint import CheckpointError
    torch.manual_seed(0)
    path = tmp_path / 'b0.pth'
    torch.save({'model': OfficialPVTv2().state_dict()}, path)
    model = PVTv2(arch='b1', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'(?s)model: .*\(PVT-b1\); checkpoint: .*\(PVT-b0\).*shape mismatches.*same variant'):
        model.init_weights()
    li = PVTv2(arch='b2_li', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match='missing backbone keys'):
        li.init_weights()


@pytest.mark.compat
def test_converter_tool_converts_v2(tmp_path):
    from .conftest import assert_matches_official, run_tool
    torch.manual_seed(0)
    official = OfficialPVTv2().perturb_norms_().eval()
    src, out = tmp_path / 'pvt_v2_b0.pth', tmp_path / 'converted.pth'
    torch.save({'model': official.state_dict()}, src)
    run_tool(['tools/model_converters/pvt_official_to_mm.py', src, out])
    state = torch.load(out, weights_only=True)['state_dict']
    assert 'stages.0.layers.0.mlp.dwconv.weight' in state and 'stages.2.norm.weight' in state
    model = PVTv2(arch='b0', init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    model.init_weights()
    assert_matches_official(model, official, torch.randn(1, 3, 45, 61))


def test_attention_maps_of_linear_sra():
    """pyramid() on b2_li: 7x7 key grids (the pool), each query's weights sum to one, and
    the captured maps are the backbone's own (normalised) outputs."""
    from pvt_mm.models.attention_maps import pyramid
    torch.manual_seed(0)
    model = PVTv2(arch='b2_li').eval()
    model.init_weights()
    img = torch.randn(1, 3, 61, 93)
    stages = pyramid(model, img, query_xy=(10.0, 20.0))
    with torch.no_grad():
        outs = model(img)
    for info, out in zip(stages, outs, strict=True):
        assert info['attention'].shape == (7, 7)
        assert info['attention'].sum() == pytest.approx(1.0, abs=1e-4)
        torch.testing.assert_close(torch.from_numpy(info['feature']), out[0])
