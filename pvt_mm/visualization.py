"""Draw ground truth and predictions of a COCO-format detection set into one PNG.

Ground truth is drawn as thin dashed white-on-black boxes, predictions as thick solid boxes
coloured by class with ``class score`` labels; only predictions at or above ``score_thr`` are
drawn, and the threshold is stated in the title. Predictions come from ``tools/test.py
--out preds.pkl`` (mmengine's ``DumpResults``: one dict per image with ``img_id`` and
``pred_instances``), boxes in original image coordinates. Each image's title counts its
objects, the boxes drawn and the objects they found with the right class (matched as in
:mod:`pvt_mm.threshold_metrics`).
"""
import math
import os
from typing import Optional, Sequence

from .threshold_metrics import load_coco_detections, match_image

COLOURS = ['tab:red', 'tab:blue', 'tab:orange', 'tab:purple', 'tab:cyan', 'tab:olive']


def draw_detections(ann_file: str, preds_file: str, out: str, num: int = 4, cols: int = 2,
                    score_thr: float = 0.3, img_dir: Optional[str] = None,
                    title: str = '', classes: Optional[Sequence[str]] = None) -> str:
    """Draw the first ``num`` images of ``ann_file`` with their ground truth and the
    predictions of ``preds_file`` at score >= ``score_thr``; write ``out`` (PNG).

    ``classes`` names the predicted labels in order (the dataset's ``metainfo['classes']``
    of the config that made the predictions); None means all of the json's categories.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.patheffects as effects
    from PIL import Image

    images, gts, preds, names = load_coco_detections(ann_file, preds_file, classes)
    # One distinct colour per class that has ground truth (then any other predicted class).
    present = sorted({int(label) for gt in gts for label in gt.labels})
    colour_of = {label: COLOURS[k % len(COLOURS)] for k, label in enumerate(present)}
    top = max((int(p.labels.max()) for p in preds if len(p.labels)), default=-1)
    if top >= len(names):
        raise ValueError(f'{preds_file} has label {top} but {len(names)} classes are known; '
                         'pass --config (classes=) of the model that made the predictions')
    shown = list(zip(images, gts, preds))[:num]
    if img_dir is None:
        img_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ann_file))),
                               os.path.basename(ann_file).split('_')[-1].split('.')[0])
    rows = math.ceil(len(shown) / cols)
    cols = min(cols, len(shown))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows + 0.6), squeeze=False)
    outline = [effects.withStroke(linewidth=3, foreground='black')]
    for ax in axes.flat[len(shown):]:
        ax.axis('off')
    for ax, (img, gt, pred) in zip(axes.flat, shown):
        ax.imshow(Image.open(os.path.join(img_dir, img['file_name'])).convert('RGB'))
        ax.set_xticks([])
        ax.set_yticks([])
        for (x0, y0, x1, y1), label in zip(gt.bboxes.tolist(), gt.labels.tolist()):
            x, y, w, h = x0, y0, x1 - x0, y1 - y0
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, edgecolor='white',
                                       linewidth=1.2, linestyle=(0, (4, 3)),
                                       path_effects=[effects.withStroke(linewidth=2.4,
                                                                        foreground='black')]))
            ax.text(x + 2, y + h - 3, f'GT {names[label]}', fontsize=7,
                    color='white', path_effects=outline, va='bottom')
        kept, matched = match_image(gt, pred, score_thr)
        # Lowest score first, so that where boxes of two classes overlap on one object, the
        # higher-scoring box and its label are drawn on top and stay readable.
        for index in kept[::-1]:
            score, box, label = (float(pred.scores[index]), pred.bboxes[index].tolist(),
                                 int(pred.labels[index]))
            colour = colour_of.setdefault(label, COLOURS[len(colour_of) % len(COLOURS)])
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor=colour, linewidth=3))
            ax.text(x0, y0 - 2, f'{names[label]} {score:.2f}', fontsize=8, color='white',
                    va='bottom', bbox=dict(facecolor=colour, edgecolor='none', pad=1.5))
        ax.set_title(f'image {img["id"]}: {len(gt.labels)} objects, {len(kept)} boxes, '
                     f'{int((matched >= 0).sum())} found with the right class', fontsize=9)
    fig.suptitle((title + '\n' if title else '') +
                 f'thick solid = prediction (score >= {score_thr:g}), '
                 'thin dashed = ground truth', fontsize=10)
    fig.tight_layout()
    tmp = out + '.tmp.png'
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:  # no partial picture left behind
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return out
