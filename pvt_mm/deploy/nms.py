"""Non-maximum suppression for exported detectors: one graph op (ONNX
``NonMaxSuppression`` in an exported file, torchvision's NMS in eager PyTorch) and the
multi-class NMS with fixed-size outputs built on it (:func:`multiclass_nms`).

``torch.onnx.export(..., dynamo=True)`` knows no NMS, so the op is a custom torch op
(``pvt_mm::onnx_nms``) with a fake (shape-only) implementation for tracing and a
translation to ONNX's own ``NonMaxSuppression``, which every ONNX runtime implements.
"""
from typing import Tuple

import torch
from torch import Tensor


@torch.library.custom_op('pvt_mm::onnx_nms', mutates_args=())
def onnx_nms(boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int,
             iou_threshold: float, score_threshold: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` semantics (corner boxes) in eager PyTorch.

    Args:
        boxes: ``(B, N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(B, C, N)`` scores per class.
        max_output_boxes_per_class: Most boxes kept per image and class.
        iou_threshold: A box is suppressed by a higher-scoring one of IoU above this.
        score_threshold: Boxes scoring at most this are ignored.

    Returns:
        ``(K, 3)`` int64 rows ``(batch index, class index, box index)``, per image and
        class in descending score order.
    """
    from torchvision.ops import nms
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            keep = (scores[b, c] > score_threshold).nonzero().flatten()
            if keep.numel() == 0:
                continue
            kept = keep[nms(boxes[b, keep], scores[b, c, keep], iou_threshold)]
            kept = kept[:max_output_boxes_per_class]
            rows.append(torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], 1))
    if not rows:
        return boxes.new_zeros((0, 3), dtype=torch.int64)
    return torch.cat(rows)


@onnx_nms.register_fake
def _onnx_nms_fake(boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int,
                   iou_threshold: float, score_threshold: float) -> Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.int64)


def onnx_nms_translation(boxes, scores, max_output_boxes_per_class: int, iou_threshold: float,
                         score_threshold: float):
    """The ONNX graph of :func:`onnx_nms` (an entry of ``custom_translation_table``)."""
    from onnxscript import opset18 as op
    return op.NonMaxSuppression(
        boxes, scores,
        op.Constant(value_ints=[max_output_boxes_per_class]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]),
        center_point_box=0)


#: ``custom_translation_table`` for ``torch.onnx.export`` of graphs that use :func:`onnx_nms`.
TRANSLATIONS = {torch.ops.pvt_mm.onnx_nms.default: onnx_nms_translation}


def multiclass_nms(boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int,
                   iou_threshold: float, score_thr: float, max_per_img: int,
                   class_agnostic: bool = False) -> Tuple[Tensor, Tensor]:
    """NMS of each image's candidates (mmcv's ``batched_nms``: per class, or over all
    classes), then the best ``max_per_img`` per image, packed into fixed-size outputs.

    Args:
        boxes: ``(B, N, 4)`` candidate boxes.
        scores: ``(B, N)`` their scores; -1 marks a candidate that does not qualify.
        labels: ``(B, N)`` their classes.
        num_classes: Number of classes.
        iou_threshold: NMS IoU threshold.
        score_thr: Score threshold (already applied; here it only drops the -1s).
        max_per_img: Detections kept per image.
        class_agnostic: One NMS over every class (a box suppresses overlapping boxes of
            any label), as ``nms.class_agnostic=True``.

    Returns:
        ``dets (B, max_per_img, 5)`` (best first; zeros past the last detection) and
        ``labels (B, max_per_img)`` (-1 past the last detection).
    """
    b, m = boxes.shape[0], max_per_img
    if class_agnostic:
        per_class = scores.unsqueeze(1)  # one "class": every candidate competes
    else:
        class_ids = torch.arange(num_classes, device=boxes.device).view(1, -1, 1)
        per_class = torch.where(labels.unsqueeze(1) == class_ids, scores.unsqueeze(1), -1.0)
    keep = onnx_nms(boxes, per_class, m, iou_threshold, max(score_thr, -0.5))
    bi, ni = keep[:, 0], keep[:, 2]
    ci = labels[bi, ni]
    kept_scores = scores[bi, ni]
    # Per image, best first: one sort by (image, -score), in float64 so that the image
    # index does not round the scores away (scores lie in [0, 1]).
    order = torch.sort(bi.double() * 2.0 - kept_scores.double())[1]
    bi, ci, ni, kept_scores = bi[order], ci[order], ni[order], kept_scores[order]
    # Rank of each detection within its image; the first max_per_img go to the output,
    # the rest to a spare row that is cut off.
    per_image = (bi.unsqueeze(1) == torch.arange(b, device=bi.device)).sum(0)
    starts = per_image.cumsum(0) - per_image
    rank = torch.ones_like(bi).cumsum(0) - 1 - starts[bi]
    slot = torch.where(rank < m, bi * m + rank, b * m)
    rows = torch.cat([boxes[bi, ni], kept_scores.unsqueeze(1)], 1)
    dets = boxes.new_zeros((b * m + 1, 5)).index_put((slot, ), rows)
    out_labels = torch.full((b * m + 1, ), -1, dtype=torch.int64,
                            device=boxes.device).index_put((slot, ), ci)
    return dets[:b * m].reshape(b, m, 5), out_labels[:b * m].reshape(b, m)
