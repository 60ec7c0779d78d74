from .pvt import ARCH_ZOO, PVT, PVTStage, PVTv2, resolve_arch
from .pvt_convert import (adapt_state_dict, convert_checkpoint_file, convert_official_keys,
                          load_pretrained, to_official_keys)

__all__ = ['ARCH_ZOO', 'PVT', 'PVTStage', 'PVTv2', 'resolve_arch', 'adapt_state_dict',
           'convert_checkpoint_file', 'convert_official_keys', 'load_pretrained',
           'to_official_keys']
