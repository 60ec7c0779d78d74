"""pvt_mm: the Pyramid Vision Transformer as an OpenMMLab plugin."""
from .checkpoint import use_safe_checkpoint_loaders
from .models import ARCH_ZOO, PVT, PVTv2
from .registry import register_all_modules
from .version import __version__

REGISTERED_SCOPES = register_all_modules()
# Every checkpoint mmengine opens for us (resume, load_from, Pretrained, inferencers) goes
# through pvt_mm.checkpoint.read_checkpoint: one safe read, one URL cache.
use_safe_checkpoint_loaders()

__all__ = ['ARCH_ZOO', 'PVT', 'PVTv2', 'REGISTERED_SCOPES', '__version__']
