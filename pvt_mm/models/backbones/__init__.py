"""The PVT backbones (v1 and v2, one class family driven by the arch table) and their checkpoint key mapping."""
from .archs import ARCH_TABLE, ARCH_ZOO, ArchRow, resolve_arch
from .pvt import PVT, PVTStage, PVTv2
from .pvt_convert import (adapt_state_dict, convert_checkpoint_file, convert_official_keys,
                          load_pretrained, to_official_keys)

__all__ = ['ARCH_TABLE', 'ARCH_ZOO', 'ArchRow', 'PVT', 'PVTStage', 'PVTv2', 'resolve_arch', 'adapt_state_dict',
           'convert_checkpoint_file', 'convert_official_keys', 'load_pretrained',
           'to_official_keys']
