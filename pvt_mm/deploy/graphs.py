"""The plain exported graphs: thin ``nn.Module`` wrappers over a built OpenMMLab model
whose ``forward(images)`` is exactly what the ONNX file computes.

* :class:`BackboneGraph`: the backbone's four stage maps.
* :class:`ClassifierGraph`: an mmpretrain ``ImageClassifier``'s logits.
* :class:`SegmentorGraph`: an mmseg ``EncoderDecoder``'s per-pixel logits at the input size.

Every graph works on the batch the data preprocessor makes (normalised, padded). The
detector's graph, which re-implements its post-processing, is
:class:`pvt_mm.deploy.retinanet.RetinaNetGraph`.
"""
from typing import Tuple

import torch.nn.functional as F
from torch import Tensor, nn


class BackboneGraph(nn.Module):
    """``images -> (stage maps...)``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.backbone(images))


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
