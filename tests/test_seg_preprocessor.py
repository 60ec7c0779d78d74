"""PaddedSegDataPreProcessor: mmseg's segmentation data preprocessor, except that a test batch
of mixed sizes is padded (bottom / right, each image as it is alone) instead of refused."""
import pytest
import torch

pytest.importorskip('mmseg')
from mmseg.models import SegDataPreProcessor  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402

import pvt_mm  # noqa: E402,F401  (registers the preprocessor)
from pvt_mm.models.seg_preprocessor import PaddedSegDataPreProcessor  # noqa: E402

pytestmark = pytest.mark.compat

# Semantic FPN's settings (mmseg's fpn_r50.py and configs/_base_/models/fpn_pvt.py).
SETTINGS = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                pad_val=0, seg_pad_val=255, size=(64, 64))


def _batch(sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, h, w), generator=generator))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _both(**settings):
    return (SegDataPreProcessor(**dict(SETTINGS, **settings)),
            PaddedSegDataPreProcessor(**dict(SETTINGS, **settings)))


def test_is_registered_in_mmseg():
    from mmseg.registry import MODELS
    assert MODELS.get('PaddedSegDataPreProcessor') is PaddedSegDataPreProcessor


@pytest.mark.parametrize('test_cfg', [None, dict(size_divisor=32)])
@pytest.mark.parametrize('training', [False, True])
def test_one_size_batch_and_training_are_mmsegs_bit_for_bit(training, test_cfg):
    sizes = [(40, 56), (40, 56)] if not training else [(40, 56), (48, 32)]
    theirs, ours = _both(test_cfg=test_cfg)
    a, b = theirs(_batch(sizes), training), ours(_batch(sizes), training)
    assert torch.equal(a['inputs'], b['inputs'])
    for x, y in zip(a['data_samples'], b['data_samples']):
        assert x.metainfo.keys() == y.metainfo.keys()
        assert all(str(x.metainfo[k]) == str(y.metainfo[k]) for k in x.metainfo)
        assert torch.equal(x.gt_sem_seg.data, y.gt_sem_seg.data)


@pytest.mark.parametrize('test_cfg', [None, dict(size_divisor=32)])
def test_mixed_test_batch_is_each_image_alone_padded_bottom_right(test_cfg):
    sizes = [(40, 56), (64, 32), (33, 70)]
    theirs, ours = _both(test_cfg=test_cfg)
    with pytest.raises(AssertionError, match='The image size in a batch should be the same'):
        theirs(_batch(sizes), False)  # what mmseg does (the reason for this class)
    out = ours(_batch(sizes), False)
    divisor = 32 if test_cfg else 1
    batch_hw = tuple(-(-max(s[i] for s in sizes) // divisor) * divisor for i in (0, 1))
    assert out['inputs'].shape == (3, 3, *batch_hw)
    for i, (h, w) in enumerate(sizes):
        alone = theirs(_single(sizes, i), False)
        own = alone['inputs'][0]  # what test_dataloader.batch_size=1 gives
        oh, ow = own.shape[-2:]
        assert torch.equal(out['inputs'][i, :, :oh, :ow], own)  # at the origin
        assert not out['inputs'][i, :, oh:].any() and not out['inputs'][i, :, :, ow:].any()
        meta = out['data_samples'][i].metainfo
        assert tuple(meta['pad_shape']) == batch_hw
        assert tuple(meta['img_padding_size']) == (0, batch_hw[1] - w, 0, batch_hw[0] - h)
        assert tuple(meta['img_shape']) == (h, w)  # the pipeline's, for the hook
        assert out['data_samples'][i].gt_sem_seg.shape == (h, w)  # the metric's, unpadded


def _single(sizes, i):
    """Image ``i`` of ``_batch(sizes)`` alone (the same random draws)."""
    batch = _batch(sizes)
    return dict(inputs=batch['inputs'][i:i + 1], data_samples=batch['data_samples'][i:i + 1])


def test_postprocess_crops_the_padding_off():
    """mmseg's BaseSegmentor.postprocess_result reads the recorded padding: each image's logits
    come back at its own size, its valid region only."""
    from mmseg.models.segmentors.base import BaseSegmentor
    sizes = [(40, 56), (64, 32)]
    out = PaddedSegDataPreProcessor(**SETTINGS)(_batch(sizes), False)
    logits = torch.zeros(2, 2, 64, 56)
    logits[:, 1, :40, :32] = 1.0  # class 1 inside both images' common corner
    segmentor = type('S', (), {'align_corners': False})()
    results = BaseSegmentor.postprocess_result(segmentor, logits, out['data_samples'])
    for (h, w), result in zip(sizes, results):
        pred = result.pred_sem_seg.data[0]
        assert pred.shape == (h, w) and pred[:40, :32].eq(1).all()
        assert pred.sum() == 40 * 32


def test_refuses_a_fixed_test_size_that_an_image_exceeds():
    ours = PaddedSegDataPreProcessor(**dict(SETTINGS, test_cfg=dict(size=(48, 48))))
    out = ours(_batch([(40, 40), (32, 48)]), False)  # both fit: both padded to 48x48, as alone
    assert out['inputs'].shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match=r'fixed size=\(48, 48\).*size_divisor'):
        ours(_batch([(40, 40), (64, 32)]), False)


def test_batch_invariance_refuses_slide_inference_over_a_padded_batch():
    from pvt_mm.models.batch_invariance import BatchInvariance

    class Slider(torch.nn.Module):
        test_cfg = dict(mode='slide')
        data_preprocessor = PaddedSegDataPreProcessor(**SETTINGS)

        def forward(self, inputs, data_samples=None):
            return inputs

    model = Slider().eval()
    installed = BatchInvariance(model, ())
    try:
        batch = model.data_preprocessor(_batch([(64, 64), (32, 64)]), False)
        with pytest.raises(ValueError, match="batch_size=1, or with model.test_cfg.mode='whole'"):
            model(batch['inputs'], batch['data_samples'])
        same = model.data_preprocessor(_batch([(64, 64), (64, 64)]), False)
        model(same['inputs'], same['data_samples'])  # nothing padded: slides as ever
    finally:
        installed.remove()
