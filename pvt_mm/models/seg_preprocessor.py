"""A segmentation data preprocessor that pads a test batch of mixed sizes instead of refusing
it (mmseg only).

mmseg 1.2's ``SegDataPreProcessor`` pads a training batch to its largest image, but in test
mode it asserts that every image of a batch has one size ('The image size in a batch should
be the same'), so ``tools/test.py`` with ``test_dataloader.batch_size`` > 1 stops on a set
whose images differ in size (issue 27, docs/batch_invariance.md).
:class:`PaddedSegDataPreProcessor` is that class with the refusal replaced by padding; a
config switches with ``data_preprocessor=dict(type='PaddedSegDataPreProcessor')``.
"""
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from mmseg.models import SegDataPreProcessor


class PaddedSegDataPreProcessor(SegDataPreProcessor):
    """mmseg's :class:`~mmseg.models.SegDataPreProcessor` that pads a test batch of images
    of different sizes at the bottom and right instead of refusing it.

    Takes the same arguments. Training, and a test batch whose images share one size, run
    mmseg's own code unchanged (bit for bit). A test batch of mixed sizes is made so:

    1. each image is preprocessed by mmseg's code as a batch of its own (colour conversion,
       normalisation, and ``test_cfg``'s padding where it has one), so it is exactly what
       ``test_dataloader.batch_size=1`` gives;
    2. each is padded with ``pad_val`` at the bottom and right to the largest of them (a
       multiple of ``test_cfg``'s ``size_divisor`` when it has one) and they are stacked:
       every image keeps its origin, as mmdet's and mmseg's own padding do, which is what
       :class:`pvt_mm.hooks.BatchInvariantHook` assumes;
    3. each data sample's metainfo gets what mmseg's own test-time padding
       (``test_cfg``) records: ``pad_shape`` (the batch's size) and ``img_padding_size``
       (left, right, top, bottom), which ``BaseSegmentor.postprocess_result`` crops off the
       predicted logits before resizing them to ``ori_shape``. ``img_shape`` (the pipeline's
       size, from which the hook reads each image's valid size) and the ground truth (which
       the metric compares at its own size) are left as they are.

    With ``BatchInvariantHook`` each image's label map is then the one it gets alone; without
    it the batch runs, but an image's result depends on its neighbours (PVT's attention and
    the heads read the padding).

    Raises:
        ValueError: a test batch of mixed sizes where ``test_cfg`` pads to a fixed ``size``
            that some image exceeds: the batch could not be padded to what each image gets
            alone.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Preprocess a batch as mmseg does; a test batch of mixed sizes is padded (see the
        class docstring) instead of refused."""
        inputs = data['inputs']
        if training or isinstance(inputs, torch.Tensor) or len(
                {tuple(x.shape[-2:]) for x in inputs}) <= 1:
            return super().forward(data, training)
        samples: Optional[List[Any]] = data.get('data_samples')
        alone = [super(PaddedSegDataPreProcessor, self).forward(
            dict(inputs=[x], data_samples=None if samples is None else [samples[i]]), False)
            for i, x in enumerate(inputs)]
        maps = [out['inputs'][0] for out in alone]
        height = max(m.shape[-2] for m in maps)
        width = max(m.shape[-1] for m in maps)
        fixed = (self.test_cfg or {}).get('size')
        if fixed is not None and any(m.shape[-2:] != maps[0].shape[-2:] for m in maps):
            raise ValueError(
                f"test_cfg pads each image to a fixed size={tuple(fixed)}, but images of sizes "
                f"{sorted({tuple(m.shape[-2:]) for m in maps})} exceed it, so a batch of them "
                'cannot be padded to what each gets alone. Use test_cfg=dict(size_divisor=...) '
                'instead, or test_dataloader.batch_size=1.')
        padded = []
        for i, m in enumerate(maps):
            extra_h, extra_w = height - m.shape[-2], width - m.shape[-1]
            padded.append(F.pad(m, (0, extra_w, 0, extra_h), value=self.pad_val))
            if samples is not None:
                sample = alone[i]['data_samples'][0]
                left, right, top, bottom = (int(p) for p in sample.metainfo.get(
                    'img_padding_size', (0, 0, 0, 0)))
                sample.set_metainfo(dict(
                    img_padding_size=(left, right + extra_w, top, bottom + extra_h),
                    pad_shape=torch.Size((height, width))))
        out_samples = None if samples is None else [out['data_samples'][0] for out in alone]
        return dict(inputs=torch.stack(padded, dim=0), data_samples=out_samples)


__all__ = ['PaddedSegDataPreProcessor']
