from .pvt import ARCH_ZOO, PVT, PVTStage, resolve_arch

__all__ = ['ARCH_ZOO', 'PVT', 'PVTStage', 'resolve_arch']
