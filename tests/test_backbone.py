"""The PVT backbone: presets, shapes at any size, knobs and input errors."""
import pytest
import torch
import torch.nn.functional as F

from pvt_mm import PVT
from pvt_mm.models.backbones.pvt import ARCH_FIELDS, resolve_arch

def _tiny(**kwargs):
    return PVT(arch='tiny', **kwargs).eval()


def test_small_800x1333_pyramid():
    model = PVT(arch='small').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert len(outs) == 4
    assert [o.shape[1] for o in outs] == [64, 128, 320, 512]
    assert [tuple(o.shape[2:]) for o in outs] == [(200, 333), (100, 166), (50, 83), (25, 41)]
    assert model.out_channels == (64, 128, 320, 512)
    assert model.out_strides == (4, 8, 16, 32)


@pytest.mark.parametrize('size,expected', [
    ((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ((512, 512), [(128, 128), (64, 64), (32, 32), (16, 16)]),
    # Not a multiple of the patch size: every patch embedding floors its remainder.
    ((401, 599), [(100, 149), (50, 74), (25, 37), (12, 18)]),
    ((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
])
def test_any_input_size(size, expected):
    model = PVT(arch='small').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[2:]) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_position_embedding_is_interpolated_bilinearly():
    model = _tiny()
    stage = model.stages[0]
    with torch.no_grad():
        stage.pos_embed.normal_()
    assert stage.resized_pos_embed((56, 56)) is stage.pos_embed
    resized = stage.resized_pos_embed((30, 70))
    grid = stage.pos_embed.reshape(1, 56, 56, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(30, 70), mode='bilinear', align_corners=False)
    torch.testing.assert_close(resized, expected.flatten(2).transpose(1, 2))


def test_out_indices_select_stages():
    model = PVT(arch='tiny', out_indices=(1, 3)).eval()
    outs = model(torch.randn(2, 3, 64, 96))
    assert [o.shape for o in outs] == [torch.Size([2, 128, 8, 12]), torch.Size([2, 512, 2, 3])]
    assert model.out_channels == (128, 512) and model.out_strides == (8, 32)


def test_custom_arch_overrides_fields():
    model = PVT(arch=dict(depths=(1, 1, 1, 1), embed_dims=(32, 64, 96, 128), num_heads=(1, 2, 3, 4)))
    assert model.arch['sr_ratios'] == (8, 4, 2, 1)  # Table 1 default kept
    assert model.out_channels == (32, 64, 96, 128)
    assert [len(s.layers) for s in model.stages] == [1, 1, 1, 1]
    three = PVT(arch=dict(depths=(1, 1, 1), patch_sizes=(4, 2, 2), embed_dims=(16, 32, 64),
                          sr_ratios=(4, 2, 1), num_heads=(1, 1, 2), mlp_ratios=(2, 2, 2)),
                out_indices=(0, 1, 2))
    assert three.strides == (4, 8, 16)
    assert len(three(torch.randn(1, 3, 48, 48))) == 3


def test_unknown_arch_lists_valid_names():
    with pytest.raises(KeyError, match="'tiny', 'small'|large.*medium.*small.*tiny"):
        PVT(arch='huge')


@pytest.mark.parametrize('arch,error,match', [
    (dict(depths=(2, 2, 2)), ValueError, 'must give "patch_sizes" explicitly'),
    (dict(depths=(2, 2, 2, 2), embed_dims=(64, 128, 320)), ValueError, 'embed_dims'),
    (dict(depths=(2, 2, 2, 2), channels=(1, 2, 3, 4)), KeyError, 'valid fields'),
    (dict(embed_dims=(64, 128, 320, 512)), KeyError, 'needs "depths"'),
    (dict(depths=(1, 1, 1, 1), num_heads=(3, 2, 5, 8)), ValueError, 'divisible'),
])
def test_inconsistent_arch_dict(arch, error, match):
    with pytest.raises(error, match=match):
        resolve_arch(arch)


def test_subclass_presets_fill_a_custom_arch():
    """A subclass with its own presets and base: a custom arch dict takes its missing fields
    from that base, not from pvt_mm's ARCH_ZOO (which does not know it)."""
    narrow = dict(resolve_arch('tiny'), embed_dims=(16, 32, 64, 128), num_heads=(1, 1, 2, 4))

    class NarrowPVT(PVT):
        arch_zoo = {'narrow': narrow}
        base_arch = 'narrow'

    model = NarrowPVT(arch=dict(depths=(1, 1, 1, 1)))
    assert model.arch == dict(narrow, depths=(1, 1, 1, 1))
    assert model.out_channels == (16, 32, 64, 128)


def test_arch_fields_cover_table1():
    assert set(resolve_arch('medium')) == set(ARCH_FIELDS)
    assert resolve_arch('large')['depths'] == (3, 8, 27, 3)


@pytest.mark.parametrize('bad,match', [
    (torch.randn(1, 1, 64, 64), 'built for 3 input channels but got 1'),
    (torch.randn(1, 3, 31, 64), 'too small: this PVT needs at least 32x32 pixels'),
    (torch.randn(1, 3, 64, 16), 'too small: this PVT needs at least 32x32 pixels'),
    (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), 'floating-point'),
    (torch.randn(3, 64, 64), 'NCHW'),
    (torch.randn(0, 3, 64, 64), 'empty batch'),
    (torch.full((1, 3, 64, 64), float('nan')), 'NaN or Inf'),
    (torch.tensor([1.0, float('inf')]).repeat(1, 3, 32, 16), 'NaN or Inf'),
])
def test_bad_input_is_a_clear_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        _tiny()(bad)


@pytest.mark.parametrize('kwargs,match', [
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(out_indices=(2, 1)), 'ascending'),
    (dict(out_indices=()), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages=5'),
    (dict(frozen_stages=-2), 'frozen_stages=-2'),
    (dict(ffn_chunk_tokens=0), 'chunk_tokens must be a positive int or None'),
])
def test_bad_input_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PVT(arch='tiny', **kwargs)


def test_ffn_chunking_is_a_user_knob_that_keeps_outputs():
    torch.manual_seed(0)
    whole = PVT(arch='tiny', ffn_chunk_tokens=None).eval()
    chunked = PVT(arch='tiny', ffn_chunk_tokens=1000).eval()
    chunked.load_state_dict(whole.state_dict())
    assert {layer.mlp.chunk_tokens for stage in chunked.stages for layer in stage.layers} == {1000}
    x = torch.randn(1, 3, 160, 224)  # stage 1: 2240 tokens, three chunks
    with torch.no_grad():
        for a, b in zip(chunked(x), whole(x), strict=True):
            torch.testing.assert_close(a, b)


def test_drop_path_rates_follow_the_linear_rule():
    model = PVT(arch='small', drop_path_rate=0.3)
    rates = [layer.drop_path.drop_prob if hasattr(layer.drop_path, 'drop_prob') else 0.0
             for stage in model.stages for layer in stage.layers]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 16))


def test_classification_mode_returns_class_token():
    model = PVT(arch='tiny', with_cls_token=True).eval()
    outs = model(torch.randn(2, 3, 224, 224))
    assert len(outs) == 4 and outs[-1].shape == (2, 512)
    assert model.stages[3].pos_embed.shape == (1, 50, 512)
    assert outs[0].shape == (2, 64, 56, 56)


def test_attention_goes_through_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    _tiny()(torch.randn(1, 3, 64, 64))
    assert len(calls) == 8  # one per encoder layer of PVT-Tiny


def test_init_weights_from_scratch_is_reasonable():
    model = _tiny()
    model.init_weights()
    assert model.stages[0].pos_embed.std() > 0.01
    assert model.stages[0].layers[0].norm1.weight.eq(1).all()
    assert model.stages[0].layers[0].attn.q.bias.eq(0).all()


def test_attention_maps_come_from_the_models_own_forward():
    """pyramid() hooks the real forward: its maps are the backbone's outputs (class-token
    mode too), and each query's attention over the reduced keys sums to one."""
    from pvt_mm.models.attention_maps import pyramid
    torch.manual_seed(0)
    model = PVT(arch='tiny', with_cls_token=True).eval()
    model.init_weights()
    img = torch.randn(1, 3, 64, 96)
    stages = pyramid(model, img, query_xy=(10.0, 20.0), layer=-1)
    with torch.no_grad():
        outs = model(img)
    for info, out in zip(stages[:3], outs[:3], strict=True):
        torch.testing.assert_close(torch.from_numpy(info['feature']), out[0])
    assert stages[3]['feature'].shape == (512, 2, 3)  # the map behind the class token
    for info in stages:  # keys: 64x96 / stride / R = 2x3 in every stage
        assert info['attention'].shape == (2, 3) and info['layer'] == 1
    for info in stages[:3]:
        assert info['attention'].sum() == pytest.approx(1.0, abs=1e-4)
    assert 0 < stages[3]['attention'].sum() < 1  # the class token takes the rest
    with pytest.raises(ValueError, match='layer 2 is out of range for stage 1'):
        pyramid(model, img, (1.0, 1.0), layer=2)
