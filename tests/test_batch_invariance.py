"""Batch invariance of the backbone (issue 27): an image in a padded batch of mixed sizes gets
the stage maps it gets alone, padded only to its own size (rounded up to 32).

Every preset of the arch table is checked with its real fields and one layer per stage
(depth changes no code path). "Alone" is the image zero-padded to its own multiple of 32, as
a data preprocessor pads a batch of one; "in a batch" is the same image at the top left of a
batch padded to the largest image. The old behaviour (``batch_invariant=False``) is checked
to differ, so these tests can fail.
"""
from typing import List, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F

from pvt_mm import PVT, PVTv2
from pvt_mm.models import kernels
from pvt_mm.models.backbones import archs
from pvt_mm.models.backbones import pvt as pvt_module
from pvt_mm.models.padding import (batch_valid_sizes, own_padded_size,
                                   region_adaptive_avg_pool2d, region_cells)

ALL = archs.names()
#: Two images of different shapes: the batch is padded to 160x128, each image only in one
#: direction (rows for the first, columns for the second).
SIZES = ((96, 128), (160, 96))
TOL = 1e-5


def build(arch: str, **kwargs) -> PVT:
    """``arch``'s fields with one layer per stage, from scratch, no stochastic layers."""
    row = archs.arch_row(arch)
    cls = PVT if row.version == 'v1' else PVTv2
    kwargs.setdefault('drop_path_rate', 0.0)
    torch.manual_seed(0)
    model = cls(arch=dict(row.fields, depths=(1,) * len(row.fields['depths'])), **kwargs)
    model.init_weights()
    return model


def images(shapes: Sequence[Tuple[int, int]], seed: int = 1) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, h, w, generator=generator) for h, w in shapes]


def pad_to(image: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    return F.pad(image, (0, hw[1] - image.shape[3], 0, hw[0] - image.shape[2]))


def batch_of(imgs: List[torch.Tensor]) -> torch.Tensor:
    """The images zero-padded to the largest (rounded up to 32) and stacked."""
    hw = own_padded_size((max(i.shape[2] for i in imgs), max(i.shape[3] for i in imgs)))
    return torch.cat([pad_to(i, hw) for i in imgs])


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest magnitude of the reference ``b``."""
    return ((a - b).abs().max() / b.abs().max()).item()


def alone_vs_batch(model: PVT, imgs: List[torch.Tensor], **forward) -> List[List[float]]:
    """Per image, per stage: how far its valid region in the batch is from it alone."""
    outs = model(batch_of(imgs), img_shapes=[i.shape[2:] for i in imgs], **forward)
    diffs = []
    for index, image in enumerate(imgs):
        alone = model(pad_to(image, own_padded_size(image.shape[2:])))
        # maps: the image's valid region; a class token (v1 classification): itself
        diffs.append([rel_diff(out[index:index + 1, :, :ref.shape[2], :ref.shape[3]]
                               if ref.dim() == 4 else out[index:index + 1], ref)
                      for out, ref in zip(outs, alone)])
    return diffs


@pytest.mark.parametrize('arch', ALL)
def test_an_image_in_a_mixed_batch_gets_its_features_alone(arch):
    model = build(arch).eval()
    with torch.no_grad():
        diffs = alone_vs_batch(model, images(SIZES))
    assert max(map(max, diffs)) < TOL, diffs


@pytest.mark.parametrize('arch', ALL)
def test_invariant_in_train_mode(arch):
    """Train mode with autograd: the attention runs in query groups (each with its image's
    key mask) and v1's FFN through the fused training function."""
    model = build(arch).train()
    diffs = alone_vs_batch(model, images(SIZES))
    assert max(map(max, diffs)) < TOL, diffs


@pytest.mark.parametrize('arch', ALL)
def test_the_old_behaviour_is_not_invariant(arch):
    """``batch_invariant=False`` (and no sizes) is today's backbone: the padding leaks in."""
    model = build(arch, batch_invariant=False).eval()
    with torch.no_grad():
        diffs = alone_vs_batch(model, images(SIZES))
    assert min(max(d) for d in diffs) > 1e-3, diffs


@pytest.mark.parametrize('arch', ['small', 'b2', 'b2_li'])
def test_image_shapes_before_rounding(arch):
    """mmdet's ``img_shape`` (not a multiple of 32) is rounded up to the image's own
    padded size, as a batch of one pads it."""
    model = build(arch).eval()
    with torch.no_grad():
        diffs = alone_vs_batch(model, images(((90, 120), (150, 70))))
    assert max(map(max, diffs)) < TOL, diffs


@pytest.mark.parametrize('arch', ['small', 'b2'])
def test_no_padding_is_the_plain_path_bit_for_bit(arch, monkeypatch):
    """Sizes that fill the batch (batch 1, or equal images) change nothing, bit for bit:
    the plain path runs (no region is ever built)."""
    def no_region(*args, **kwargs):
        raise AssertionError('a region was built for a batch without padding')

    model = build(arch).eval()
    monkeypatch.setattr(pvt_module, 'TokenRegion', no_region)
    plain = build(arch, batch_invariant=False).eval()
    x1 = images(((128, 160),))[0]
    x2 = torch.cat(images(((96, 128), (96, 128))))
    with torch.no_grad():
        for x, shapes in ((x1, [(128, 160)]), (x1, [(120, 150)]), (x2, [(96, 128), (90, 100)])):
            want = plain(x)
            for got in (model(x), model(x, img_shapes=shapes)):
                assert all(torch.equal(a, b) for a, b in zip(got, want))
            with batch_valid_sizes(shapes):
                assert all(torch.equal(a, b) for a, b in zip(model(x), want))


@pytest.mark.parametrize('arch', ['small', 'b2'])
def test_sizes_from_the_context_and_as_a_tensor(arch):
    """The sizes set around the forward (the mmdet / mmseg data path) equal the explicit
    argument; a ``(B, 2)`` tensor (the exported graph's input) agrees with a list."""
    model = build(arch).eval()
    x = batch_of(images(SIZES))
    with torch.no_grad():
        want = model(x, img_shapes=list(SIZES))
        with batch_valid_sizes(SIZES):
            assert all(torch.equal(a, b) for a, b in zip(model(x), want))
        got = model(x, img_shapes=torch.tensor(SIZES))
    assert max(rel_diff(a, b) for a, b in zip(got, want)) < TOL


@pytest.mark.parametrize('arch', ['small', 'b2', 'b2_li'])
def test_maps_are_zero_outside_each_image(arch):
    model = build(arch).eval()
    with torch.no_grad():
        outs = model(batch_of(images(SIZES)), img_shapes=list(SIZES))
    for out, stride in zip(outs, model.strides):
        for index, (h, w) in enumerate(SIZES):
            outside = torch.ones(out.shape[2:], dtype=torch.bool)
            outside[:h // stride, :w // stride] = False
            assert out[index, :, ~outside].abs().min() > 0
            assert not out[index, :, outside].any()


def test_class_token_sees_only_its_image():
    """v1 classification mode: the class token (always a valid key) of an image in a mixed
    batch is the one it gets alone."""
    model = build('tiny', with_cls_token=True).eval()
    with torch.no_grad():
        diffs = alone_vs_batch(model, images(SIZES))
    assert max(map(max, diffs)) < TOL, diffs


def test_activation_checkpointing_keeps_the_masks():
    model = build('b2', with_cp=True).train()
    diffs = alone_vs_batch(model, images(SIZES))
    assert max(map(max, diffs)) < TOL, diffs


def test_batch_invariance_is_on_by_default():
    assert build('b0').batch_invariant is True
    assert build('b0', batch_invariant=False).batch_invariant is False


def test_a_size_per_image_is_required():
    model = build('b0').eval()
    with pytest.raises(ValueError, match='2 image sizes for a batch of 1'):
        model(torch.zeros(1, 3, 64, 64), img_shapes=[(64, 64), (32, 32)])


@pytest.mark.parametrize('cells', [(7, 9), (3, 2), (1, 1), (16, 12)])
def test_region_pooling_is_adaptive_pooling_of_the_crop(cells):
    x = torch.randn(2, 4, 16, 12)
    got = region_adaptive_avg_pool2d(x, torch.tensor([cells, (16, 12)]), 7)
    want0 = F.adaptive_avg_pool2d(x[:1, :, :cells[0], :cells[1]], 7)
    torch.testing.assert_close(got[:1], want0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1:], F.adaptive_avg_pool2d(x[1:], 7), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('groups', [1, 4])
def test_grouped_masked_attention_is_attention_over_each_images_keys(groups):
    b, n, m, heads, d = 2, 32, 10, 2, 8
    q, k, v = torch.randn(b, n, heads, d), torch.randn(b, m, heads, d), torch.randn(b, m, heads, d)
    keep = torch.ones(b, m, dtype=torch.bool)
    keep[0, 6:] = False
    out = kernels.grouped_attention(q, k, v, groups, key_mask=keep[:, None, None])
    for i in range(b):
        want = F.scaled_dot_product_attention(
            q[i:i + 1].transpose(1, 2), k[i:i + 1, keep[i]].transpose(1, 2),
            v[i:i + 1, keep[i]].transpose(1, 2)).transpose(1, 2).reshape(1, n, heads * d)
        torch.testing.assert_close(out[i:i + 1], want, rtol=1e-5, atol=1e-6)


def test_region_cells_round_up():
    assert region_cells([(96, 128), (100, 33)], 32).tolist() == [[3, 4], [4, 2]]


# --------------------------------------------------------------------------- GPU
def _sdpa_ops(fn) -> List[str]:
    """The aten SDPA ops ``fn`` ran (which kernel served the attention)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sorted({e.key for e in prof.key_averages() if 'scaled_dot_product' in e.key})


@pytest.mark.parametrize('device, dtype', [
    ('cpu', torch.float32),
    pytest.param('cuda', torch.float32, marks=pytest.mark.cuda),
    pytest.param('cuda', torch.float16, marks=pytest.mark.cuda)])
def test_masked_attention_stays_fused(device, dtype):
    """The key mask keeps a fused kernel (CPU flash attention; a CUDA memory-efficient,
    flash or cuDNN kernel), not the math fallback: inference and a grouped training step."""
    model = build('small').to(device).train()
    x = batch_of(images(SIZES)).to(device)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        ops_run = _sdpa_ops(lambda: model(x, img_shapes=list(SIZES))[-1].sum().backward())
        with torch.no_grad():
            ops_run += _sdpa_ops(lambda: model.eval()(x, img_shapes=list(SIZES)))
    assert not any('math' in op for op in ops_run), ops_run
    assert any(kernel in op for op in ops_run for kernel in ('efficient', 'flash', 'cudnn')), ops_run
    assert any('backward' in op for op in ops_run), ops_run


@pytest.mark.cuda
@pytest.mark.parametrize('arch', ['small', 'b2', 'b2_li'])
def test_cuda_an_image_in_a_mixed_batch_gets_its_features_alone(arch):
    model = build(arch).cuda().eval()
    imgs = [i.cuda() for i in images(SIZES)]
    with torch.no_grad():
        diffs = alone_vs_batch(model, imgs)
    assert max(map(max, diffs)) < 1e-4, diffs  # TF32 / kernel choice may differ per shape


@pytest.mark.parametrize('sr_ratio, linear', [(2, False), (1, False), (1, True)])
def test_explicit_attention_weights_follow_the_region(sr_ratio, linear):
    """attention_maps.sra_attention (the maps the tools draw) gives the layer's own output
    in a padded batch: the same key mask / region pooling."""
    from pvt_mm.models.attention_maps import sra_attention
    from pvt_mm.models.layers import SpatialReductionAttention, TokenRegion
    torch.manual_seed(0)
    attn = SpatialReductionAttention(16, 2, sr_ratio, linear=linear).eval()
    hw = (8, 6)
    region = TokenRegion([(16, 24), (32, 16)], hw, 4, 0, torch.device('cpu'))
    x = torch.randn(2, 48, 16)
    with torch.no_grad():
        weights, v, _ = sra_attention(attn, x, hw, 0, region)
        explicit = attn.proj((weights @ v).transpose(1, 2).reshape(2, 48, 16))
        torch.testing.assert_close(explicit, attn(x, hw, 0, region), rtol=1e-5, atol=1e-6)
