"""Multi-class non-maximum suppression as one graph op: ONNX ``NonMaxSuppression`` in an
exported file, torchvision's NMS in eager PyTorch.

``torch.onnx.export(..., dynamo=True)`` knows no NMS, so the op is a custom torch op
(``pvt_mm::onnx_nms``) with a fake (shape-only) implementation for tracing and a
translation to ONNX's own ``NonMaxSuppression``, which every ONNX runtime implements.
"""
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
