"""Detection losses that keep mixed-precision training finite (mmdet only).

mmcv's CUDA sigmoid focal loss clamps ``p`` with ``max(p, (T)FLT_MIN)`` before its logs: in
fp16 ``(half)FLT_MIN`` is 0, so once a logit passes about -17 (``sigmoid`` underflows) or
+8 (``1 - p`` rounds to 0) a log is ``-inf`` and the masked-out term ``0 * -inf`` is NaN, in
the loss and in the gradient of every such anchor. A from-scratch RetinaNet drives its
background logits past -17 within tens of iterations, so ``--amp`` training died with
``loss_cls: nan`` or skipped every step (``grad_norm: nan``). mmcv has no bf16 kernel at
all. Computing this one loss in fp32 (its cost is negligible next to the network) fixes
both; the rest of the detector stays in autocast.
"""
from typing import Optional

from mmdet.models.losses import FocalLoss
from torch import Tensor


class FocalLossFP32(FocalLoss):
    """mmdet's :class:`~mmdet.models.losses.FocalLoss` evaluated in float32.

    Takes the same arguments as ``FocalLoss`` (``use_sigmoid``, ``gamma``, ``alpha``,
    ``reduction``, ``loss_weight``, ``activated``); in configs replace
    ``type='FocalLoss'`` with ``type='FocalLossFP32'``. In full precision it is identical.
    """

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """The focal loss of ``pred`` cast to float32 (gradients flow back in its dtype)."""
        if weight is not None and weight.is_floating_point():
            weight = weight.float()
        return super().forward(pred.float(), target, weight, avg_factor, reduction_override)
