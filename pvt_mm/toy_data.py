"""Scaffolding shared by the embedded toy data sets (``tools/misc/make_*.py``).

Each generator describes itself with a :class:`ToyDataset` (its name, default sizes, the
file that marks a finished set, and a ``write`` function that draws the images into a
folder) and hands it to :func:`generator_main`, which gives every generator the same
command line (``--out --train --val --seed --force``), the same deterministic random
stream, and the same atomic output: the set is written to a hidden temporary folder beside
``--out`` and renamed into place, so an interrupted run never leaves half a data set.

A new generator is a module with a ``write(root, num_train, num_val, rng) -> str`` function
(the returned phrase completes "wrote ... to OUT") and::

    SPEC = ToyDataset(name='shapes_coco', description=__doc__.splitlines()[0],
                      default_train=96, default_val=32,
                      done_marker='annotations/instances_val2017.json', write=write)

    if __name__ == '__main__':
        sys.exit(generator_main(SPEC))
"""
import argparse
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np


@dataclass(frozen=True)
class ToyDataset:
    """What a toy data set generator needs to say about itself.

    Args:
        name: Folder name under ``data/`` (the default ``--out``), e.g. ``'ade20k_tiny'``.
        description: One line for ``--help``.
        default_train: Default ``--train``.
        default_val: Default ``--val``.
        done_marker: Path, relative to the set's root, that exists once the set is complete
            (an existing set is kept unless ``--force``).
        write: ``write(root, num_train, num_val, rng)`` draws the set into the empty folder
            ``root`` with the generator ``rng`` and returns a phrase such as ``'4 training
            and 2 validation images'``.
        train_help: ``--help`` text of ``--train``.
        val_help: ``--help`` text of ``--val``.
        add_arguments: Adds the generator's own options to the command line; their values
            reach ``write`` as keyword arguments (``--mixed-sizes`` as ``mixed_sizes=``).
    """

    name: str
    description: str
    default_train: int
    default_val: int
    done_marker: str
    write: Callable[..., str]
    train_help: str = 'number of training images'
    val_help: str = 'number of validation images'
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None


def write_atomically(out: str, name: str, write: Callable[[str], str]) -> str:
    """Run ``write(tmp)`` on a new hidden folder beside ``out``, then rename it to ``out``
    (replacing an older set); on any failure the temporary folder is removed.

    Args:
        out: Final folder of the data set.
        name: Prefix of the temporary folder's name (``.NAME_`` plus a random suffix).
        write: Fills the folder it is given and returns a summary.

    Returns:
        What ``write`` returned.
    """
    parent = osp.dirname(osp.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{name}_', dir=parent)
    try:
        summary = write(tmp)
        if osp.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def build_parser(spec: ToyDataset) -> argparse.ArgumentParser:
    """The command line of ``spec``'s generator."""
    parser = argparse.ArgumentParser(description=spec.description)
    parser.add_argument('--out', default=f'data/{spec.name}')
    parser.add_argument('--train', type=int, default=spec.default_train, help=spec.train_help)
    parser.add_argument('--val', type=int, default=spec.default_val, help=spec.val_help)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true', help='regenerate even if it exists')
    if spec.add_arguments is not None:
        spec.add_arguments(parser)
    return parser


def generator_main(spec: ToyDataset, argv: Optional[List[str]] = None) -> int:
    """The command line of every toy data set generator.

    Args:
        spec: The data set to generate.
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0; bad arguments exit through argparse with status 2).
    """
    parser = build_parser(spec)
    args = parser.parse_args(argv)
    if args.train < 1 or args.val < 1:
        parser.error('--train and --val must be at least 1')
    if osp.exists(osp.join(args.out, spec.done_marker)) and not args.force:
        print(f'{args.out} already exists; use --force to regenerate')
        return 0
    rng = np.random.default_rng(args.seed)
    options = {k: v for k, v in vars(args).items()
               if k not in ('out', 'train', 'val', 'seed', 'force')}
    summary = write_atomically(args.out, spec.name,
                               lambda root: spec.write(root, args.train, args.val, rng, **options))
    print(f'wrote {summary} to {args.out}')
    return 0


__all__ = ['ToyDataset', 'generator_main', 'write_atomically']
