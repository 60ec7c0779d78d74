"""Which checkpoint ``--resume`` continues from: :func:`find_resumable_checkpoint` picks the
newest checkpoint in a work dir that actually loads, even when ``last_checkpoint`` is
missing, empty or points at a damaged file."""
import glob
import os.path as osp
import re
from typing import Optional

from mmengine.logging import print_log

from ..checkpoint import CheckpointError, read_checkpoint


def _checkpoint_step(path: str) -> int:
    match = re.search(r'(?:epoch|iter)_(\d+)\.pth$', path)
    return int(match[1]) if match else -1


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint in ``work_dir`` that loads, or ``None`` if there is none.

    ``last_checkpoint`` is tried first; a missing, empty or damaged target is reported and
    the newest loadable ``epoch_*.pth`` / ``iter_*.pth`` is used instead.
    """
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named if osp.isabs(named) else osp.join(work_dir, osp.basename(named)))
    found = glob.glob(osp.join(work_dir, 'epoch_*.pth')) + glob.glob(osp.join(work_dir, 'iter_*.pth'))
    candidates += sorted(found, key=_checkpoint_step, reverse=True)
    seen = set()
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        try:
            ckpt = read_checkpoint(path)
        except (FileNotFoundError, CheckpointError) as exc:
            print_log(f'Skipping checkpoint {path}: {exc}', logger='current', level=30)
            continue
        if 'meta' in ckpt and 'state_dict' in ckpt:
            return path
        print_log(f'Skipping {path}: not a training checkpoint (no meta/state_dict).',
                  logger='current', level=30)
    return None


__all__ = ['find_resumable_checkpoint']
