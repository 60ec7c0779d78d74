"""Batch invariance outside the backbone (issue 27): the valid sizes reach a real detector's
forward through the config's ``BatchInvariantHook``, and the neck and head compute for each
image of a padded batch what they compute for it alone.

The backbone's own padding-awareness is tested with the backbone; here the neck and head are
checked on their own: fed backbone features that are invariant by construction (each image's
features computed alone, placed into a zero-padded batch), they must give each image its own
maps and detections.
"""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pvt_mm.models import padding
from pvt_mm.models.batch_invariance import (MaskedGN, enable_batch_invariance, padded_batch,
                                            replicate_outside, zero_outside)

from .conftest import SEG_TINY_CONFIG, build_from_config

MAIN_JOB = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
# Two images of their own sizes (already multiples of 32, as their own padding makes them)
# in a batch padded to the larger: 256x320 sits in 320x416.
BATCH_HW = (320, 416)
SIZES = ((320, 416), (256, 320))


def _gn_pair(channels=16, groups=4):
    torch.manual_seed(0)
    masked = MaskedGN(channels, num_groups=groups)
    nn.init.normal_(masked.weight)
    nn.init.normal_(masked.bias)
    plain = nn.GroupNorm(groups, channels)
    plain.load_state_dict(masked.state_dict())
    return masked, plain


def test_masked_gn_is_group_norm_bit_for_bit_when_nothing_is_padded():
    masked, plain = _gn_pair()
    x = torch.randn(2, 16, 40, 52) * 3 + 1
    assert torch.equal(masked(x), plain(x))  # no batch in flight
    with padded_batch([BATCH_HW, BATCH_HW], BATCH_HW):  # a batch of images that fill it
        assert torch.equal(masked(x), plain(x))
    with padded_batch([(288, 416)], (288, 416)):  # batch 1
        assert torch.equal(masked(x[:1]), plain(x[:1]))


def test_masked_gn_normalises_each_region_as_the_image_alone():
    masked, plain = _gn_pair()
    stride = 8
    x = torch.randn(2, 16, BATCH_HW[0] // stride, BATCH_HW[1] // stride)
    x[1, :, 32:, :] = 100.0  # the padding: must change nothing
    with padded_batch(SIZES, BATCH_HW):
        out = masked(x)
    for i, (h, w) in enumerate(SIZES):
        ch, cw = math.ceil(h / stride), math.ceil(w / stride)
        alone = plain(x[i:i + 1, :, :ch, :cw].contiguous())
        assert torch.equal(out[i:i + 1, :, :ch, :cw], alone)
        assert not out[i, :, ch:].any() and not out[i, :, :, cw:].any()
    # nn.GroupNorm's statistics over the padded map differ: what MaskedGN exists for.
    assert not torch.allclose(plain(x)[1, :, :32, :40], out[1, :, :32, :40], atol=1e-3)


@pytest.mark.compat
def test_masked_gn_builds_from_norm_cfg_and_loads_group_norm_weights():
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import init_default_scope
    import pvt_mm  # noqa: F401  (registers MaskedGN)
    init_default_scope('mmdet')
    name, layer = build_norm_layer(dict(type='MaskedGN', num_groups=8, requires_grad=True), 32)
    gn_name, gn = build_norm_layer(dict(type='GN', num_groups=8, requires_grad=True), 32)
    assert isinstance(layer, MaskedGN) and name == gn_name == 'gn'
    assert (layer.num_groups, layer.num_channels) == (gn.num_groups, gn.num_channels)
    layer.load_state_dict(gn.state_dict(), strict=True)


def test_helpers_zero_and_replicate_the_padding():
    x = torch.arange(2 * 4 * 6, dtype=torch.float).view(2, 1, 4, 6)
    with padded_batch(((128, 192), (64, 96)), (128, 192)):  # a stride-32 map
        zeroed, replicated = zero_outside(x), replicate_outside(x)
    assert torch.equal(zeroed[0], x[0]) and torch.equal(replicated[0], x[0])
    assert torch.equal(zeroed[1, :, :2, :3], x[1, :, :2, :3])
    assert zeroed[1].sum() == x[1, :, :2, :3].sum()
    assert torch.equal(replicated[1, 0, 3], replicated[1, 0, 1])  # rows past 2 repeat row 1
    assert torch.equal(replicated[1, 0, :, 5], replicated[1, 0, :, 2])


def test_stride_of_a_map_that_has_none_says_what_to_do():
    with pytest.raises(ValueError, match='mask_modules'):
        padding.map_stride((7, 9), (320, 416))


# --- a real RetinaNet (the main job's config) ----------------------------------------------

@pytest.fixture(scope='module')
def detector():
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    import pvt_mm  # noqa: F401
    cfg = Config.fromfile(MAIN_JOB)
    assert dict(type='BatchInvariantHook') in cfg.custom_hooks
    assert cfg.model.bbox_head.norm_cfg.type == 'MaskedGN'
    # Random weights give every anchor the prior's score (0.01, under score_thr): spread
    # class logits give detections to compare. Below 0 (scores ~0.12), so that a padding
    # cell's zero logit (score 0.5) would outrank the image's own anchors.
    cfg.model.test_cfg.score_thr = 0.0
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    nn.init.normal_(model.bbox_head.retina_cls.bias, mean=-2.0, std=0.5)
    return model.eval()


def _data(sizes, with_boxes=True):
    """A data batch as mmdet's dataloader gives it (uint8 images of their own sizes)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    torch.manual_seed(1)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        if with_boxes:
            sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 60., 70.]]),
                                               labels=torch.tensor([1]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _install(model):
    """What the config's hook does at before_run."""
    from mmengine.registry import HOOKS
    hook = HOOKS.build(dict(type='BatchInvariantHook'))
    runner = SimpleNamespace(model=model)
    hook.before_run(runner)
    return hook, runner


@pytest.mark.compat  # hooks with kwargs and always_call: torch 2.1 too
def test_hook_carries_the_sizes_into_loss_and_predict_and_resets_them(detector):
    from mmengine.optim import OptimWrapper
    hook, runner = _install(detector)
    seen = []
    capture = detector.backbone.register_forward_hook(
        lambda m, a, o: seen.append((padding.current_valid_sizes(),
                                     padding.current_batch_input_size())))
    try:
        data = _data([(300, 400), (250, 300)])
        detector.train()
        optim = OptimWrapper(torch.optim.SGD(detector.parameters(), lr=0.0))
        losses = detector.train_step(data, optim)
        assert all(torch.isfinite(v).all() for v in losses.values())
        detector.eval()
        with torch.no_grad():
            detector.val_step(_data([(300, 400), (250, 300)]))
        # img_shape rounded up to the 32 pad divisor; the batch is padded to 320x416.
        assert seen == [(SIZES, BATCH_HW)] * 2
        assert padding.current_valid_sizes() is None
        assert padding.current_batch_input_size() is None

        # A forward without data samples keeps what its caller set (here: explicitly).
        seen.clear()
        with torch.no_grad(), padded_batch(SIZES, BATCH_HW):
            detector(torch.zeros(2, 3, *BATCH_HW), mode='tensor')
        assert seen == [(SIZES, BATCH_HW)]

        # Left also when the forward raises.
        def fail(*args):
            raise RuntimeError('boom')
        failing = detector.neck.register_forward_hook(fail)
        with pytest.raises(RuntimeError, match='boom'), torch.no_grad():
            detector.val_step(_data([(300, 400), (250, 300)]))
        failing.remove()
        assert padding.current_valid_sizes() is None
    finally:
        capture.remove()
        hook.after_run(runner)
    # Removed at after_run: the forward no longer sets anything.
    seen.clear()
    capture = detector.backbone.register_forward_hook(
        lambda m, a, o: seen.append(padding.current_valid_sizes()))
    with torch.no_grad():
        detector.val_step(_data([(300, 400), (250, 300)]))
    capture.remove()
    assert seen == [None]


def test_hook_acts_inside_mmengines_ddp_wrapper():
    """MMDistributedDataParallel (one gloo process): the hook goes on the inner model, which
    the wrapper's train_step and val_step call."""
    import socket
    import torch.distributed as dist
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    from mmengine.registry import HOOKS, init_default_scope
    import pvt_mm  # noqa: F401
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(MAIN_JOB).model)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        wrapper = MMDistributedDataParallel(module=model)
        hook = HOOKS.build(dict(type='BatchInvariantHook'))
        runner = SimpleNamespace(model=wrapper)
        hook.before_run(runner)
        seen = []
        model.backbone.register_forward_hook(
            lambda m, a, o: seen.append(padding.current_valid_sizes()))
        wrapper.train()
        wrapper.train_step(_data([(300, 400), (250, 300)]),
                           OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0)))
        wrapper.eval()
        with torch.no_grad():
            wrapper.val_step(_data([(300, 400), (250, 300)]))
        hook.after_run(runner)
        assert seen == [SIZES, SIZES]
    finally:
        dist.destroy_process_group()


def _alone_and_batched_features(model, sizes, batch_hw):
    """Backbone features of each image alone, and the same placed in a padded batch: what a
    padding-aware backbone gives. The padding holds large values, as an unmasked backbone
    leaves there."""
    torch.manual_seed(2)
    with torch.no_grad():
        alone = [model.backbone(torch.randn(1, 3, h, w)) for h, w in sizes]
    batched = []
    for level, maps in enumerate(zip(*alone)):
        stride = 2 ** (level + 2)  # PVT's stages: strides 4, 8, 16, 32
        full = torch.full((len(sizes), maps[0].shape[1], batch_hw[0] // stride,
                           batch_hw[1] // stride), 50.0)
        for i, m in enumerate(maps):
            full[i, :, :m.shape[-2], :m.shape[-1]] = m[0]
        batched.append(full)
    return alone, tuple(batched)


def _head_results(model, feats, metas):
    with torch.no_grad():
        neck = model.neck(feats)
        outs = model.bbox_head(neck)
        results = model.bbox_head.predict_by_feat(*outs, batch_img_metas=metas, rescale=False)
    return neck, outs, results


@pytest.mark.parametrize('masked', [True, False], ids=['masked', 'unmasked'])
def test_neck_and_head_give_each_image_its_own_maps_and_detections(detector, masked):
    """The end-to-end proof of the neck / head part: invariant features in, invariant maps
    and detections out -- and without the masking, not."""
    sizes = SIZES
    alone, batched = _alone_and_batched_features(detector, sizes, BATCH_HW)
    metas = [dict(img_shape=(h - 7, w - 13), scale_factor=(1.0, 1.0)) for h, w in sizes]
    installed = enable_batch_invariance(detector) if masked else None
    try:
        with padded_batch(sizes, BATCH_HW):
            neck_b, outs_b, results_b = _head_results(detector, batched, metas)
        for i, (h, w) in enumerate(sizes):
            with padded_batch([(h, w)], (h, w)):
                neck_a, outs_a, results_a = _head_results(detector, alone[i], metas[i:i + 1])
            # The image that fills the batch reads no padding either way; the smaller one
            # reads it at its edges unless masked.
            expect = masked or (h, w) == BATCH_HW
            neck_same = []
            for a, b in zip(neck_a, neck_b):
                crop = b[i:i + 1, :, :a.shape[-2], :a.shape[-1]]
                neck_same.append(torch.allclose(crop, a, rtol=1e-5, atol=1e-5 * a.abs().max()))
                if masked:  # zero outside the region
                    assert not b[i, :, a.shape[-2]:].any() and not b[i, :, :, a.shape[-1]:].any()
            assert all(neck_same) == expect
            logits_same = [torch.allclose(b[i:i + 1, :, :a.shape[-2], :a.shape[-1]], a,
                                          rtol=1e-5, atol=1e-4)
                           for a, b in zip(outs_a[0], outs_b[0])]
            assert all(logits_same) == expect
            ra, rb = results_a[0], results_b[i]
            same = (len(ra) == len(rb) and torch.equal(ra.labels, rb.labels)
                    and torch.allclose(ra.bboxes, rb.bboxes, atol=0.01)
                    and torch.allclose(ra.scores, rb.scores, atol=1e-4))
            assert len(ra) > 10
            assert same == expect
    finally:
        if installed is not None:
            installed.remove()


def test_extra_levels_past_the_divisor_stay_exact():
    """RetinaNet's P6 / P7 (stride 64 / 128, from 3x3 stride-2 convs) of an image whose size
    is an odd multiple of 32: its region covers ceil(size / stride) cells, and the masked
    padding is the zero padding the conv reads alone."""
    from mmdet.models.necks import FPN
    torch.manual_seed(3)
    fpn = FPN([8, 16], 8, num_outs=4, start_level=0, add_extra_convs='on_input').eval()
    sizes, batch_hw = ((96, 160), (160, 224)), (160, 224)
    alone = [[torch.randn(1, c, math.ceil(h / s), math.ceil(w / s)) for c, s in ((8, 16), (16, 32))]
             for h, w in sizes]
    batched = []
    for level, (c, s) in enumerate(((8, 16), (16, 32))):
        full = torch.full((2, c, batch_hw[0] // s, batch_hw[1] // s), 7.0)
        for i, maps in enumerate(alone):
            m = maps[level]
            full[i, :, :m.shape[-2], :m.shape[-1]] = m[0]
        batched.append(full)
    model = nn.Module()
    model.neck = fpn
    installed = enable_batch_invariance(model, mask_modules=('neck',))
    try:
        with torch.no_grad(), padded_batch(sizes, batch_hw):
            outs_b = fpn(tuple(batched))
        for i, (h, w) in enumerate(sizes):
            with torch.no_grad(), padded_batch([(h, w)], (h, w)):
                outs_a = fpn(tuple(alone[i]))
            strides = [16, 32, 64, 128]
            for a, b, s in zip(outs_a, outs_b, strides):
                assert a.shape[-2:] == (math.ceil(h / s), math.ceil(w / s))
                crop = b[i:i + 1, :, :a.shape[-2], :a.shape[-1]]
                torch.testing.assert_close(crop, a, rtol=1e-5, atol=1e-6)
    finally:
        installed.remove()


@pytest.mark.compat  # hooks with kwargs and always_call: torch 2.1 too
def test_the_configs_hook_acts_in_a_runners_test(shapes_root, tmp_path):
    """What tools/test.py runs (Runner.from_cfg, runner.test()) on the main job's config,
    with batches of images of different sizes: the backbone sees each image's valid size."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    from pvt_mm.hooks import BatchInvariantHook
    cfg = Config.fromfile(MAIN_JOB)
    cfg.work_dir = str(tmp_path)
    cfg.test_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.data_root = f'{shapes_root}/'
    cfg.test_evaluator.ann_file = f'{shapes_root}/annotations/instances_val2017.json'
    # Each image resized to its own random size, so a batch of two is padded.
    cfg.test_dataloader.dataset.pipeline[1] = dict(type='RandomResize', keep_ratio=True,
                                                   scale=[(120, 90), (320, 256)])
    runner = Runner.from_cfg(cfg)
    assert any(isinstance(h, BatchInvariantHook) for h in runner.hooks)
    seen = []
    runner.model.backbone.register_forward_hook(
        lambda m, a, o: seen.append((padding.current_valid_sizes(), tuple(a[0].shape[-2:]))))
    runner.test()
    assert seen and all(sizes is not None and len(sizes) == 2 for sizes, _ in seen)
    assert any(padding.is_padded(sizes, hw) for sizes, hw in seen)
    assert padding.current_valid_sizes() is None


@pytest.mark.parametrize('masked', [True, False], ids=['masked', 'unmasked'])
def test_semantic_fpn_gives_each_image_its_own_logits(masked):
    """mmseg's FPN + FPNHead (bilinear upsampling inside, and mmseg's bilinear resize of the
    logits to the input after): the edge-replicated maps make each image's logits, resized,
    what they are alone. Through mmseg's own ``decode_head.predict`` (which calls the head's
    ``forward``, past the head's own hooks: the bottom / right rows once differed)."""
    cfg, model = build_from_config(SEG_TINY_CONFIG, with_weights=False)
    model.eval()
    sizes, batch_hw = ((128, 192), (96, 128)), (128, 192)
    alone, batched = _alone_and_batched_features(model, sizes, batch_hw)
    installed = enable_batch_invariance(model) if masked else None

    def logits(feats, hw):
        metas = [dict(img_shape=tuple(hw), pad_shape=tuple(hw))] * feats[0].shape[0]
        with torch.no_grad():  # resized to pad_shape by mmseg's predict_by_feat
            return model.decode_head.predict(model.neck(feats), metas, model.test_cfg)

    try:
        with padded_batch(sizes, batch_hw):
            batch = logits(batched, batch_hw)
        same = []
        for i, (h, w) in enumerate(sizes):
            with padded_batch([(h, w)], (h, w)):
                one = logits(alone[i], (h, w))
            # Relative to the map's largest logit: the same convs on other shapes round
            # differently (~5e-7 of it, either torch).
            same.append(torch.allclose(batch[i:i + 1, :, :h, :w], one, rtol=1e-5,
                                       atol=1e-5 * one.abs().max()))
        assert same == [True, masked]
    finally:
        if installed is not None:
            installed.remove()


@pytest.mark.parametrize('config', ['configs/detr/pvt_small_detr_shapes.py',
                                    'configs/mask_rcnn/pvt_tiny_fpn_shapes.py'])
def test_other_families_train_and_predict_on_mixed_sizes_with_the_hook(config):
    """DETR (its head works on queries: not masked; its preprocessor's divisor is 1) and
    Mask R-CNN (RPN and RoI extractors masked; in training too): the hook's masking must not
    break them."""
    import numpy as np
    from mmdet.structures.mask import BitmapMasks
    from mmengine.optim import OptimWrapper
    _, model = build_from_config(config, with_weights=False)
    installed = enable_batch_invariance(model)
    seen = []
    model.neck.register_forward_hook(lambda m, a, o: seen.append(padding.current_valid_sizes()))
    sizes = [(250, 301), (200, 160)]
    data = _data(sizes)
    for sample, (h, w) in zip(data['data_samples'], sizes):
        masks = np.zeros((1, h, w), np.uint8)
        masks[0, 12:70, 10:60] = 1
        sample.gt_instances.masks = BitmapMasks(masks, h, w)
    try:
        model.train()
        losses = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0)))
        assert all(torch.isfinite(v).all() for v in losses.values())
        model.eval()
        with torch.no_grad():
            results = model.val_step(_data(sizes, with_boxes=False))
        assert len(results) == 2
        divisor = model.data_preprocessor.pad_size_divisor
        assert seen[0] == padding.valid_sizes(sizes, seen[0][0], divisor) and len(seen) == 2
        assert padding.is_padded(seen[0], (256, 320) if divisor == 32 else (250, 301))
    finally:
        installed.remove()


# --- Mask R-CNN: RPN proposals, RoIAlign, bbox and mask heads ------------------------------

MASK_RCNN = 'configs/mask_rcnn/pvt_tiny_fpn_shapes.py'
# One image fills the batch; the smaller two have fewer RPN anchors than the batch per level
# (so the padding's would fill the proposal list) and boxes reaching their last map cells
# (their img_shape is their valid size less a pixel or two).
RCNN_SIZES = ((224, 288), (96, 128), (160, 192))
RCNN_BATCH_HW = (224, 288)


@pytest.fixture(scope='module')
def mask_rcnn():
    torch.manual_seed(0)
    _, model = build_from_config(MASK_RCNN, with_weights=False)
    model.init_weights()
    torch.manual_seed(5)
    # Random weights give every anchor and every RoI nearly the same score; spread them, so
    # that proposals and detections are ranked by the features and not by rounding.
    nn.init.normal_(model.rpn_head.rpn_cls.weight, std=0.1)
    nn.init.normal_(model.roi_head.bbox_head.fc_cls.weight, std=0.05)
    return model.eval()


def _pairing(a, b, atol=0.01):
    """The indices of ``b``'s instances in the order of ``a``'s, each the nearest box of the
    same label, or ``None`` when a box has none within ``atol`` px or the counts differ:
    equal scores (to rounding) may come in either order."""
    if len(a) != len(b):
        return None
    dist = torch.cdist(a.bboxes, b.bboxes, p=float('inf'))
    dist[a.labels[:, None] != b.labels[None, :]] = float('inf')
    nearest = dist.argmin(1) if len(a) else torch.zeros(0, dtype=torch.long)
    if len(a) and (dist.min(1).values > atol).any() or len(set(nearest.tolist())) != len(a):
        return None
    return nearest


def _two_stage_results(model, feats, shapes):
    """mmdet's TwoStageDetector.predict from the backbone's features on: the RPN's proposals,
    the RoI head's detections (boxes and masks, at each image's img_shape) and each image's
    mask logits (the mask head's output for its detections, before pasting and the 0.5
    threshold)."""
    from mmdet.structures import DetDataSample
    samples = [DetDataSample(metainfo=dict(img_shape=s, ori_shape=s, scale_factor=(1.0, 1.0)))
               for s in shapes]
    logits = []
    capture = model.roi_head.mask_head.register_forward_hook(lambda m, a, o: logits.append(o))
    try:
        with torch.no_grad():
            x = model.neck(feats)
            proposals = model.rpn_head.predict(x, samples, rescale=False)
            results = model.roi_head.predict(x, [p.clone() for p in proposals], samples,
                                             rescale=True)
    finally:
        capture.remove()
    (logits,) = logits
    return proposals, results, logits.split([len(r) for r in results])


@pytest.mark.compat  # mmcv 2.1's RoIAlign and mmdet 3.3's heads too
@pytest.mark.parametrize('mask_modules', ['all', 'not_roi_head', 'none'])
def test_mask_rcnn_gives_each_image_its_own_proposals_and_detections(mask_rcnn, mask_modules):
    """Invariant features in, each image's own RPN proposals and Mask R-CNN detections out.

    Two things beyond the neck / RPN maps: the padding's anchors (score 0) must not become
    proposals (the RPN has no score threshold, so they fill a short list), and RoIAlign must
    read, at an image's last cell, what it reads alone (``roi_head`` masked: edge-replicated
    maps). Without the RoI extractors' maps (``not_roi_head``) or without any masking, the
    smaller images' detections differ.
    """
    from pvt_mm.models.batch_invariance import DEFAULT_MASK_MODULES
    model, sizes = mask_rcnn, RCNN_SIZES
    shapes = [(h - 1, w - 2) for h, w in sizes]
    alone, batched = _alone_and_batched_features(model, sizes, RCNN_BATCH_HW)
    modules = dict(all=DEFAULT_MASK_MODULES, none=(),
                   not_roi_head=tuple(m for m in DEFAULT_MASK_MODULES if m != 'roi_head'))
    installed = enable_batch_invariance(model, modules[mask_modules])
    try:
        with padded_batch(sizes, RCNN_BATCH_HW):
            proposals_b, results_b, logits_b = _two_stage_results(model, batched, shapes)
        same = []
        for i, hw in enumerate(sizes):
            with padded_batch([hw], hw):
                proposals_a, results_a, logits_a = _two_stage_results(model, alone[i],
                                                                      shapes[i:i + 1])
            pa, pb = proposals_a[0], proposals_b[i]
            ra, rb = results_a[0], results_b[i]
            assert len(ra) > 10 and ra.masks.any()  # something to compare
            if mask_modules == 'all':  # the same proposals (alone: no score-0 ones)
                assert len(pa) == len(pb) and not (pb.scores == 0).any()
                # As sets (two levels may propose the same box): each box has the other's
                # within 0.01 px, and the scores sorted agree.
                dist = torch.cdist(pa.bboxes, pb.bboxes, p=float('inf'))
                assert dist.min(0).values.max() <= 0.01 and dist.min(1).values.max() <= 0.01
                torch.testing.assert_close(pb.scores.sort().values, pa.scores.sort().values,
                                           rtol=0, atol=1e-4)
            pairs = _pairing(ra, rb)
            if pairs is None:
                same.append(False)
                continue
            rb, mask_logits_b = rb[pairs], logits_b[i][pairs]
            # A mask pixel whose probability is 0.5 to rounding may flip (seen on torch 2.1:
            # one pixel, 127/255 in both soft masks): the mask logits are compared (relative
            # to the largest: boxes 3e-5 px apart sample RoIAlign ~4e-6 of it apart), and the
            # binary masks to a pixel or two.
            same.append(bool(torch.equal(ra.labels, rb.labels)
                        and torch.allclose(ra.scores, rb.scores, rtol=0, atol=1e-4)
                        and torch.allclose(mask_logits_b, logits_a[0], rtol=1e-5,
                                           atol=1e-5 * logits_a[0].abs().max())
                        and (ra.masks != rb.masks).sum() <= 2))
        # The image that fills the batch reads no padding either way.
        assert same[0]
        assert all(same) == (mask_modules == 'all'), same
    finally:
        installed.remove()


@pytest.mark.parametrize('min_bbox_size', [0, -1])
def test_an_rpn_that_keeps_the_paddings_anchors_is_warned_about(min_bbox_size):
    """The padding's anchors are dropped by the RPN's own filter of empty boxes
    (``min_bbox_size >= 0``, mmdet's configs); without it the hook says they stay."""
    import warnings
    from mmdet.models.dense_heads import RPNHead
    from mmengine.config import ConfigDict
    head = RPNHead(8, anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[1.0],
                                            strides=[4]),
                   test_cfg=ConfigDict(nms_pre=10, max_per_img=10, min_bbox_size=min_bbox_size,
                                       nms=dict(type='nms', iou_threshold=0.7)))
    model = nn.Module()
    model.rpn_head = head
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        installed = enable_batch_invariance(model, mask_modules=('rpn_head',))
    installed.remove()
    warned = [w for w in caught if 'does not drop the anchors' in str(w.message)]
    assert bool(warned) == (min_bbox_size < 0)
