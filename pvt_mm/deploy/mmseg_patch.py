"""Patching a built mmseg model so that it exports for every input size: its ``Upsample``
modules by an integer factor become :class:`SizeUpsample`, which keeps the output size
symbolic."""
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import DeployError


class SizeUpsample(nn.Module):
    """mmseg's ``Upsample`` by an integer factor, exportable: the output size is
    ``shape * factor`` kept symbolic, where mmseg's ``int(shape * float_factor)`` makes the
    exporter freeze the example's size. The same ``F.interpolate`` call otherwise."""

    def __init__(self, factor: int, mode: str, align_corners) -> None:
        super().__init__()
        self.factor, self.mode, self.align_corners = factor, mode, align_corners

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2] * self.factor, x.shape[-1] * self.factor)
        return F.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners)


def replace_mmseg_upsamples(model: nn.Module) -> nn.Module:
    """Swap every mmseg ``Upsample`` that scales by an integer for :class:`SizeUpsample`
    (in place; ``model`` is the export's own copy). Others are refused: they would be
    exported at the example's size only."""
    from mmseg.models.utils import Upsample
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, Upsample) or child.size:
                continue
            factors = child.scale_factor if isinstance(child.scale_factor, tuple) else (
                child.scale_factor, child.scale_factor)
            if len(set(factors)) != 1 or not float(factors[0]).is_integer():
                raise DeployError(f'{name}.{child_name}: mmseg Upsample by {child.scale_factor} '
                                  'cannot be exported for every input size (only integer '
                                  'factors, equal for H and W, can).')
            setattr(module, child_name,
                    SizeUpsample(int(factors[0]), child.mode, child.align_corners))
    return model
