"""The plain exported graphs: thin ``nn.Module`` wrappers over a built OpenMMLab model
whose ``forward(images)`` is exactly what the ONNX file computes.

* :class:`BackboneGraph`: the backbone's four stage maps (optionally from each image's size
  too: ``img_shapes``, for batch invariance).
* :class:`ClassifierGraph`: an mmpretrain ``ImageClassifier``'s logits.
* :class:`SegmentorGraph`: an mmseg ``EncoderDecoder``'s per-pixel logits at the input size.

Every graph works on the batch the data preprocessor makes (normalised, padded). The
detector's graph, which re-implements its post-processing, is
:class:`pvt_mm.deploy.retinanet.RetinaNetGraph`.
"""
from typing import Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn


class BackboneGraph(nn.Module):
    """``images -> (stage maps...)``, or with ``with_img_shapes``
    ``(images, img_shapes) -> (stage maps...)``.

    Args:
        backbone: The backbone.
        with_img_shapes: Take a second input, ``img_shapes`` ``(B, 2)`` (each image's
            ``(h, w)`` before padding, as the RetinaNet graph's): each image of a padded
            batch then gets the maps it gets alone (PVT's batch invariance), outside its
            region the maps are zero.
    """

    def __init__(self, backbone: nn.Module, with_img_shapes: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.with_img_shapes = with_img_shapes

    def forward(self, images: Tensor, img_shapes: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        if img_shapes is None:
            return tuple(self.backbone(images))
        return tuple(self.backbone(images, img_shapes=img_shapes))


class ClassifierGraph(nn.Module):
    """``images -> logits (B, num_classes)`` of an mmpretrain ``ImageClassifier``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, mode='tensor')


class SegmentorGraph(nn.Module):
    """``images -> seg_logits (B, classes, H, W)`` at the input (padded batch) size, as
    mmseg's ``decode_head.predict`` resizes them before ``postprocess_result``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        head = self.model.decode_head
        logits = head.forward(self.model.extract_feat(images))
        return F.interpolate(logits, size=images.shape[2:], mode='bilinear',
                             align_corners=head.align_corners)
