"""The PVT models for OpenMMLab: the backbones (:mod:`.backbones`), their building blocks
(:mod:`.layers`), how those run on a device (:mod:`.ops`, :mod:`.kernels`,
:mod:`.export_ops`, :mod:`.input_checks`), attention maps and mixed-precision-safe losses."""
from .backbones import ARCH_ZOO, PVT, PVTv2

__all__ = ['ARCH_ZOO', 'PVT', 'PVTv2']
