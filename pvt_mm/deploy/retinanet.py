"""The RetinaNet graph: a single-stage anchor detector end to end, its post-processing
re-implemented as traceable tensor ops.

:class:`RetinaNetGraph` applies the config's ``test_cfg`` in the graph as mmdet's
``BaseDenseHead`` applies it: score threshold and ``nms_pre`` per level; then, on the boxes
rescaled to the original image, ``min_bbox_size``, NMS (:func:`.nms.multiclass_nms`;
class-wise, or over all classes with ``nms.class_agnostic``) and ``max_per_img``.
:func:`check_retinanet` refuses the detectors it would not reproduce exactly.
"""
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from ..models.batch_invariance import masked_maps, preprocessor_divisor
from ..models.padding import SIZE_DIVISOR, padded_valid_sizes
from .errors import SUPPORTED, DeployError
from .nms import multiclass_nms


def _decode_deltas(priors: Tensor, deltas: Tensor, coder, img_shapes: Tensor) -> Tensor:
    """mmdet's ``delta2bbox`` for ``(B, K, 4)`` deltas, clipped per image to ``img_shapes``."""
    means = deltas.new_tensor(coder.means)
    stds = deltas.new_tensor(coder.stds)
    denorm = deltas * stds + means
    dxy, dwh = denorm[..., :2], denorm[..., 2:]
    pxy = (priors[..., :2] + priors[..., 2:]) * 0.5
    pwh = priors[..., 2:] - priors[..., :2]
    dxy_wh = pwh * dxy
    max_ratio = abs(math.log(16 / 1000))  # DeltaXYWHBBoxCoder.decode's wh_ratio_clip default
    if coder.add_ctr_clamp:
        dxy_wh = dxy_wh.clamp(min=-coder.ctr_clamp, max=coder.ctr_clamp)
        dwh = dwh.clamp(max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if coder.clip_border:
        h, w = img_shapes[:, 0, None], img_shapes[:, 1, None]  # (B, 1)
        boxes = boxes.clamp(min=0)
        boxes = torch.stack([torch.minimum(boxes[..., 0], w), torch.minimum(boxes[..., 1], h),
                             torch.minimum(boxes[..., 2], w), torch.minimum(boxes[..., 3], h)], -1)
    return boxes


#: The keys of ``test_cfg.nms`` that :class:`RetinaNetGraph` implements (``split_thr`` only
#: picks mmcv's loop, not the result).
NMS_KEYS = frozenset({'type', 'iou_threshold', 'class_agnostic', 'split_thr'})


def check_retinanet(model: nn.Module) -> None:
    """Raise :class:`DeployError` unless ``model`` is a detector :class:`RetinaNetGraph` can
    export exactly."""
    from mmdet.models.dense_heads import AnchorHead
    from mmdet.models.detectors import SingleStageDetector
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
    head = getattr(model, 'bbox_head', None)
    problem = None
    if not isinstance(model, SingleStageDetector):
        problem = f'{type(model).__name__} is not a single-stage detector'
    elif not isinstance(head, AnchorHead) or type(head).predict_by_feat is not AnchorHead.predict_by_feat:
        problem = f'its head {type(head).__name__} has its own post-processing'
    elif not head.use_sigmoid_cls:
        problem = f'its head {type(head).__name__} scores with a softmax'
    elif type(head.bbox_coder) is not DeltaXYWHBBoxCoder:
        problem = f'its box coder is {type(head.bbox_coder).__name__}'
    elif head.test_cfg is None or head.test_cfg.get('nms', {}).get('type', 'nms') != 'nms':
        problem = 'its test_cfg has no plain NMS'
    elif set(head.test_cfg.nms) - NMS_KEYS:
        problem = (f'its NMS config sets {sorted(set(head.test_cfg.nms) - NMS_KEYS)}, which '
                   f'the graph does not implement (it reads {sorted(NMS_KEYS)})')
    if problem:
        raise DeployError(f'Cannot export this detector end to end: {problem}. Supported: '
                          + '; '.join(SUPPORTED) + ". Export its backbone with part='backbone'.")


class RetinaNetGraph(nn.Module):
    """``(images, img_shapes, scale_factors) -> (dets (B, max_per_img, 5), labels (B,
    max_per_img))``.

    ``img_shapes`` is ``(B, 2)`` float ``(h, w)``: each image's size inside the padded batch
    (mmdet's ``img_shape``), where its boxes are clipped, and which makes the graph batch
    invariant (issue 27): the backbone, the neck and the head compute for each image what
    they compute for it alone (padded to its own size rounded up to the data preprocessor's
    divisor), with :class:`pvt_mm.hooks.BatchInvariantHook`'s masks
    (:func:`pvt_mm.models.batch_invariance.masked_maps`). ``scale_factors`` is ``(B, 2)``
    float ``(w, h)`` factors from the original image to the input (mmdet's
    ``scale_factor``; ones for results in the input's coordinates, ``rescale=False``): the
    boxes are divided by them before ``min_bbox_size`` and NMS, where mmdet's
    ``_bbox_post_process`` rescales them. ``dets`` rows are ``x1, y1, x2, y2, score`` in
    the original image's coordinates, best first per image; rows past an image's
    detections are zeros with label ``-1``.

    Args:
        model: A RetinaNet-style detector (see :func:`check_retinanet`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_retinanet(model)
        self.model = model
        # What the data preprocessor pads a batch of one to (mmdet's pad_size_divisor): the
        # valid sizes the graph computes from img_shapes, as the eager hooks do.
        self.divisor = preprocessor_divisor(model) or SIZE_DIVISOR
        cfg = model.bbox_head.test_cfg
        self.score_thr = float(cfg.get('score_thr', 0.0))
        self.nms_pre = int(cfg.get('nms_pre', -1))
        self.min_bbox_size = float(cfg.get('min_bbox_size', -1))
        self.iou_threshold = float(cfg.nms.iou_threshold)
        self.class_agnostic = bool(cfg.nms.get('class_agnostic', False))
        self.max_per_img = int(cfg.max_per_img)

    def _level_candidates(self, cls_score: Tensor, bbox_pred: Tensor, priors: Tensor,
                          img_shapes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """mmdet's ``filter_scores_and_topk`` + decoding for one level, batched: scores
        above the threshold, the best ``nms_pre`` (anchor, class) pairs. A fixed number of
        candidates per image; the ones that do not qualify get score -1."""
        head = self.model.bbox_head
        b, classes = cls_score.shape[0], head.cls_out_channels
        scores = cls_score.permute(0, 2, 3, 1).reshape(b, -1).sigmoid()  # (B, HWA*C)
        deltas = bbox_pred.permute(0, 2, 3, 1).reshape(b, -1, 4)
        scores = torch.where(scores > self.score_thr, scores, -1.0)
        if self.nms_pre > 0:
            # Pad to at least nms_pre pairs, so that top-k has a fixed k at any input size.
            count = scores.shape[1]
            scores = torch.cat([scores, scores.new_full((b, self.nms_pre), -1.0)], 1)
            scores, index = scores.topk(self.nms_pre, dim=1)
            index = index.clamp(max=count - 1)  # padding: any pair, its score is -1
        else:
            index = torch.arange(scores.shape[1], device=scores.device).expand(b, -1)
        anchor, label = index // classes, index % classes
        deltas = deltas.gather(1, anchor.unsqueeze(-1).expand(-1, -1, 4))
        boxes = _decode_deltas(priors[anchor], deltas, head.bbox_coder, img_shapes)
        return boxes, scores, label

    def forward(self, images: Tensor, img_shapes: Tensor,
                scale_factors: Tensor) -> Tuple[Tensor, Tensor]:
        head = self.model.bbox_head
        # Batch invariance (issue 27), as the eager BatchInvariantHook: each image's valid
        # size (its img_shape rounded up to the divisor) as a tensor, read by the backbone
        # and by the neck / head masks, installed for this forward only. With no padding
        # every mask is all True, so the outputs are those of the unmasked graph.
        sizes = padded_valid_sizes(img_shapes, images.shape[2:], self.divisor)
        with masked_maps(self.model, sizes, images.shape[2:], ('neck', 'bbox_head')):
            cls_scores, bbox_preds = head(self.model.extract_feat(images))
        priors = head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], dtype=images.dtype, device=images.device)
        levels = [self._level_candidates(c, r, p, img_shapes)
                  for c, r, p in zip(cls_scores, bbox_preds, priors)]
        boxes = torch.cat([lv[0] for lv in levels], 1)   # (B, N, 4)
        scores = torch.cat([lv[1] for lv in levels], 1)  # (B, N)
        labels = torch.cat([lv[2] for lv in levels], 1)  # (B, N)
        # To the original image (mmdet's rescale), where min_bbox_size and NMS apply.
        boxes = boxes / scale_factors.repeat(1, 2).unsqueeze(1)
        if self.min_bbox_size >= 0:
            wide = (boxes[..., 2] - boxes[..., 0] > self.min_bbox_size) & (
                boxes[..., 3] - boxes[..., 1] > self.min_bbox_size)
            scores = torch.where(wide, scores, -1.0)
        return multiclass_nms(boxes, scores, labels, head.cls_out_channels, self.iou_threshold,
                              self.score_thr, self.max_per_img, self.class_agnostic)
