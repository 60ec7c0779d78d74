"""What the test tools (``tools/test.py``, ``tools/deployment/test_onnx.py``) write: the
metrics as ``test_metrics.json`` (:func:`write_metrics`) and, for ``--out``, each library's
own result dump where it has one:

* mmdet: ``DumpDetResults`` (what mmdet's ``tools/test.py --out`` uses): masks encoded as
  COCO RLE, ground truth dropped.
* mmseg: its ``tools/test.py --out`` writes label-map PNGs through ``IoUMetric`` rather than
  a pickle; :class:`DumpSegResults` keeps the pickle of pvt_mm's ``--out`` but holds only
  the predicted label map of each image: no ``seg_logits`` (num_classes x H x W floats,
  150 channels on ADE20K) and no ground truth.
* mmpretrain: mmengine's ``DumpResults``, as mmpretrain's own ``tools/test.py`` does (its
  predictions are a label and one score per class).
"""
import json
import numbers
from typing import Any, Dict, Sequence

from mmengine.evaluator import DumpResults

from .adapters import to_cpu


class DumpSegResults(DumpResults):
    """Dump mmseg predictions without the per-class logits and without ground truth.

    Args:
        out_file_path: The ``.pkl`` / ``.pickle`` file to write.
        collect_device: ``'cpu'`` or ``'gpu'``, for gathering results across ranks.
    """

    def process(self, data_batch: Any, predictions: Sequence[dict]) -> None:
        samples = to_cpu(predictions)  # new dicts: other metrics still see the originals
        for sample in samples:
            sample.pop('seg_logits', None)
            sample.pop('gt_sem_seg', None)
        self.results.extend(samples)


def build_dump_metric(scope: str, out_file: str) -> DumpResults:
    """The result dump of ``scope``'s library (see the module docstring).

    Args:
        scope: The config's ``default_scope`` (``'mmdet'``, ``'mmseg'``, ``'mmpretrain'``).
        out_file: The ``.pkl`` / ``.pickle`` file to write.
    """
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out_file)
    if scope == 'mmseg':
        return DumpSegResults(out_file_path=out_file)
    return DumpResults(out_file_path=out_file)


def write_metrics(metrics: Dict[str, Any], path: str) -> None:
    """Write an evaluator's metrics to ``path`` as JSON, atomically (a reader never sees half
    a file): numbers as floats (``numbers.Real`` covers numpy scalars such as mmseg's
    ``np.float32``), anything else as its string.

    Args:
        metrics: What ``Runner.test()`` returned.
        path: The ``.json`` file to write.
    """
    from .fileio import replaced_atomically
    with replaced_atomically(path) as tmp, open(tmp, 'w') as f:
        json.dump({k: float(v) if isinstance(v, numbers.Real) else str(v)
                   for k, v in metrics.items()}, f, indent=2)


__all__ = ['DumpSegResults', 'build_dump_metric', 'write_metrics']
