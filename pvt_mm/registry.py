"""The one place that decides which OpenMMLab libraries see pvt_mm's models.

``import pvt_mm`` (or ``custom_imports=dict(imports=['pvt_mm'])`` in a config) registers
``PVT`` and ``PVTv2`` (and the training-safety hooks ``RNGStateHook`` / ``FiniteLossHook`` /
``FiniteInputHook`` / ``AtomicCheckpointHook``, and batch invariance's ``BatchInvariantHook``
and ``MaskedGN`` norm) in pvt_mm's own registries and in those of
mmdet, mmsegmentation and mmpretrain, for each of them that is installed, so ``type='PVT'``
builds under any of those default scopes. mmdet also gets ``FocalLossFP32`` (the focal loss
that keeps mixed precision finite), mmseg ``PaddedSegDataPreProcessor`` (its data
preprocessor, padding a test batch of mixed sizes instead of refusing it).
"""
import importlib
from typing import Dict, List

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

from .hooks import (AtomicCheckpointHook, BatchInvariantHook, FiniteInputHook, FiniteLossHook,
                    RNGStateHook)
from .models import PVT, PVTv2
from .models.batch_invariance import MaskedGN

# pvt_mm's own scope, a child of mmengine's root: `type='pvt_mm.PVT'` always works.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='pvt_mm')
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='pvt_mm')

# Library -> module holding its MODELS registry.
DOWNSTREAM_REGISTRIES: Dict[str, str] = {
    'mmdet': 'mmdet.registry',
    'mmseg': 'mmseg.registry',
    'mmpretrain': 'mmpretrain.registry',
}
PUBLIC_MODELS = {'PVT': PVT, 'PVTv2': PVTv2, 'MaskedGN': MaskedGN}
PUBLIC_HOOKS = {'RNGStateHook': RNGStateHook, 'FiniteLossHook': FiniteLossHook,
                'FiniteInputHook': FiniteInputHook, 'AtomicCheckpointHook': AtomicCheckpointHook,
                'BatchInvariantHook': BatchInvariantHook}


def register_all_modules() -> List[str]:
    """Register pvt_mm's models everywhere they should be visible; idempotent.

    Returns:
        The scopes (libraries) the models were registered in.
    """
    scopes = []
    targets = [(MODELS, PUBLIC_MODELS), (HOOKS, PUBLIC_HOOKS)]
    for scope, module_name in DOWNSTREAM_REGISTRIES.items():
        try:
            library = importlib.import_module(module_name)
        except ImportError:
            continue  # that library is not installed: nothing there needs PVT
        targets += [(library.MODELS, PUBLIC_MODELS), (library.HOOKS, PUBLIC_HOOKS)]
        if scope == 'mmdet':
            # Subclasses mmdet's own loss, so it is importable only with mmdet installed.
            from .models.losses import FocalLossFP32
            targets.append((library.MODELS, {'FocalLossFP32': FocalLossFP32}))
        if scope == 'mmseg':
            # Subclasses mmseg's own data preprocessor: importable only with mmseg installed.
            from .models.seg_preprocessor import PaddedSegDataPreProcessor
            targets.append((library.MODELS,
                            {'PaddedSegDataPreProcessor': PaddedSegDataPreProcessor}))
        scopes.append(scope)
    for registry, classes in targets:
        for name, cls in classes.items():
            if name not in registry.module_dict:
                registry.register_module(name=name, module=cls)
    return scopes
