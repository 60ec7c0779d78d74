"""Compare an exported file with PyTorch on the same input (the issue's tolerances)."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import nn

from .graphs import BackboneGraph, ClassifierGraph, DeployError, RetinaNetGraph, SegmentorGraph
from .runner import ORTDetector, ORTRunner

#: max |diff| / max |ref| of backbone maps and classifier logits.
MAP_RTOL = 1e-4
#: Detections: boxes (pixels) and scores.
BOX_ATOL = 0.01
SCORE_ATOL = 1e-4
#: Semantic segmentation: share of pixels with the same label.
PIXEL_AGREEMENT = 0.9999


def canonical_order(bboxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor):
    """One image's detections in an order that both engines agree on: best first by score
    rounded to 1e-4, ties by label, then box corner. (Scores equal to float precision -- an
    untrained head gives thousands -- leave NMS's output order to the engine.)"""
    import numpy as np
    b, s, lb = bboxes.cpu().double().numpy(), scores.cpu().double().numpy(), labels.cpu().numpy()
    order = np.lexsort((np.round(b[:, 1], 1), np.round(b[:, 0], 1), lb, -np.round(s, 4)))
    order = torch.from_numpy(order)
    return bboxes.cpu()[order], scores.cpu()[order], labels.cpu()[order]


def compare_detections(ref: list, ort: list) -> Dict[str, float]:
    """Worst differences between two lists of mmdet results (same images, same order).

    Returns:
        ``count_mismatch`` (images whose number of boxes differs), ``label_mismatch``,
        ``box`` (max |diff| in pixels), ``score`` (max |diff|), ``detections``.
    """
    worst = dict(count_mismatch=0, label_mismatch=0, box=0.0, score=0.0, detections=0)
    for a, b in zip(ref, ort):
        a, b = a.pred_instances, b.pred_instances
        worst['detections'] += len(a)
        if len(a) != len(b):
            worst['count_mismatch'] += 1
            continue
        if len(a) == 0:
            continue
        (ab, as_, al), (bb, bs, bl) = (canonical_order(x.bboxes, x.scores, x.labels)
                                       for x in (a, b))
        worst['label_mismatch'] += int((al != bl).sum())
        worst['box'] = max(worst['box'], float((ab - bb).abs().max()))
        worst['score'] = max(worst['score'], float((as_ - bs).abs().max()))
    return worst


def detections_equal(worst: Dict[str, float]) -> bool:
    """Whether :func:`compare_detections`' result is within the tolerances."""
    return (worst['count_mismatch'] == 0 and worst['label_mismatch'] == 0
            and worst['box'] <= BOX_ATOL and worst['score'] <= SCORE_ATOL)


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``max |out - ref| / max |ref|``."""
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def verify_onnx(graph: nn.Module, path: Union[str, Path],
                shapes: Sequence[Tuple[int, int]] = ((256, 320), ), batch: int = 2,
                seed: int = 0) -> List[str]:
    """Run ``graph`` (from :func:`.export.build_graph`) in PyTorch and the file in ONNX
    Runtime on random images of each shape; raise :class:`DeployError` beyond the
    tolerances.

    Returns:
        One line per shape saying what was compared and the worst difference.
    """
    generator = torch.Generator().manual_seed(seed)
    lines = []
    detector = isinstance(graph, RetinaNetGraph)
    runner = ORTDetector(path) if detector else ORTRunner(path)
    for shape in shapes:
        images = torch.randn(batch, 3, *shape, generator=generator)
        if detector:
            from mmdet.structures import DetDataSample
            samples = [DetDataSample(metainfo=dict(img_shape=tuple(shape), batch_input_shape=tuple(shape)))
                       for _ in range(batch)]
            with torch.no_grad():
                ref = graph.model.predict(images, samples, rescale=False)
            ort = runner.predict(images, [DetDataSample(metainfo=s.metainfo) for s in samples],
                                 rescale=False)
            worst = compare_detections(ref, ort)
            ok = detections_equal(worst)
            line = (f'{shape[0]}x{shape[1]}: {worst["detections"]} detections, images with a '
                    f'different count {worst["count_mismatch"]}, labels differing '
                    f'{worst["label_mismatch"]}, max box diff {worst["box"]:.2g} px (tolerance '
                    f'{BOX_ATOL}), max score diff {worst["score"]:.2g} ({SCORE_ATOL})')
        else:
            with torch.no_grad():
                ref = graph(images)
            ref = ref if isinstance(ref, (tuple, list)) else (ref, )
            outs = [torch.from_numpy(o) for o in runner.run(images)]
            if isinstance(graph, SegmentorGraph):
                agree = float((ref[0].argmax(1) == outs[0].argmax(1)).float().mean())
                ok = agree >= PIXEL_AGREEMENT
                line = (f'{shape[0]}x{shape[1]}: same label at {agree:.6%} of pixels '
                        f'(needed {PIXEL_AGREEMENT:.2%})')
            else:
                errors = [relative_error(r, o) for r, o in zip(ref, outs)]
                ok = max(errors) <= MAP_RTOL and all(r.shape == o.shape for r, o in zip(ref, outs))
                line = (f'{shape[0]}x{shape[1]}: max relative error per output '
                        f'{", ".join(f"{e:.2g}" for e in errors)} (tolerance {MAP_RTOL})')
        lines.append(line)
        if not ok:
            raise DeployError('ONNX Runtime and PyTorch disagree beyond the tolerance at ' + line)
    return lines
