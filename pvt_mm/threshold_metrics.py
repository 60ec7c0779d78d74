"""What a detector's picture shows: precision, recall and boxes per object at one score threshold.

COCO AP averages over every score; a person looking at ``predictions.png`` sees only the
boxes at or above the drawing threshold. :func:`threshold_metrics` counts exactly those:

* per class, precision (drawn boxes of the class that found an object of the class) and
  recall (objects of the class found by a drawn box of the class);
* predictions per object: all drawn boxes / all ground-truth objects (1.0 = one box each;
  a second box of another class on an object raises it);
* objects found with the right class: the overall recall.

Matching is COCO's, per class and one-to-one: boxes of a class in descending score take the
unmatched object of the class they overlap most, if at IoU >= ``iou_thr``. Crowd annotations
are left out. :func:`load_coco_detections` reads the COCO json and ``tools/test.py --out``'s
pickle into the plain arrays :func:`threshold_metrics` takes.
"""
import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class Detections:
    """Boxes of one image: ``bboxes`` (N, 4) as x0, y0, x1, y1; ``labels`` (N,); ``scores``
    (N,) for predictions, None for ground truth."""

    bboxes: np.ndarray
    labels: np.ndarray
    scores: Optional[np.ndarray] = None


@dataclass
class ThresholdMetrics:
    """The counts and rates of :func:`threshold_metrics` (see the module docstring)."""

    score_thr: float
    iou_thr: float
    class_names: List[str]
    num_objects: List[int]      # per class
    num_predictions: List[int]  # per class, score >= score_thr
    num_found: List[int]        # per class: true positives

    @property
    def precision(self) -> List[Optional[float]]:
        """Per class; None where the class has no drawn box."""
        return [f / p if p else None for f, p in zip(self.num_found, self.num_predictions)]

    @property
    def recall(self) -> List[Optional[float]]:
        """Per class; None where the class has no object."""
        return [f / n if n else None for f, n in zip(self.num_found, self.num_objects)]

    @property
    def predictions_per_object(self) -> float:
        return sum(self.num_predictions) / max(sum(self.num_objects), 1)

    @property
    def found_right_class(self) -> float:
        """Share of all objects found by a drawn box of their class."""
        return sum(self.num_found) / max(sum(self.num_objects), 1)

    def lines(self) -> List[str]:
        """The summary as a person reads it: totals, then one precision / recall per class."""
        objects = sum(self.num_objects)

        def rate(value: Optional[float]) -> str:
            return '-' if value is None else f'{value:.2f}'

        per_class = '; '.join(
            f'{name} {rate(p)} / {rate(r)}'
            for name, p, r in zip(self.class_names, self.precision, self.recall))
        return [
            f'at score >= {self.score_thr:g} (the boxes drawn): {sum(self.num_predictions)} boxes '
            f'for {objects} objects = {self.predictions_per_object:.2f} per object; '
            f'{self.found_right_class:.1%} of objects found with the right class '
            f'(IoU >= {self.iou_thr:g})',
            f'precision / recall per class: {per_class}',
        ]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), both x0, y0, x1, y1."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(gt: Detections, pred: Detections, score_thr: float,
                iou_thr: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """COCO-style one-to-one matching of one image's drawn predictions to its objects.

    Returns:
        ``(kept, matched)``: the indices of the predictions with score >= ``score_thr``, and
        for each of them the index of the object it found (same class, IoU >= ``iou_thr``)
        or -1.
    """
    kept = np.flatnonzero(np.asarray(pred.scores) >= score_thr)
    kept = kept[np.argsort(-np.asarray(pred.scores)[kept], kind='stable')]
    matched = np.full(len(kept), -1)
    taken = np.zeros(len(gt.labels), dtype=bool)
    iou = box_iou(np.asarray(pred.bboxes)[kept], gt.bboxes)
    for k, index in enumerate(kept):
        candidates = (np.asarray(gt.labels) == pred.labels[index]) & ~taken & (iou[k] >= iou_thr)
        if candidates.any():
            best = int(np.argmax(np.where(candidates, iou[k], -1.0)))
            taken[best] = True
            matched[k] = best
    return kept, matched


def threshold_metrics(gts: Sequence[Detections], preds: Sequence[Detections],
                      class_names: Sequence[str], score_thr: float,
                      iou_thr: float = 0.5) -> ThresholdMetrics:
    """Count the drawn boxes of ``preds`` against ``gts`` (one entry per image, same order).

    Args:
        gts: Ground truth per image (labels index ``class_names``).
        preds: Predictions per image, with scores.
        class_names: Names of the labels, in label order.
        score_thr: Boxes with a score at or above it are counted (the drawing threshold).
        iou_thr: Overlap a box needs with an object of its class to find it.
    """
    if len(gts) != len(preds):
        raise ValueError(f'{len(gts)} images of ground truth but {len(preds)} of predictions')
    if not any(len(g.labels) for g in gts):
        raise ValueError('no ground-truth objects to count predictions against')
    num_classes = len(class_names)
    objects, predictions, found = (np.zeros(num_classes, dtype=int) for _ in range(3))
    for gt, pred in zip(gts, preds):
        labels = np.asarray(pred.labels)
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f'prediction label {int(labels.max())} outside the '
                             f'{num_classes} classes {list(class_names)}')
        kept, matched = match_image(gt, pred, score_thr, iou_thr)
        objects += np.bincount(np.asarray(gt.labels, dtype=int), minlength=num_classes)
        predictions += np.bincount(labels[kept].astype(int), minlength=num_classes)
        found += np.bincount(labels[kept][matched >= 0].astype(int), minlength=num_classes)
    return ThresholdMetrics(score_thr, iou_thr, list(class_names), objects.tolist(),
                            predictions.tolist(), found.tolist())


def label_categories(categories: List[dict], classes: Optional[Sequence[str]]) -> List[dict]:
    """The json's categories in the detector's label order.

    mmdet's CocoDataset numbers labels in the order of its class list: the dataset's
    ``metainfo['classes']`` when the config sets one (the shapes configs keep 3 classes),
    else COCO's categories in the json (ascending id).
    """
    if classes is None:
        return sorted(categories, key=lambda c: c['id'])
    by_name = {c['name']: c for c in categories}
    missing = [name for name in classes if name not in by_name]
    if missing:
        raise ValueError(f'classes {missing} are not categories of the annotation file; '
                         'pass the classes of the config that made the predictions')
    return [by_name[name] for name in classes]


def load_coco_detections(ann_file: str, preds_file: str,
                         classes: Optional[Sequence[str]] = None
                         ) -> Tuple[List[dict], List[Detections], List[Detections], List[str]]:
    """Read a COCO json and the predictions ``tools/test.py --out`` wrote for it.

    Args:
        ann_file: COCO json of the evaluated split.
        preds_file: ``tools/test.py --out`` pickle (one dict per image: ``img_id``,
            ``pred_instances`` with ``bboxes`` x0, y0, x1, y1 in original image coordinates,
            ``scores``, ``labels``).
        classes: The test dataset's ``metainfo['classes']`` (label order), or None for all
            of the json's categories.

    Returns:
        ``(images, gts, preds, names)``: the json's images that have predictions (by id),
        their ground truth and predictions, and the label names (the json's
        ``info.display_names`` where it has them, e.g. 'circle' for 'sports ball').
    """
    from mmengine.fileio import load

    with open(ann_file) as f:
        coco = json.load(f)
    display = (coco.get('info') or {}).get('display_names', {})
    cats = label_categories(coco['categories'], classes)
    label_of = {c['id']: k for k, c in enumerate(cats)}
    by_image: Dict[int, dict] = {int(p['img_id']): p['pred_instances'] for p in load(preds_file)}
    images = [img for img in sorted(coco['images'], key=lambda i: i['id']) if img['id'] in by_image]
    if not images:
        raise ValueError(f'no image of {ann_file} has a prediction in {preds_file}')
    gts, preds = [], []
    for img in images:
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']
                and not a.get('iscrowd') and a['category_id'] in label_of]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)],
                         dtype=np.float64).reshape(-1, 4)
        gts.append(Detections(boxes, np.array([label_of[a['category_id']] for a in anns],
                                              dtype=int)))
        inst = by_image[img['id']]
        preds.append(Detections(*(np.asarray(inst[key]) for key in ('bboxes', 'labels', 'scores'))))
    return images, gts, preds, [display.get(c['name'], c['name']) for c in cats]


__all__ = ['Detections', 'ThresholdMetrics', 'box_iou', 'label_categories',
           'load_coco_detections', 'match_image', 'threshold_metrics']
