"""pvt_mm: the Pyramid Vision Transformer as an OpenMMLab plugin."""
from .models import ARCH_ZOO, PVT, PVTv2
from .registry import register_all_modules
from .version import __version__

REGISTERED_SCOPES = register_all_modules()

__all__ = ['ARCH_ZOO', 'PVT', 'PVTv2', 'REGISTERED_SCOPES', '__version__']
