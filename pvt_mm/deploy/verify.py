"""Compare an exported file with PyTorch on the same input, within fixed tolerances:
stage maps and logits (:data:`MAP_RTOL`), detections (:data:`BOX_ATOL`, :data:`SCORE_ATOL`),
segmentation labels (:data:`PIXEL_AGREEMENT`)."""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import DeployError
from .graphs import SegmentorGraph
from .retinanet import RetinaNetGraph
from .runner import ORTDetector, ORTRunner

#: max |diff| / max |ref| of backbone maps and classifier logits.
MAP_RTOL = 1e-4
#: Detections: boxes (pixels) and scores.
BOX_ATOL = 0.01
SCORE_ATOL = 1e-4
#: Semantic segmentation: share of pixels with the same label.
PIXEL_AGREEMENT = 0.9999


def image_batch(model: nn.Module, image: Union[str, Path], shape: Tuple[int, int],
                batch: int = 1) -> torch.Tensor:
    """A real input to compare (or time) on: ``image`` resized to ``shape`` and put through
    the model's own data preprocessor, ``batch`` times. Random pixels give an untrained-like
    picture on which a trained detector finds nothing, so a comparison there compares nothing.

    Raises:
        DeployError: ``image`` is not a readable image file.
    """
    import mmcv
    image_array = mmcv.imread(str(image)) if Path(image).is_file() else None
    if image_array is None:
        raise DeployError(f'--image {str(image)!r} is not a readable image file; give a '
                          'JPEG / PNG the model should find something in.')
    h, w = shape
    pixels = torch.from_numpy(mmcv.imresize(image_array, (w, h))).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[pixels] * batch), False)
    return data['inputs'].float()


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
        ``box`` (max |diff| in pixels), ``score`` (max |diff|), ``detections`` (in
        ``ref``), ``other_detections`` (in ``ort``), ``images``.
    """
    if len(ref) != len(ort):
        raise DeployError(f'{len(ref)} reference results against {len(ort)}: compare the '
                          'same images.')
    worst = dict(count_mismatch=0, label_mismatch=0, box=0.0, score=0.0, detections=0,
                 other_detections=0, images=len(ref))
    for a, b in zip(ref, ort):
        a, b = a.pred_instances, b.pred_instances
        worst['detections'] += len(a)
        worst['other_detections'] += len(b)
        if len(a) != len(b):
            worst['count_mismatch'] += 1
            continue
        if len(a) == 0:
            continue
        # Pair each reference box with the nearest unpaired box of its label: two boxes whose
        # scores differ by less than the tolerance may come out in either order.
        used = torch.zeros(len(b), dtype=torch.bool)
        for box, score, label in zip(a.bboxes, a.scores, a.labels):
            diff = (b.bboxes - box).abs().amax(1)
            diff[used | (b.labels != label)] = float('inf')
            j = int(diff.argmin())
            if torch.isinf(diff[j]):
                worst['label_mismatch'] += 1
                continue
            used[j] = True
            worst['box'] = max(worst['box'], float(diff[j]))
            worst['score'] = max(worst['score'], float((b.scores[j] - score).abs()))
    return worst


def detections_equal(worst: Dict[str, float]) -> bool:
    """Whether :func:`compare_detections`' result is within the tolerances, with at least
    one detection on each side: a comparison of nothing (no images, or no detections, as an
    untrained detector gives) is not equality."""
    return (worst['images'] > 0 and worst['detections'] > 0 and worst['other_detections'] > 0
            and worst['count_mismatch'] == 0 and worst['label_mismatch'] == 0
            and worst['box'] <= BOX_ATOL and worst['score'] <= SCORE_ATOL)


def detections_close(ref: Sequence, out: Sequence) -> Optional[str]:
    """Compare a detector graph's raw outputs (``dets (B, M, 5)``, ``labels (B, M)``, as
    numpy arrays) from two engines, order-insensitively among equal scores.

    Returns:
        ``None`` when every image has the same number of detections, the same labels,
        boxes within :data:`BOX_ATOL` and scores within :data:`SCORE_ATOL`, else what
        differs. (Both sides empty is agreement here: callers that need detections check
        the count.)
    """
    for i, (rd, rl, od, ol) in enumerate(zip(ref[0], ref[1], out[0], out[1])):
        rk, ok = rl >= 0, ol >= 0
        if rk.sum() != ok.sum():
            return f'image {i}: {int(rk.sum())} detections in PyTorch, {int(ok.sum())} in the file'
        if not rk.any():
            continue
        (rb, rs, rlab), (ob, os_, olab) = (
            canonical_order(torch.from_numpy(d[k, :4].copy()), torch.from_numpy(d[k, 4].copy()),
                            torch.from_numpy(lab[k].copy()))
            for d, lab, k in ((rd, rl, rk), (od, ol, ok)))
        if not torch.equal(rlab, olab):
            return f'image {i}: labels differ'
        box, score = float((rb - ob).abs().max()), float((rs - os_).abs().max())
        if box > BOX_ATOL or score > SCORE_ATOL:
            return (f'image {i}: boxes differ by {box:.3g} px (tolerance {BOX_ATOL}), scores by '
                    f'{score:.3g} ({SCORE_ATOL})')
    return None


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``max |out - ref| / max |ref|``; infinite when either side is empty or all zeros
    (nothing was compared)."""
    if ref.numel() == 0 or out.numel() == 0 or not ref.abs().max() > 0 or not out.abs().max() > 0:
        return float('inf')
    return float((out - ref).abs().max() / ref.abs().max())


def verify_onnx(graph: nn.Module, path: Union[str, Path],
                shapes: Sequence[Tuple[int, int]] = ((256, 320), ), batch: int = 2,
                seed: int = 0, images: Optional[torch.Tensor] = None) -> List[str]:
    """Run ``graph`` (from :func:`.export.build_graph`) in PyTorch and the file in ONNX
    Runtime on random images of each shape (or on ``images``, a pre-processed batch,
    instead); raise :class:`DeployError` beyond the tolerances, and for a detector when
    neither side detects anything (a comparison of nothing).

    Returns:
        One line per shape saying what was compared and the worst difference.
    """
    generator = torch.Generator().manual_seed(seed)
    lines = []
    detector = isinstance(graph, RetinaNetGraph)
    runner = ORTDetector(path) if detector else ORTRunner(path)
    given = images
    for shape in ([tuple(given.shape[2:])] if given is not None else shapes):
        images = given if given is not None else torch.randn(batch, 3, *shape, generator=generator)
        batch = images.shape[0]
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
            line = (f'{shape[0]}x{shape[1]}: {worst["detections"]} detections (PyTorch), '
                    f'{worst["other_detections"]} (ONNX Runtime), images with a '
                    f'different count {worst["count_mismatch"]}, labels differing '
                    f'{worst["label_mismatch"]}, max box diff {worst["box"]:.2g} px (tolerance '
                    f'{BOX_ATOL}), max score diff {worst["score"]:.2g} ({SCORE_ATOL})')
        else:
            # A backbone graph with img_shapes: images that fill the batch (the plain maps).
            extra = ((torch.tensor([list(images.shape[2:])] * batch, dtype=torch.float32), )
                     if getattr(graph, 'with_img_shapes', False) else ())
            with torch.no_grad():
                ref = graph(images, *extra)
            ref = ref if isinstance(ref, (tuple, list)) else (ref, )
            outs = [torch.from_numpy(o) for o in runner.run(images, *(e.numpy() for e in extra))]
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
        if detector and not (worst['detections'] and worst['other_detections']):
            raise DeployError(f'Nothing to compare at {line}: the detector found nothing on '
                              'these random images (untrained weights?). Verify with trained '
                              'weights (--checkpoint).')
        if not ok:
            raise DeployError('ONNX Runtime and PyTorch disagree beyond the tolerance at ' + line)
    return lines
