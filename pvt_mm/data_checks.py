"""Checks of a config's data sets before a run starts: missing files fail early with a
clear message (:func:`check_datasets`), and COCO annotations mmdet will drop are counted
and reported (:func:`check_coco_annotations`).

mmdet has no public function that says why an annotation is dropped: its rules live inside
``CocoDataset.parse_data_info``, which returns only the survivors and needs a loaded
dataset (pycocotools' index, a second read of the whole json). So the rules are restated
here, in mmdet's order, and tests/test_reliability.py checks the counts against what
``CocoDataset`` itself keeps from the same file.
"""
import os


def _dataset_cfgs(dataset: dict):
    """Yield the leaf dataset configs of a (possibly wrapped) dataset config."""
    if not isinstance(dataset, dict):
        return
    if 'datasets' in dataset:  # ConcatDataset
        for sub in dataset['datasets']:
            yield from _dataset_cfgs(sub)
    elif 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
        yield from _dataset_cfgs(dataset['dataset'])
    else:
        yield dataset


def _resolve(root: str, path: str) -> str:
    return path if not root or os.path.isabs(path) or path.startswith(root) else os.path.join(root, path)


def check_coco_annotations(ann_file: str) -> dict:
    """Count the annotations mmdet will skip in a COCO json, and warn once per kind.

    mmdet (``CocoDataset.parse_data_info``, 3.x) silently drops, in this order: annotations
    flagged ``ignore``; boxes with no area inside their image (zero-size ones too); boxes
    narrower or shorter than 1 pixel, or with ``area <= 0``; categories not in the dataset.
    Annotations of images missing from ``images`` are never read. Each dropped annotation
    is counted under the first rule that drops it, as mmdet applies them, except ``ignore``
    (deliberate, so not warned about).

    Args:
        ann_file: A COCO-format json.

    Returns:
        ``{kind: count}`` for the problems found.
    """
    import json

    from mmengine.logging import print_log
    with open(ann_file) as f:
        coco = json.load(f)
    images = {img['id']: img for img in coco.get('images', [])}
    categories = {cat['id'] for cat in coco.get('categories', [])}
    problems = {'box with no area inside its image': [],
                'box under 1 pixel wide or high, or of zero area': [],
                'unknown category': [], 'unknown image': []}
    for ann in coco.get('annotations', []):
        img = images.get(ann.get('image_id'))
        if img is None:
            problems['unknown image'].append(ann.get('id'))
            continue
        if ann.get('ignore', False):
            continue
        x, y, w, h = (ann.get('bbox') or [0, 0, 0, 0])[:4]
        # mmdet's own tests, in its order (the first that fails drops the annotation).
        inter_w = max(0, min(x + w, img['width']) - max(x, 0))
        inter_h = max(0, min(y + h, img['height']) - max(y, 0))
        if inter_w * inter_h == 0:
            problems['box with no area inside its image'].append(ann.get('id'))
        elif ann.get('area', 1) <= 0 or w < 1 or h < 1:
            problems['box under 1 pixel wide or high, or of zero area'].append(ann.get('id'))
        elif ann.get('category_id') not in categories:
            problems['unknown category'].append(ann.get('id'))
    found = {kind: ids for kind, ids in problems.items() if ids}
    for kind, ids in found.items():
        print_log(f'{ann_file}: {len(ids)} annotation(s) with {kind} will be skipped '
                  f'(annotation ids {ids[:5]}{" ..." if len(ids) > 5 else ""}).',
                  logger='current', level=30)
    return {kind: len(ids) for kind, ids in found.items()}


def check_datasets(cfg, splits=('train', 'val', 'test')) -> None:
    """Fail early with a clear message when a dataset's files are missing, and warn about
    COCO annotations that will be skipped.

    Raises:
        FileNotFoundError: an annotation file or image folder that does not exist.
    """
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset in _dataset_cfgs(loader.get('dataset')):
            root = dataset.get('data_root') or ''
            if root and not os.path.isdir(root):
                raise FileNotFoundError(
                    f'{split} dataset: data_root {root!r} does not exist. Prepare the data as the '
                    'README describes, or point data_root at it (e.g. --cfg-options '
                    f'{split}_dataloader.dataset.data_root=PATH).')
            ann_file = dataset.get('ann_file')
            if ann_file:
                path = _resolve(root, ann_file)
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f'{split} dataset: annotation file {path!r} does not exist '
                        f'(data_root={root!r}, ann_file={ann_file!r}).')
                if split != 'test' and path.endswith('.json') and 'Coco' in str(dataset.get('type')):
                    check_coco_annotations(path)
            prefixes = dataset.get('data_prefix') or {}
            for prefix in ([prefixes] if isinstance(prefixes, str) else prefixes.values()):
                folder = _resolve(root, prefix) if isinstance(prefix, str) and prefix else None
                if folder and not os.path.exists(folder):
                    raise FileNotFoundError(f'{split} dataset: image folder {folder!r} does not exist '
                                            f'(data_root={root!r}).')


__all__ = ['check_datasets', 'check_coco_annotations']
