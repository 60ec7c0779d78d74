from .backbones import ARCH_ZOO, PVT

__all__ = ['ARCH_ZOO', 'PVT']
