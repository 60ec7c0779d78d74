"""What ``tools/train.py`` and ``tools/test.py`` share on the command line: the common flags
and the config changes they ask for (``--amp`` / ``--amp-dtype``, ``--compile``, added
hooks), applied to a config read by :mod:`pvt_mm.config`."""
import os
import sys

import torch

from .adapters import compile_runner_method
from .capabilities import COMPILE, CapabilityError, require
from .config import load_config


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

    mmengine 0.10.7 compiles only in ``Runner.train()``; ``Runner.test()`` runs the model
    uncompiled. The test loop calls the (wrapped) model's ``test_step``, so this compiles that
    method with mmengine's own code and options (:func:`pvt_mm.adapters.compile_runner_method`).

    Args:
        runner: A built ``Runner`` (its model is wrapped already).
    """
    compile_runner_method(runner, 'test_step')


def config_from_arguments(args):
    """The run's config from the parsed flags: :func:`pvt_mm.config.load_config` with the
    config, ``--cfg-options``, ``--work-dir`` and ``--launcher``, then ``--amp`` /
    ``--amp-dtype`` (where the parser has them) and ``--compile``.

    Args:
        args: What :func:`parse_runner_arguments` returned.

    Raises:
        SystemExit: ``error: <what to do>`` for a missing config file, mixed precision this
            machine or model cannot use, or ``--compile`` on a torch that cannot compile.
    """
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except FileNotFoundError as exc:
        sys.exit(f'error: {exc}')
    amp_dtype = getattr(args, 'amp_dtype', None)
    if getattr(args, 'amp', False) or amp_dtype:
        try:
            use_mixed_precision(cfg, amp_dtype or 'float16')
        except ValueError as exc:
            sys.exit(f'error: {exc}')
    if args.compile:
        try:
            use_compile(cfg)
        except CapabilityError as exc:
            sys.exit(f'error: {exc}')
    return cfg


def add_custom_hooks(cfg, names) -> None:
    """Append a ``dict(type=name)`` custom hook for each of ``names`` the config lacks.

    Args:
        cfg: The mmengine config to change in place.
        names: Hook type names registered in the config's scope.
    """
    hooks = list(cfg.get('custom_hooks', None) or [])
    present = {h.get('type') for h in hooks}
    cfg.custom_hooks = hooks + [dict(type=t) for t in names if t not in present]


__all__ = ['AMP_DTYPES', 'use_mixed_precision', 'add_runner_arguments', 'parse_runner_arguments',
           'use_compile', 'compile_for_test', 'config_from_arguments', 'add_custom_hooks']
