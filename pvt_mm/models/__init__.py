from .backbones import ARCH_ZOO, PVT, PVTv2

__all__ = ['ARCH_ZOO', 'PVT', 'PVTv2']
