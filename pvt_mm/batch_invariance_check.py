"""Measure batch invariance: does an image get the same result alone and padded in a batch?

mmdet / mmseg pad a batch to its largest image (issue 27). This module measures what that
padding changes, at two levels, the same way before and after the padding-aware backbone:

* **Stage maps** (:func:`measure_stages`, ``tools/analysis/batch_invariance.py``): a backbone
  with random weights runs an image alone, padded only to its own size (rounded up to the
  size divisor, as a batch of one is), and the same image zero-padded in a larger batch;
  the largest relative difference in the image's region of each stage map is reported. The
  backbone is given each image's valid size the ways pvt_mm offers: the padding context
  (:func:`pvt_mm.models.padding.batch_valid_sizes`) always, and the ``img_shapes`` argument
  of ``forward`` where the backbone has one. A backbone that ignores both (today's) shows
  the difference padding makes; a padding-aware one should show ~1e-7.
* **The user's path** (:func:`compare_test_runs`): ``tools/test.py`` on a mixed-size set at
  two ``test_dataloader.batch_size`` values, each with ``--out``; the per-image detections
  (count, labels, boxes, scores) and COCO AP are compared (:func:`compare_detection_dumps`),
  or for a segmentor the label maps and mIoU (:func:`compare_segmentation_dumps`). A
  comparison with no detections on either side is a failure, never a pass.
"""
import inspect
import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .models.padding import SIZE_DIVISOR, batch_valid_sizes, own_padded_size

HW = Tuple[int, int]
#: Detections: boxes (pixels) and scores, as the deployed model's checks (issue 27's proof).
BOX_ATOL = 0.01
SCORE_ATOL = 1e-4
#: COCO AP / mIoU of the two runs (pycocotools ranks near-equal scores either way).
METRIC_ATOL = 1e-3
#: Stage maps: max |diff| / max |ref| in the image's region (issue 27's proof, fp32 CPU).
STAGE_RTOL = 1e-5
#: The repository root: ``tools/test.py`` lives there (a source checkout, as the tools need).
REPO = Path(__file__).resolve().parents[1]


class BatchInvarianceError(AssertionError):
    """Two runs that should agree do not (or there was nothing to compare); the message
    says what differs."""


# --------------------------------------------------------------------------- stage maps
def build_backbone(arch: str, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    """A PVT / PVTv2 backbone of preset ``arch`` with random weights (seeded), in eval mode.

    Args:
        arch: A row of the arch table (``'small'``, ``'b2'`` ...).
        seed: Seed of the random initialisation.
        **kwargs: More backbone arguments (e.g. a switch of the padding-aware backbone).
    """
    from .models.backbones import PVT, PVTv2
    from .models.backbones.archs import arch_row
    row = arch_row(arch)
    cls = PVTv2 if row.version == 'v2' else PVT
    torch.manual_seed(seed)
    backbone = cls(arch=row.name, init_cfg=None, drop_path_rate=0.0, **kwargs)
    backbone.init_weights()
    return backbone.eval()


def accepts_img_shapes(backbone: torch.nn.Module) -> bool:
    """Whether ``backbone.forward`` takes the valid sizes as an ``img_shapes`` argument."""
    return 'img_shapes' in inspect.signature(backbone.forward).parameters


def run_with_sizes(backbone: torch.nn.Module, x: Tensor,
                   sizes: Sequence[HW]) -> Tuple[Tensor, ...]:
    """``backbone(x)`` told each image's valid size every way it can be told: inside the
    padding context, and as ``img_shapes`` where ``forward`` takes it."""
    with torch.no_grad(), batch_valid_sizes(sizes):
        if accepts_img_shapes(backbone):
            return tuple(backbone(x, img_shapes=[tuple(s) for s in sizes]))
        return tuple(backbone(x))


def _run_untold(backbone: torch.nn.Module, x: Tensor, sizes: Sequence[HW]) -> Tuple[Tensor, ...]:
    """``backbone(x)`` with no valid sizes (``sizes`` unused): the padded batch as it ran
    before batch invariance."""
    with torch.no_grad(), batch_valid_sizes(None):
        return tuple(backbone(x))


def relative_diff(ref: Tensor, out: Tensor) -> float:
    """``max |out - ref| / max |ref|``; raises when ``ref`` is empty or all zeros (a
    comparison of nothing)."""
    if ref.numel() == 0 or not float(ref.abs().max()) > 0:
        raise BatchInvarianceError(f'nothing to compare: a reference map of shape '
                                   f'{tuple(ref.shape)} is empty or all zeros')
    return float((out - ref).abs().max() / ref.abs().max())


@dataclass
class StageMeasurement:
    """One backbone, one image, one padded batch: the difference per stage.

    Attributes:
        arch: The preset.
        image_hw: The image's size (it runs alone at :func:`own_padded_size` of it).
        batch_hw: The padded batch's size.
        diffs: Largest relative difference in the image's region, per returned stage.
        told: How the backbone was told the valid sizes.
    """

    arch: str
    image_hw: HW
    batch_hw: HW
    diffs: Tuple[float, ...]
    told: str


def measure_stages(backbone: torch.nn.Module, image_hw: HW, batch_hws: Sequence[HW],
                   arch: str = '', seed: int = 0, tell_sizes: bool = True) -> List[StageMeasurement]:
    """Run one random image alone and zero-padded in each batch of ``batch_hws``.

    The image alone is padded with zeros to its own size rounded up to the size divisor
    (what the data preprocessor does to a batch of one). In a batch it is zero-padded to
    ``batch_hw`` (normalised inputs: mmdet pads after normalising, with 0) and a second
    random image fills the batch, as a larger image would.

    Args:
        backbone: The backbone (eval mode), e.g. from :func:`build_backbone`.
        image_hw: The image's ``(h, w)``.
        batch_hws: Padded batch sizes, each at least the image's own padded size.
        arch: The preset's name, for the result.
        seed: Seed of the random images.
        tell_sizes: Tell the backbone each image's valid size; ``False`` runs it as a
            padded batch ran before batch invariance (every image taken to fill the batch).

    Returns:
        One :class:`StageMeasurement` per batch size.
    """
    own = own_padded_size(image_hw, SIZE_DIVISOR)
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, *image_hw, generator=generator)
    alone = image.new_zeros(1, 3, *own)
    alone[..., :image_hw[0], :image_hw[1]] = image
    run = run_with_sizes if tell_sizes else _run_untold
    refs = run(backbone, alone, [own])
    told = ('nothing (valid sizes withheld)' if not tell_sizes
            else 'img_shapes argument and padding context' if accepts_img_shapes(backbone)
            else 'padding context (forward has no img_shapes argument)')
    results = []
    for batch_hw in batch_hws:
        batch_hw = (int(batch_hw[0]), int(batch_hw[1]))
        if batch_hw[0] < own[0] or batch_hw[1] < own[1]:
            raise ValueError(f'batch size {batch_hw[0]}x{batch_hw[1]} is smaller than the image '
                             f'padded to its own size, {own[0]}x{own[1]}; give a batch at least '
                             'that large.')
        batch = image.new_zeros(2, 3, *batch_hw)
        batch[0, :, :image_hw[0], :image_hw[1]] = image[0]
        batch[1] = torch.randn(3, *batch_hw, generator=generator)
        outs = run(backbone, batch, [own, batch_hw])
        diffs = []
        for ref, out in zip(refs, outs):
            h, w = ref.shape[-2:]  # the image's cells at this stage
            diffs.append(relative_diff(ref[0], out[0, :, :h, :w]))
        results.append(StageMeasurement(arch, tuple(image_hw), batch_hw, tuple(diffs), told))
    return results


def stage_table(rows: Dict[str, List[StageMeasurement]]) -> str:
    """A markdown table: one row per backbone, one column per batch size, the stages'
    differences in each cell (issue 27's table)."""
    first = next(iter(rows.values()))
    image = first[0].image_hw
    header = ['backbone'] + [f'{m.image_hw[0]}x{m.image_hw[1]} in {m.batch_hw[0]}x{m.batch_hw[1]}'
                             for m in first]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, measurements in rows.items():
        if any(m.image_hw != image for m in measurements):
            raise ValueError('every row of one table must measure the same image size')
        cells = [', '.join(_fmt(d) for d in m.diffs) for m in measurements]
        lines.append('| ' + ' | '.join([name] + cells) + ' |')
    return '\n'.join(lines)


def _fmt(value: float) -> str:
    return '0' if value == 0 else (f'{value:.3f}' if value >= 1e-3 else f'{value:.1e}')


# --------------------------------------------------------------------------- the user's path
@dataclass
class TestRun:
    """One ``tools/test.py`` run: its metrics and its ``--out`` dump."""

    batch_size: int
    metrics: Dict[str, float]
    preds: List[dict]
    work_dir: Path


def run_test_tool(config: str, checkpoint: str, work_dir: Path, batch_size: int,
                  cfg_options: Sequence[str] = (), python: str = sys.executable,
                  env: Optional[Dict[str, str]] = None, timeout: float = 900,
                  processes: int = 1) -> TestRun:
    """``tools/test.py CONFIG CHECKPOINT --out`` with ``test_dataloader.batch_size`` set, as a
    user runs it (a fresh process, from the repository root); with ``processes`` > 1,
    ``tools/dist_test.sh CONFIG CHECKPOINT N`` (each rank pads its own batches; ``--out``
    gathers every rank's results).

    Args:
        config: The config file.
        checkpoint: The trained checkpoint.
        work_dir: Where the run writes (``test_metrics.json``, ``preds.pkl``).
        batch_size: ``test_dataloader.batch_size``.
        cfg_options: More ``--cfg-options`` (e.g. the data root of a mixed-size set).
        python: The interpreter.
        env: Extra environment variables.
        timeout: Seconds before the run is stopped.
        processes: How many processes (``tools/dist_test.sh``'s ``GPUS``; CPU ranks use gloo).

    Raises:
        RuntimeError: the tool failed (its output's tail is in the message).
    """
    script = REPO / 'tools' / ('test.py' if processes == 1 else 'dist_test.sh')
    if not script.is_file():
        raise RuntimeError(f'{script} not found: the comparison runs tools/test.py of a source '
                           'checkout of pvt_mm.')
    work_dir = Path(work_dir)
    out = work_dir / 'preds.pkl'
    launch = ([python, str(script), str(config), str(checkpoint)] if processes == 1
              else ['bash', str(script), str(config), str(checkpoint), str(processes)])
    cmd = [*launch, '--work-dir', str(work_dir), '--out', str(out),
           '--cfg-options', f'test_dataloader.batch_size={batch_size}', *map(str, cfg_options)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f'{script.name} ({processes} process(es)) at batch size {batch_size} '
                           f'exited {proc.returncode}:\n' + (proc.stdout + proc.stderr)[-4000:])
    metrics = json.loads((work_dir / 'test_metrics.json').read_text())
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    return TestRun(batch_size, metrics, preds, work_dir)


@dataclass
class Comparison:
    """What differs between two runs over the same images.

    Attributes:
        images: Images compared.
        detections: Detections (or labelled pixels) in the first and second run.
        metric: Name of the metric compared (``coco/bbox_mAP`` or ``mIoU``).
        metrics: Its value in each run.
        worst: The worst differences (see :func:`compare_detection_dumps`).
        failures: Why the runs differ; empty when they agree.
    """

    images: int
    detections: Tuple[int, int]
    metric: str
    metrics: Tuple[float, float]
    worst: Dict[str, float] = field(default_factory=dict)
    failures: List[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """Whether the runs agree (and compared something)."""
        return not self.failures

    def summary(self) -> str:
        """One paragraph: what was compared and what differs."""
        head = (f'{self.images} images, {self.detections[0]} / {self.detections[1]} detections; '
                f'{self.metric} {self.metrics[0]:.4f} / {self.metrics[1]:.4f}; worst: '
                + ', '.join(f'{k} {v:.3g}' if isinstance(v, float) else f'{k} {v}'
                            for k, v in self.worst.items()))
        return head + ('' if self.equal else '\nDIFFERENT: ' + '; '.join(self.failures))

    def check(self) -> None:
        """Raise :class:`BatchInvarianceError` with :meth:`summary` unless the runs agree."""
        if not self.equal:
            raise BatchInvarianceError(self.summary())


def _by_key(preds: Sequence[dict], key: str) -> Dict[Any, dict]:
    return {p[key]: p for p in preds}


def compare_detection_dumps(a: Sequence[dict], b: Sequence[dict], metric_a: float,
                            metric_b: float, score_thr: Optional[float] = None,
                            metric: str = 'coco/bbox_mAP') -> Comparison:
    """Compare two mmdet ``--out`` dumps of the same images, paired by ``img_id``.

    Every image must have the same number of detections with the same labels, boxes within
    :data:`BOX_ATOL` px and scores within :data:`SCORE_ATOL` (boxes paired with the nearest
    box of the same label: near-equal scores may come out in either order), and the metric
    must agree within :data:`METRIC_ATOL`. Both runs must detect something.

    Args:
        a: The first dump (e.g. batch size 1).
        b: The second (e.g. batch size 4).
        metric_a: The first run's metric (``coco/bbox_mAP``).
        metric_b: The second run's.
        score_thr: The model's ``test_cfg.score_thr``: a box scoring within
            :data:`SCORE_ATOL` of it may be kept by one run only, and is left out on both sides.
        metric: The metric's name, for the report.
    """
    from mmengine.structures import InstanceData

    from .deploy.verify import compare_detections  # its box pairing, shared with the ONNX checks
    ra, rb = _by_key(a, 'img_id'), _by_key(b, 'img_id')
    failures = []
    if set(ra) != set(rb):
        failures.append(f'the dumps hold different images ({len(ra)} / {len(rb)} ids)')
    ids = sorted(set(ra) & set(rb))

    def samples(dump):
        result = []
        for i in ids:
            inst = {k: dump[i]['pred_instances'][k] for k in ('bboxes', 'scores', 'labels')}
            if score_thr is not None:
                keep = inst['scores'] > score_thr + SCORE_ATOL
                inst = {k: v[keep] for k, v in inst.items()}
            result.append(type('Sample', (), {'pred_instances': InstanceData(**inst)})())
        return result

    sa, sb = samples(ra), samples(rb)
    worst = compare_detections(sa, sb)
    labels_differ = sum(sorted(x.pred_instances.labels.tolist())
                        != sorted(y.pred_instances.labels.tolist()) for x, y in zip(sa, sb))
    worst = dict(images_count_differs=worst['count_mismatch'],
                 images_labels_differ=labels_differ,
                 unpaired_labels=worst['label_mismatch'], box=worst['box'], score=worst['score'],
                 detections=worst['detections'], other_detections=worst['other_detections'])
    if not ids or not worst['detections'] or not worst['other_detections']:
        failures.append('nothing to compare: a run has no detections (an untrained detector?)')
    if worst['images_count_differs']:
        failures.append(f'{worst["images_count_differs"]} of {len(ids)} images have a different '
                        'number of detections')
    if worst['images_labels_differ'] or worst['unpaired_labels']:
        failures.append(f'the labels differ on {worst["images_labels_differ"]} images')
    if worst['box'] > BOX_ATOL:
        failures.append(f'boxes differ by up to {worst["box"]:.3g} px (tolerance {BOX_ATOL})')
    if worst['score'] > SCORE_ATOL:
        failures.append(f'scores differ by up to {worst["score"]:.3g} (tolerance {SCORE_ATOL})')
    if not abs(metric_a - metric_b) <= METRIC_ATOL:
        failures.append(f'{metric} {metric_a:.4f} against {metric_b:.4f} (tolerance {METRIC_ATOL})')
    return Comparison(len(ids), (worst['detections'], worst['other_detections']), metric,
                      (metric_a, metric_b), worst, failures)


def compare_segmentation_dumps(a: Sequence[dict], b: Sequence[dict], metric_a: float,
                               metric_b: float, metric: str = 'mIoU') -> Comparison:
    """Compare two mmseg ``--out`` dumps (:class:`pvt_mm.evaluation.DumpSegResults`) of the
    same images, paired by ``img_path``: every label map of the same shape, the same label at
    all but one in 10,000 pixels (:data:`pvt_mm.deploy.verify.PIXEL_AGREEMENT`, as the ONNX
    checks: an argmax whose two best logits tie within float rounding goes either way, and
    the dump holds no logits to tell), and the metric within :data:`METRIC_ATOL`."""
    from .deploy.verify import PIXEL_AGREEMENT
    ra, rb = _by_key(a, 'img_path'), _by_key(b, 'img_path')
    failures = []
    if set(ra) != set(rb):
        failures.append(f'the dumps hold different images ({len(ra)} / {len(rb)})')
    ids = sorted(set(ra) & set(rb))
    pixels, differ, images_differ = 0, 0, 0
    for i in ids:
        x, y = (torch.as_tensor(r[i]['pred_sem_seg']['data']) for r in (ra, rb))
        if x.shape != y.shape:
            failures.append(f'{i}: label maps of shapes {tuple(x.shape)} / {tuple(y.shape)}')
            continue
        pixels += x.numel()
        n = int((x != y).sum())
        differ += n
        images_differ += n > 0
    if not pixels:
        failures.append('nothing to compare: no label maps')
    if differ > (1 - PIXEL_AGREEMENT) * pixels + 1e-6:  # (1e-6: 1 - 0.9999 is not exact)
        failures.append(f'{differ} of {pixels} pixels ({images_differ} images) have another '
                        f'label (at most {1 - PIXEL_AGREEMENT:.2%} may)')
    if not abs(metric_a - metric_b) <= METRIC_ATOL:
        failures.append(f'{metric} {metric_a:.4f} against {metric_b:.4f} (tolerance {METRIC_ATOL})')
    worst = dict(pixels_differ=differ, images_differ=images_differ)
    return Comparison(len(ids), (pixels, pixels), metric, (metric_a, metric_b), worst, failures)


def compare_test_runs(config: str, checkpoint: str, work_dir: Path,
                      batch_sizes: Tuple[int, int] = (1, 4), cfg_options: Sequence[str] = (),
                      env: Optional[Dict[str, str]] = None,
                      timeout: float = 900,
                      processes: Tuple[int, int] = (1, 1)) -> Comparison:
    """``tools/test.py`` at two ``test_dataloader.batch_size`` values, compared.

    A detector (``coco/bbox_mAP`` in its metrics) is compared by
    :func:`compare_detection_dumps`, a segmentor (``mIoU``) by
    :func:`compare_segmentation_dumps`.

    Args:
        config: The config file.
        checkpoint: The trained checkpoint.
        work_dir: A folder for the two runs (``bs<N>/`` each).
        batch_sizes: The two batch sizes.
        cfg_options: ``--cfg-options`` of both runs (e.g. a mixed-size set's data root).
        env: Extra environment variables of both runs.
        timeout: Seconds per run.
        processes: The processes of each run (``tools/dist_test.sh`` where more than 1).

    Returns:
        The :class:`Comparison`; :meth:`Comparison.check` raises if they differ.
    """
    runs = [run_test_tool(config, checkpoint, Path(work_dir) / f'bs{n}x{p}', n, cfg_options,
                          env=env, timeout=timeout, processes=p)
            for n, p in zip(batch_sizes, processes)]
    first, second = runs
    if 'coco/bbox_mAP' in first.metrics:
        from mmengine.config import Config
        path = Path(config) if Path(config).is_absolute() else REPO / config  # as the tool reads it
        test_cfg = Config.fromfile(str(path)).model.get('test_cfg') or {}
        return compare_detection_dumps(first.preds, second.preds, first.metrics['coco/bbox_mAP'],
                                       second.metrics['coco/bbox_mAP'], test_cfg.get('score_thr'))
    key = next((k for k in first.metrics if k.endswith('mIoU')), None)
    if key is None:
        raise ValueError(f'{config}: neither coco/bbox_mAP nor mIoU among the metrics '
                         f'{sorted(first.metrics)}; the comparison covers detectors and segmentors.')
    return compare_segmentation_dumps(first.preds, second.preds, first.metrics[key],
                                      second.metrics[key], key)


__all__ = ['BOX_ATOL', 'METRIC_ATOL', 'SCORE_ATOL', 'STAGE_RTOL', 'BatchInvarianceError',
           'Comparison', 'StageMeasurement', 'TestRun', 'accepts_img_shapes', 'build_backbone',
           'compare_detection_dumps', 'compare_segmentation_dumps', 'compare_test_runs',
           'measure_stages', 'relative_diff', 'run_test_tool', 'run_with_sizes', 'stage_table']
