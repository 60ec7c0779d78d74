"""Every full-size config trains the official run's recipe: its values as ``Config.fromfile``
loads them (bases merged, so a base-file change that moves a value fails here) against
``recipes_official.RECIPES``, which names the official file each value comes from and says
why where a value is kept different on purpose."""
from typing import Any, Dict, List, Optional

import pytest
from mmengine.config import Config, ConfigDict

from .conftest import REPO
from .recipes_official import RECIPES, Kept

FAMILIES = ('retinanet', 'mask_rcnn', 'detr', 'semfpn', 'classification', 'examples')
SMALL_DATA_SUFFIXES = ('_shapes.py', '_tiny.py')  # the embedded-data configs: not recipes
FULL_SIZE = sorted(str(p.relative_to(REPO / 'configs')) for family in FAMILIES
                   for p in (REPO / 'configs' / family).glob('*.py')
                   if not p.name.endswith(SMALL_DATA_SUFFIXES))
# Pipeline steps that set the input's scale, crop or flip, and the fields that say how.
SCALE_STEPS = {
    'Resize': ('scale', 'keep_ratio'),
    'RandomResize': ('scale', 'ratio_range', 'keep_ratio'),
    'RandomChoiceResize': ('scales', 'keep_ratio'),
    'RandomCrop': ('crop_size', 'cat_max_ratio'),
    'RandomResizedCrop': ('scale', ),
    'ResizeEdge': ('scale', 'edge'),
    'CenterCrop': ('crop_size', ),
    'ResizeToMultiple': ('size_divisor', ),
    'RandomFlip': ('prob', ),
}


def plain(value: Any) -> Any:
    """ConfigDicts as dicts, tuples as lists, floats rounded past float noise (2e-4 / 1.4)."""
    if isinstance(value, (dict, ConfigDict)):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return float(f'{value:.12g}')
    return value


def _steps(pipeline: List[dict]) -> List[list]:
    """The scale / crop / flip steps of a pipeline, each as [type, its fields...]; mmdet's
    RandomChoice as [type, [its branches' steps]]."""
    steps = []
    for step in pipeline:
        kind = step['type']
        if kind == 'RandomChoice':
            steps.append([kind, [_steps(branch) for branch in step['transforms']]])
        elif kind in SCALE_STEPS:
            steps.append([kind] + [plain(step.get(field)) for field in SCALE_STEPS[kind]])
    return steps


def _scheduler(s: dict) -> list:
    """One param scheduler: its type and the values that shape the lr curve."""
    unit = ('iter' if not s.get('by_epoch', True) else
            'epoch per iter' if s.get('convert_to_iter_based') else 'epoch')
    if s.type == 'LinearLR':
        return [s.type, s.start_factor, s.begin, s.end, unit]
    if s.type == 'MultiStepLR':
        return [s.type, list(s.milestones), s.get('gamma', 0.1)]
    if s.type == 'CosineAnnealingLR':
        return [s.type, s.begin, s.end, s.eta_min, unit]
    if s.type == 'PolyLR':
        return [s.type, s.power, s.eta_min, s.begin, s.end, unit]
    raise AssertionError(f'no summary for scheduler {s.type}: add it to test_recipes.py')


def recipe_of(cfg: Config) -> Dict[str, Any]:
    """The recipe values of a loaded config, keyed as ``recipes_official.RECIPES``."""
    wrapper = cfg.optim_wrapper
    opt = wrapper.optimizer
    clip: Optional[dict] = wrapper.get('clip_grad')
    loop = cfg.train_cfg
    preprocessor = cfg.model.get('data_preprocessor') or {}
    sampler = cfg.train_dataloader.sampler
    batch_sampler = cfg.train_dataloader.get('batch_sampler')
    return plain({
        'optimizer': [opt.type, opt.lr, opt.weight_decay],
        'paramwise': wrapper.get('paramwise_cfg'),
        'clip_grad': None if clip is None else clip.max_norm,
        'amp': wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper',
        'length': (['epochs', loop.max_epochs] if 'max_epochs' in loop
                   else ['iters', loop.max_iters]),
        'schedule': [_scheduler(s) for s in cfg.param_scheduler],
        'batch': [cfg.train_dataloader.batch_size, cfg.auto_scale_lr.base_batch_size],
        'drop_path': cfg.model.backbone.drop_path_rate,
        'train': _steps(cfg.train_dataloader.dataset.pipeline),
        'test': _steps(cfg.test_dataloader.dataset.pipeline),
        'pad': preprocessor.get('pad_size_divisor', preprocessor.get('size')),
        'sampler': [sampler.type, batch_sampler and batch_sampler.type],
    })


def test_every_full_size_config_has_a_recipe():
    assert FULL_SIZE and set(RECIPES) == set(FULL_SIZE)


@pytest.mark.parametrize('config', FULL_SIZE)
def test_recipe_is_the_official_runs(config):
    # Values only: nothing is built, so pvt_mm's registration (custom_imports) is not needed.
    loaded = recipe_of(Config.fromfile(str(REPO / 'configs' / config), import_custom_modules=False))
    expected = RECIPES[config]
    assert set(loaded) == set(expected), 'the table and recipe_of must name the same values'
    wrong = []
    for key, entry in expected.items():
        if loaded[key] != plain(entry.value):
            kept = ' (kept on purpose: ' + entry.why + ')' if isinstance(entry, Kept) else ''
            wrong.append(f'{key}: config {loaded[key]!r}, table {plain(entry.value)!r} '
                         f'from {entry.source}{kept}')
    assert not wrong, f'{config}:\n  ' + '\n  '.join(wrong)


def test_model_index_batch_sizes_are_the_recipes():
    """The metafiles' Batch Size (the total over GPUs, as OpenMMLab's model indexes give it)
    says what the recipe table says."""
    import yaml
    sizes = {}
    for metafile in sorted((REPO / 'configs').glob('*/metafile.yml')):
        for model in yaml.safe_load(metafile.read_text())['Models']:
            sizes[model['Config'][len('configs/'):]] = model['Metadata']['Batch Size']
    assert sizes, 'no metafile models found'
    assert sizes == {config: RECIPES[config]['batch'].value[1] for config in sizes}
