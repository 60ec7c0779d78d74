"""Runtime set-up shared by the training and testing entry points (``tools/``).

Two things mmengine 0.10.7 needs help with on today's stack:

* torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine's own training
  checkpoints hold a few non-tensor types (message hub history buffers, numpy scalars);
  ``allow_mmengine_checkpoints`` allow-lists exactly those, keeping safe loading on.
* mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device`` before creating the
  process group, so DDP cannot start on a machine without a GPU. ``init_distributed``
  creates a gloo group itself in that case; ``Runner`` then skips its own ``init_dist``.
"""
import os
from datetime import timedelta
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

from .capabilities import COMPILE, allow_globals_process_wide, require
from .checkpoint import mmengine_safe_globals


def read_config(path: str, cfg_options: Optional[dict] = None):
    """Read a config file (its ``custom_imports`` run) and merge ``cfg_options`` into it: the
    one place every tool reads its config.

    Args:
        path: The config file.
        cfg_options: Overrides, as mmengine's ``DictAction`` parses ``--cfg-options``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    from mmengine.config import Config
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none'):
    """Read a config the way mmdet's tools do: ``--cfg-options`` merged, ``work_dir``
    defaulting to ``./work_dirs/<config name>``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    cfg = read_config(path, cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
    return cfg


#: ``--amp-dtype`` choices -> the name mmengine's ``AmpOptimWrapper(dtype=...)`` takes (also
#: ``torch.<name>``); the one table for ``tools/train.py`` and ``tools/analysis/benchmark.py``.
AMP_DTYPES = {'float16': 'float16', 'fp16': 'float16', 'bfloat16': 'bfloat16',
              'bf16': 'bfloat16'}


def use_mixed_precision(cfg, dtype: str = 'float16') -> None:
    """Train with autocast through mmengine's ``AmpOptimWrapper``.

    fp16 uses a dynamic loss scale (unless the config sets one); bf16 has fp32's range and
    needs none, but the scaler is harmless there. The optimizer, clipping and
    param-wise settings of the config's ``optim_wrapper`` are kept.

    Args:
        cfg: The mmengine config to change in place.
        dtype: ``'float16'`` / ``'fp16'`` or ``'bfloat16'`` / ``'bf16'``.

    Raises:
        ValueError: unknown ``dtype``; no CUDA device (mmengine's AmpOptimWrapper runs on
            CUDA/NPU/MLU only); bf16 for a model with RoIAlign (mmcv 2.1's CUDA kernel has
            no bf16 version, so two-stage detectors train in fp16 or fp32).
    """
    if dtype not in AMP_DTYPES:
        raise ValueError(f'--amp-dtype {dtype!r} is not a mixed-precision dtype; use one of '
                         f'{sorted(AMP_DTYPES)}')
    if AMP_DTYPES[dtype] == 'bfloat16' and 'RoIAlign' in str(cfg.model):
        raise ValueError('--amp-dtype bfloat16 cannot train this model: its RoIAlign (mmcv '
                         "2.1's CUDA op) has no bf16 kernel. Use --amp (fp16 with a dynamic "
                         'loss scale) or fp32.')
    if not torch.cuda.is_available():
        raise ValueError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper is CUDA/NPU/MLU "
                         'only); train in fp32 on this machine or run on a GPU.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.dtype = AMP_DTYPES[dtype]
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def add_runner_arguments(parser, cfg_example: str) -> None:
    """The flags ``tools/train.py`` and ``tools/test.py`` share (mmdet's names).

    Args:
        parser: An ``argparse.ArgumentParser``.
        cfg_example: An example override for ``--cfg-options``' help.
    """
    from mmengine.config import DictAction
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model (mmengine compile=True)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help=f'override config settings, e.g. {cfg_example}')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_arguments(parser):
    """Parse the command line; ``--local-rank`` (old launchers) becomes ``LOCAL_RANK``."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def use_compile(cfg) -> None:
    """Compile the model with ``torch.compile`` (mmengine's ``compile=True``).

    A ``compile`` dict already in the config (e.g. ``--cfg-options compile.backend=eager``)
    is kept: it holds ``torch.compile``'s arguments. The PVT backbone compiles without graph
    breaks in training and inference; detector heads and post-processing may still break
    the graph, which only costs speed.

    Raises:
        CapabilityError: the installed torch cannot compile the model
            (:data:`pvt_mm.capabilities.COMPILE`).
    """
    require(COMPILE)
    if not isinstance(cfg.get('compile'), dict):
        cfg.compile = True


def compile_for_test(runner) -> None:
    """Compile ``runner.model.test_step`` as the config's ``compile`` asks.

    mmengine 0.10.7 compiles only in ``Runner.train()`` (``_maybe_compile('train_step')``);
    ``Runner.test()`` runs the model uncompiled. The test loop calls the (wrapped) model's
    ``test_step``, so this compiles that method with mmengine's own code and options.

    Args:
        runner: A built ``Runner`` (its model is wrapped already).
    """
    runner._maybe_compile('test_step')


def add_custom_hooks(cfg, names) -> None:
    """Append a ``dict(type=name)`` custom hook for each of ``names`` the config lacks.

    Args:
        cfg: The mmengine config to change in place.
        names: Hook type names registered in the config's scope.
    """
    hooks = list(cfg.get('custom_hooks', None) or [])
    present = {h.get('type') for h in hooks}
    cfg.custom_hooks = hooks + [dict(type=t) for t in names if t not in present]


def build_from_config(config: str, cfg_options: Optional[dict] = None,
                      with_weights: bool = True,
                      part: Optional[str] = None) -> Tuple[torch.nn.Module, Any]:
    """Build a config's model through its own registry (after ``init_default_scope``).

    Args:
        config: Any mmdet / mmseg / mmpretrain config file.
        cfg_options: Overrides merged into the config.
        with_weights: Keep the backbone's ``init_cfg``; ``False`` drops it, so that nothing
            reads a checkpoint later (complexity and speed do not depend on the weights).
        part: Build only ``model.<part>`` (e.g. ``'backbone'``) instead of the whole model.

    Returns:
        ``(model, cfg)``; the model is in eval mode and not initialised (``init_weights``
        has not run).

    Raises:
        FileNotFoundError: ``config`` does not exist.
        KeyError: the config's model has no ``part``.
    """
    from mmengine.registry import MODELS, init_default_scope
    cfg = read_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.get('model') or {}
    if part is not None:
        if model_cfg.get(part) is None:
            raise KeyError(f'config {config!r} has no model.{part}')
        model_cfg = model_cfg[part].copy()
        if not with_weights:
            model_cfg['init_cfg'] = None
    elif not with_weights and model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    model.eval()
    return model, cfg


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints (resume, load_from).

    A no-op on torch < 2.6, which neither loads with ``weights_only`` by default nor takes
    the allow-list's ``(callable, name)`` entries (pvt_mm checks every file it loads with its
    own safe read first).
    """
    allow_globals_process_wide(mmengine_safe_globals())


def init_distributed(cfg, launcher: str) -> None:
    """Start a gloo process group for CPU-only DDP; with a GPU mmengine does it itself.

    Args:
        cfg: The mmengine config; its ``env_cfg.dist_cfg.backend`` is switched to gloo.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'launcher={launcher!r} without a GPU is not supported; use '
                           'tools/dist_train.sh (torchrun, launcher=pytorch) for CPU DDP.')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs {missing} in the environment; start it with '
                           'tools/dist_train.sh or torchrun.')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    timeout = cfg.env_cfg.dist_cfg.get('timeout', 1800)
    dist.init_process_group(backend='gloo', timeout=timedelta(seconds=timeout))
    # CPU modules take no device_ids in DDP.
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def shutdown_distributed() -> None:
    """Tear the process group down before the interpreter exits: left to interpreter exit,
    gloo's threads can abort the process (``terminate called without an active
    exception``) after a run that succeeded, turning it into a failed job."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _dataset_cfgs(dataset: dict):
    """Yield the leaf dataset configs of a (possibly wrapped) dataset config."""
    if not isinstance(dataset, dict):
        return
    if 'datasets' in dataset:  # ConcatDataset
        for sub in dataset['datasets']:
            yield from _dataset_cfgs(sub)
    elif 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
        yield from _dataset_cfgs(dataset['dataset'])
    else:
        yield dataset


def _resolve(root: str, path: str) -> str:
    return path if not root or os.path.isabs(path) or path.startswith(root) else os.path.join(root, path)


def check_coco_annotations(ann_file: str) -> dict:
    """Count the annotations mmdet will skip in a COCO json, and warn once per kind.

    mmdet (``CocoDataset.parse_data_info``, 3.x) silently drops, in this order: annotations
    flagged ``ignore``; boxes with no area inside their image (zero-size ones too); boxes
    narrower or shorter than 1 pixel, or with ``area <= 0``; categories not in the dataset.
    Annotations of images missing from ``images`` are never read. Each dropped annotation
    is counted under the first rule that drops it, as mmdet applies them, except ``ignore``
    (deliberate, so not warned about).

    Args:
        ann_file: A COCO-format json.

    Returns:
        ``{kind: count}`` for the problems found.
    """
    import json

    from mmengine.logging import print_log
    with open(ann_file) as f:
        coco = json.load(f)
    images = {img['id']: img for img in coco.get('images', [])}
    categories = {cat['id'] for cat in coco.get('categories', [])}
    problems = {'box with no area inside its image': [],
                'box under 1 pixel wide or high, or of zero area': [],
                'unknown category': [], 'unknown image': []}
    for ann in coco.get('annotations', []):
        img = images.get(ann.get('image_id'))
        if img is None:
            problems['unknown image'].append(ann.get('id'))
            continue
        if ann.get('ignore', False):
            continue
        x, y, w, h = (ann.get('bbox') or [0, 0, 0, 0])[:4]
        # mmdet's own tests, in its order (the first that fails drops the annotation).
        inter_w = max(0, min(x + w, img['width']) - max(x, 0))
        inter_h = max(0, min(y + h, img['height']) - max(y, 0))
        if inter_w * inter_h == 0:
            problems['box with no area inside its image'].append(ann.get('id'))
        elif ann.get('area', 1) <= 0 or w < 1 or h < 1:
            problems['box under 1 pixel wide or high, or of zero area'].append(ann.get('id'))
        elif ann.get('category_id') not in categories:
            problems['unknown category'].append(ann.get('id'))
    found = {kind: ids for kind, ids in problems.items() if ids}
    for kind, ids in found.items():
        print_log(f'{ann_file}: {len(ids)} annotation(s) with {kind} will be skipped '
                  f'(annotation ids {ids[:5]}{" ..." if len(ids) > 5 else ""}).',
                  logger='current', level=30)
    return {kind: len(ids) for kind, ids in found.items()}


def check_datasets(cfg, splits=('train', 'val', 'test')) -> None:
    """Fail early with a clear message when a dataset's files are missing, and warn about
    COCO annotations that will be skipped.

    Raises:
        FileNotFoundError: an annotation file or image folder that does not exist.
    """
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset in _dataset_cfgs(loader.get('dataset')):
            root = dataset.get('data_root') or ''
            if root and not os.path.isdir(root):
                raise FileNotFoundError(
                    f'{split} dataset: data_root {root!r} does not exist. Prepare the data as the '
                    'README describes, or point data_root at it (e.g. --cfg-options '
                    f'{split}_dataloader.dataset.data_root=PATH).')
            ann_file = dataset.get('ann_file')
            if ann_file:
                path = _resolve(root, ann_file)
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f'{split} dataset: annotation file {path!r} does not exist '
                        f'(data_root={root!r}, ann_file={ann_file!r}).')
                if split != 'test' and path.endswith('.json') and 'Coco' in str(dataset.get('type')):
                    check_coco_annotations(path)
            prefixes = dataset.get('data_prefix') or {}
            for prefix in ([prefixes] if isinstance(prefixes, str) else prefixes.values()):
                folder = _resolve(root, prefix) if isinstance(prefix, str) and prefix else None
                if folder and not os.path.exists(folder):
                    raise FileNotFoundError(f'{split} dataset: image folder {folder!r} does not exist '
                                            f'(data_root={root!r}).')
