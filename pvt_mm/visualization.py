"""Draw ground truth and predictions of a COCO-format detection set into one PNG.

Ground truth is drawn as thin dashed white-on-black boxes, predictions as thick solid boxes
coloured by class with ``class score`` labels; only predictions at or above ``score_thr`` are
drawn, and the threshold is stated in the title. Predictions come from ``tools/test.py
--out preds.pkl`` (mmengine's ``DumpResults``: one dict per image with ``img_id`` and
``pred_instances``), boxes in original image coordinates.
"""
import json
import math
import os
from typing import List, Optional, Sequence

COLOURS = ['tab:red', 'tab:blue', 'tab:orange', 'tab:purple', 'tab:cyan', 'tab:olive']


def _label_categories(categories: List[dict], classes: Optional[Sequence[str]]) -> List[dict]:
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
    from mmengine.fileio import load
    from PIL import Image

    with open(ann_file) as f:
        coco = json.load(f)
    display = (coco.get('info') or {}).get('display_names', {})
    label_cats = _label_categories(coco['categories'], classes)
    names = [display.get(c['name'], c['name']) for c in label_cats]
    cat_name = {c['id']: display.get(c['name'], c['name']) for c in coco['categories']}
    # One distinct colour per class that has ground truth (then any other predicted class).
    label_ids = [c['id'] for c in label_cats]
    present = sorted({label_ids.index(a['category_id']) for a in coco['annotations']
                      if a['category_id'] in label_ids})
    colour_of = {label: COLOURS[k % len(COLOURS)] for k, label in enumerate(present)}
    preds = {int(p['img_id']): p['pred_instances'] for p in load(preds_file)}
    top = max((int(i['labels'].max()) for i in preds.values() if len(i['labels'])), default=-1)
    if top >= len(names):
        raise ValueError(f'{preds_file} has label {top} but {len(names)} classes are known; '
                         'pass --config (classes=) of the model that made the predictions')
    images = [img for img in sorted(coco['images'], key=lambda i: i['id'])
              if img['id'] in preds][:num]
    if not images:
        raise ValueError(f'no image of {ann_file} has a prediction in {preds_file}')
    if img_dir is None:
        img_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ann_file))),
                               os.path.basename(ann_file).split('_')[-1].split('.')[0])
    rows = math.ceil(len(images) / cols)
    cols = min(cols, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows + 0.6), squeeze=False)
    outline = [effects.withStroke(linewidth=3, foreground='black')]
    for ax in axes.flat[len(images):]:
        ax.axis('off')
    for ax, img in zip(axes.flat, images):
        ax.imshow(Image.open(os.path.join(img_dir, img['file_name'])).convert('RGB'))
        ax.set_xticks([])
        ax.set_yticks([])
        gts = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        for ann in gts:
            x, y, w, h = ann['bbox']
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, edgecolor='white',
                                       linewidth=1.2, linestyle=(0, (4, 3)),
                                       path_effects=[effects.withStroke(linewidth=2.4,
                                                                        foreground='black')]))
            ax.text(x + 2, y + h - 3, f'GT {cat_name[ann["category_id"]]}', fontsize=7,
                    color='white', path_effects=outline, va='bottom')
        inst = preds[img['id']]
        kept = 0
        # Lowest score first, so that where boxes of two classes overlap on one object, the
        # higher-scoring box and its label are drawn on top and stay readable.
        for score, box, label in sorted(zip(inst['scores'].tolist(), inst['bboxes'].tolist(),
                                            inst['labels'].tolist()), key=lambda p: p[0]):
            if score < score_thr:
                continue
            kept += 1
            colour = colour_of.setdefault(label, COLOURS[len(colour_of) % len(COLOURS)])
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor=colour, linewidth=3))
            ax.text(x0, y0 - 2, f'{names[label]} {score:.2f}', fontsize=8, color='white',
                    va='bottom', bbox=dict(facecolor=colour, edgecolor='none', pad=1.5))
        ax.set_title(f'image {img["id"]}: {len(gts)} objects, {kept} predictions',
                     fontsize=9)
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
