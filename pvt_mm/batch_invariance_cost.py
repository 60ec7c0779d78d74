"""What batch invariance costs: the padding-aware model timed against the plain one, interleaved.

Three cases, each a pair of models with the same weights called round-robin (order rotated
every repeat, so machine noise hits both alike; :func:`pvt_mm.timing.interleaved`):

* **backbone, batch 1, no padding** (issue 27's budget: at most 5 %): ``PVT(batch_invariant=
  True)`` told the image's size against ``batch_invariant=False``;
* **backbone, a mixed-size batch**: the same pair on a zero-padded batch, the invariant one
  told each image's size (it masks), the plain one not (it reads the padding);
* **detector** (a config's whole ``test_step``: data preprocessor, forward, post-processing):
  the model with :func:`~pvt_mm.models.batch_invariance.enable_batch_invariance`'s hooks
  (backbone, neck and head masks) against the same model with the backbone's switch off
  and no hooks, at batch 1 and on a mixed-size batch.

Each case can also be timed as a training step (``train=True``): forward in train mode and
backward (the backbone: of the mean of its maps; the detector: of its losses on random boxes).

Before timing, each pair's outputs are compared where they must agree (batch 1: the
invariant path with nothing padded is the old one), so a broken pair is never timed.
``tools/analysis/benchmark_batch_invariance.py`` is the command line.
"""
import copy
import logging
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from .batch_invariance_check import build_backbone, run_with_sizes
from .models.padding import SIZE_DIVISOR, batch_valid_sizes
from .timing import interleaved

HW = Tuple[int, int]
#: The two models of every pair, in the order the tables show them.
INVARIANT, PLAIN = 'invariant', 'plain'


@dataclass
class CostRow:
    """One case: the median seconds per call of each model of the pair."""

    case: str
    inputs: str
    seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Time of the invariant model / time of the plain one."""
        return self.seconds[INVARIANT] / self.seconds[PLAIN]


def random_padded_batch(sizes: Sequence[HW], seed: int = 0, divisor: int = SIZE_DIVISOR) -> Tensor:
    """Random images of ``sizes`` zero-padded at the bottom / right into one batch whose
    size is the largest of each side rounded up to ``divisor`` (as mmdet's preprocessor)."""
    gen = torch.Generator().manual_seed(seed)
    h = -(-max(s[0] for s in sizes) // divisor) * divisor
    w = -(-max(s[1] for s in sizes) // divisor) * divisor
    x = torch.zeros(len(sizes), 3, h, w)
    for i, (ih, iw) in enumerate(sizes):
        x[i, :, :ih, :iw] = torch.randn(3, ih, iw, generator=gen)
    return x


def _time_pair(calls: Dict[str, Callable[[], None]], warmup: int, repeat: int,
               case: str, inputs: str) -> CostRow:
    times = interleaved(calls, warmup, repeat, 'cpu')
    return CostRow(case, inputs, {name: statistics.median(t) for name, t in times.items()})


def _fmt_sizes(sizes: Sequence[HW]) -> str:
    return ', '.join(f'{h}x{w}' for h, w in sizes)


def _train_step(model: torch.nn.Module, x: Tensor, sizes: Sequence[HW]) -> None:
    """Forward in train mode told the sizes, and backward of the mean of every output."""
    with batch_valid_sizes(sizes):
        outs = model(x, img_shapes=[tuple(s) for s in sizes])
    sum(o.float().mean() for o in outs).backward()


def backbone_cost(arch: str, shape: HW, mixed: Sequence[HW], warmup: int = 2,
                  repeat: int = 10, seed: int = 0, train: bool = False) -> List[CostRow]:
    """The backbone's two cases for one preset (and with ``train`` each as a training step).

    Args:
        arch: A row of the arch table.
        shape: The batch-1 image ``(H, W)`` (a multiple of 32: nothing padded).
        mixed: The sizes of the mixed batch's images.
        warmup: Untimed rounds first.
        repeat: Timed rounds.
        seed: Seed of the weights and images.
        train: Also time a training step (forward in train mode + backward) of each case.

    Raises:
        AssertionError: at batch 1 the two backbones' maps are not equal.
    """
    models = {INVARIANT: build_backbone(arch, seed, batch_invariant=True),
              PLAIN: build_backbone(arch, seed, batch_invariant=False)}
    rows = []
    for label, sizes in ((f'{arch} backbone, batch 1', [tuple(shape)]),
                         (f'{arch} backbone, batch {len(mixed)} mixed', list(mixed))):
        x = random_padded_batch(sizes, seed)
        outs = {name: run_with_sizes(m, x, sizes) for name, m in models.items()}
        if len(sizes) == 1 and not (outs[INVARIANT] and all(
                torch.equal(a, b) for a, b in zip(outs[INVARIANT], outs[PLAIN]))):
            raise AssertionError(f'{label}: the invariant backbone with nothing padded differs '
                                 'from the plain one; fix that before timing')
        inputs = f'{_fmt_sizes(sizes)} in {x.shape[2]}x{x.shape[3]}'
        calls = {name: (lambda m=m: run_with_sizes(m, x, sizes)) for name, m in models.items()}
        rows.append(_time_pair(calls, warmup, repeat, label, inputs))
        if train:
            for m in models.values():
                m.train()
            calls = {name: (lambda m=m: _train_step(m, x, sizes)) for name, m in models.items()}
            rows.append(_time_pair(calls, warmup, repeat, f'{label}, training step', inputs))
            for m in models.values():
                m.eval().zero_grad(set_to_none=True)
    return rows


def _detector_batch(sizes: Sequence[HW], seed: int, num_classes: int) -> dict:
    """A batch of uint8 images of ``sizes`` with their mmdet metadata and, for a training
    step, two random ground-truth boxes each."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
              for h, w in sizes]
    samples = []
    for h, w in sizes:
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        corner = torch.rand(2, 2, generator=gen) * torch.tensor([w / 2, h / 2])
        extent = (0.2 + 0.3 * torch.rand(2, 2, generator=gen)) * torch.tensor([w, h])
        sample.gt_instances = InstanceData(
            bboxes=torch.cat((corner, corner + extent), 1),
            labels=torch.randint(0, num_classes, (2,), generator=gen))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _detector_train_step(model: torch.nn.Module, data: dict) -> None:
    """The data preprocessor in training mode, the losses, and their backward."""
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    sum(v.sum() if isinstance(v, Tensor) else sum(t.sum() for t in v)
        for k, v in losses.items() if 'loss' in k).backward()


def detector_cost(config: str, shape: HW, mixed: Sequence[HW], warmup: int = 2,
                  repeat: int = 10, seed: int = 0, train: bool = False) -> List[CostRow]:
    """The whole detector's two cases (``test_step``, random weights, eval mode; with
    ``train`` each also as a training step: preprocessing, losses and backward).

    Args:
        config: An mmdet config of a pvt_mm detector.
        shape: The batch-1 image ``(H, W)``.
        mixed: The sizes of the mixed batch's images.
        warmup: Untimed rounds first.
        repeat: Timed rounds.
        seed: Seed of the weights and images.
        train: Also time a training step of each case.

    Raises:
        AssertionError: at batch 1 the two detectors' detections are not equal.
    """
    from .config import build_from_config
    from .models.batch_invariance import enable_batch_invariance
    torch.manual_seed(seed)
    # Score threshold 0: random weights score ~0.01, and the check below needs detections.
    plain, _ = build_from_config(config, {'model.backbone.batch_invariant': False,
                                          'model.test_cfg.score_thr': 0.0}, with_weights=False)
    logging.disable(logging.INFO)  # mmengine logs every parameter's initialisation
    try:
        plain.init_weights()
    finally:
        logging.disable(logging.NOTSET)
    invariant = copy.deepcopy(plain)
    invariant.backbone.batch_invariant = True
    enable_batch_invariance(invariant)
    models = {INVARIANT: invariant.eval(), PLAIN: plain.eval()}
    name = config.rsplit('/', 1)[-1].rsplit('.', 1)[0]
    rows = []
    for label, sizes in ((f'{name}, batch 1', [tuple(shape)]),
                         (f'{name}, batch {len(mixed)} mixed', list(mixed))):
        data = _detector_batch(sizes, seed, getattr(plain.bbox_head, 'num_classes', 1))

        def call(model: torch.nn.Module, data: dict = data) -> list:
            with torch.no_grad():
                return model.test_step(data)

        if len(sizes) == 1:
            a, b = (call(m)[0].pred_instances for m in models.values())
            if len(a) == 0 or not (torch.equal(a.bboxes, b.bboxes)
                                   and torch.equal(a.scores, b.scores)):
                raise AssertionError(f'{label}: the invariant detector with nothing padded '
                                     f'differs from the plain one ({len(a)} vs {len(b)} '
                                     'detections; none is a failure too); fix that before timing')
        calls = {n: (lambda m=m: call(m)) for n, m in models.items()}
        rows.append(_time_pair(calls, warmup, repeat, label, _fmt_sizes(sizes)))
        if train:
            for m in models.values():
                m.train()
            calls = {n: (lambda m=m: _detector_train_step(m, data)) for n, m in models.items()}
            rows.append(_time_pair(calls, warmup, repeat, f'{label}, training step',
                                   _fmt_sizes(sizes)))
            for m in models.values():
                m.eval().zero_grad(set_to_none=True)
    return rows


def cost_table(rows: Sequence[CostRow]) -> str:
    """Markdown: each case's medians and the invariant / plain ratio."""
    lines = ['| case | images | invariant (ms) | plain (ms) | invariant / plain |',
             '|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r.case} | {r.inputs} | {r.seconds[INVARIANT] * 1e3:.1f} | '
                     f'{r.seconds[PLAIN] * 1e3:.1f} | {r.ratio:.3f} |')
    return '\n'.join(lines)


__all__ = ['CostRow', 'backbone_cost', 'detector_cost', 'cost_table', 'random_padded_batch',
           'INVARIANT', 'PLAIN']
