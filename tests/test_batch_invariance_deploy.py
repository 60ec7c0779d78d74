"""Batch invariance in the exported RetinaNet (issue 27): the masks of
:mod:`pvt_mm.models.batch_invariance` with the valid sizes as a ``(B, 2)`` tensor, as the
graph (:class:`pvt_mm.deploy.retinanet.RetinaNetGraph`) runs them, equal the eager ones.

The end-to-end proof on a trained file (a mixed-size batch of two equals each image alone)
is ``test_retinanet_onnx_mixed_batch_equals_each_image_alone`` in tests/test_deploy.py.
"""
import pytest
import torch
import torch.nn.functional as F

from pvt_mm.models import padding
from pvt_mm.models.batch_invariance import (MaskedGN, fill_outside, padded_batch,
                                            replicate_outside, zero_outside)

BATCH_HW = (320, 416)
SIZES = ((256, 320), (320, 416), (96, 32))


def _tensor_sizes():
    return torch.tensor(SIZES, dtype=torch.long)


@pytest.mark.parametrize('stride', [1, 4, 8, 16, 32, 64, 128])
def test_traced_cells_equal_map_stride(stride):
    """The tensor search for a map's stride finds what :func:`map_stride` finds (ceil maps;
    also a batch side that is no multiple of the stride)."""
    for batch_hw in (BATCH_HW, (203, 277)):
        hw = (-(-batch_hw[0] // stride), -(-batch_hw[1] // stride))
        expected = padding.region_cells(SIZES, padding.map_stride(hw, batch_hw))
        assert torch.equal(padding.traced_region_cells(_tensor_sizes(), hw, batch_hw), expected)


@pytest.mark.parametrize('stride', [4, 8, 32])
def test_tensor_sizes_mask_as_lists_do(stride):
    """zero_outside / fill_outside / replicate_outside with tensor sizes equal the list path
    bit for bit."""
    x = torch.randn(3, 5, -(-BATCH_HW[0] // stride), -(-BATCH_HW[1] // stride))
    outs = {}
    for key, sizes in (('list', SIZES), ('tensor', _tensor_sizes())):
        with padded_batch(sizes, BATCH_HW):
            outs[key] = (zero_outside(x), fill_outside(x, -1e4), replicate_outside(x))
    for a, b in zip(outs['list'], outs['tensor']):
        assert torch.equal(a, b)


def test_masked_gn_with_tensor_sizes_equals_group_norm_alone():
    """MaskedGN's traced path (masked sums) equals ``F.group_norm`` of each image's region
    alone within 1e-5 relative, and zero outside."""
    torch.manual_seed(0)
    layer = MaskedGN(16, num_groups=4).eval()
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    stride = 8
    x = torch.randn(3, 16, BATCH_HW[0] // stride, BATCH_HW[1] // stride) * 3 + 1
    with torch.no_grad(), padded_batch(_tensor_sizes(), BATCH_HW):
        out = layer(x)
    with torch.no_grad():
        for index, (h, w) in enumerate(SIZES):
            ch, cw = -(-h // stride), -(-w // stride)
            alone = F.group_norm(x[index:index + 1, :, :ch, :cw], 4, layer.weight, layer.bias,
                                 layer.eps)
            got = out[index:index + 1, :, :ch, :cw]
            assert ((got - alone).abs().max() / alone.abs().max()).item() < 1e-5
            assert out[index].abs().sum().item() == pytest.approx(got.abs().sum().item())
