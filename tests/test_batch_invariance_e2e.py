"""Batch invariance (issue 27): an image gets the same result alone and padded in a batch.

The measurements (:mod:`pvt_mm.batch_invariance_check`, ``tools/analysis/batch_invariance.py``)
are tested for what they can tell: a padded batch whose backbone is not told the valid
sizes differs, a batch that pads nothing agrees, and a comparison of nothing fails.

The proof itself: every preset's stage maps, ``tools/test.py``'s detections and COCO AP at
``test_dataloader.batch_size=1`` against ``=4`` on a mixed-size set, and Semantic FPN's label
maps and mIoU at ``=1`` against ``=2`` on a mixed-size set, with the old behaviour
(``batch_invariant=False``, no hook) shown to fail the same checks.
"""
import copy
import json

import pytest
import torch

from pvt_mm.batch_invariance_check import (STAGE_RTOL, BatchInvarianceError, build_backbone,
                                           compare_detection_dumps, compare_segmentation_dumps,
                                           compare_test_runs, measure_stages, run_test_tool,
                                           stage_table)
from pvt_mm.models.backbones.archs import rows

from .conftest import (SEG_TINY_CONFIG, ade_options, cpu_only, no_worker_options, run_tool,
                       shapes_options)

MAIN_JOB_CONFIG = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
# Small sizes: a 64x96 image, in a batch of its own padded size and in a larger one.
IMAGE, OWN, LARGER = (64, 96), (64, 96), (96, 128)


def test_stage_measurement_sees_padding_and_agrees_without_it():
    """Withheld sizes (a padded batch as it ran before issue 27): the image's region of every
    stage differs by > 1e-3; in a batch of its own size (nothing padded) by float noise only."""
    backbone = build_backbone('b0')
    own, larger = measure_stages(backbone, IMAGE, [OWN, LARGER], 'b0', tell_sizes=False)
    assert max(own.diffs) <= STAGE_RTOL, own
    assert len(larger.diffs) == 4 and min(larger.diffs) > 1e-3, larger
    table = stage_table({'b0': [own, larger]})
    assert table.splitlines()[0] == '| backbone | 64x96 in 64x96 | 64x96 in 96x128 |'


def test_tool_prints_the_table(tmp_path):
    out = tmp_path / 'table.md'
    result = run_tool(['tools/analysis/batch_invariance.py', '--archs', 'tiny', '--image', '64x96',
                       '--batch', '64x96', '96x128', '--withhold-sizes', '--out', out],
                      timeout=300)
    assert '| tiny | ' in result.stdout and out.read_text().strip() == result.stdout.strip()
    bad = run_tool(['tools/analysis/batch_invariance.py', '--archs', 'tiny', '--image', '64x96',
                    '--batch', '32x32'], check=False, timeout=300)
    assert bad.returncode == 2 and 'error: batch size 32x32 is smaller' in bad.stderr


@pytest.mark.parametrize('arch', [row.name for row in rows() if not row.heavy])
def test_every_preset_gives_each_image_its_own_stage_maps(arch):
    """Issue 27's first proof, through the measuring tool's code: told the valid sizes,
    each stage map of the image in a mixed-size batch equals its map alone within 1e-5
    relative (fp32, CPU). The heavy presets (over 60 M parameters) get only the suite's
    cheap checks; the backbone's own tests cover every preset."""
    backbone = build_backbone(arch)
    for measurement in measure_stages(backbone, IMAGE, [OWN, LARGER], arch):
        if max(measurement.diffs) > STAGE_RTOL:
            raise BatchInvarianceError(f'{arch}: {measurement}')


def _dump(boxes_per_image):
    return [dict(img_id=i, pred_instances=dict(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.linspace(0.9, 0.5, len(boxes)), labels=torch.zeros(len(boxes), dtype=torch.long)))
        for i, boxes in enumerate(boxes_per_image)]


def test_detection_comparison_fails_on_any_difference_and_on_nothing():
    a = _dump([[[0, 0, 10, 10], [20, 20, 40, 40]], [[5, 5, 15, 15]]])
    assert compare_detection_dumps(a, copy.deepcopy(a), 0.5, 0.5).equal
    # The same boxes in another order (near-equal scores): paired by box, still equal.
    swapped = copy.deepcopy(a)
    for key in ('bboxes', 'scores'):
        swapped[0]['pred_instances'][key] = swapped[0]['pred_instances'][key].flip(0)
    assert compare_detection_dumps(a, swapped, 0.5, 0.5).equal
    cases = {'box': lambda d: d[0]['pred_instances']['bboxes'].__setitem__((0, 0), 0.02),
             'score': lambda d: d[1]['pred_instances']['scores'].__setitem__(0, 0.9002),
             'label': lambda d: d[1]['pred_instances']['labels'].__setitem__(0, 2)}
    for name, change in cases.items():
        b = copy.deepcopy(a)
        change(b)
        comparison = compare_detection_dumps(a, b, 0.5, 0.5)
        assert not comparison.equal, name
        with pytest.raises(BatchInvarianceError):
            comparison.check()
    assert not compare_detection_dumps(a, a[:1], 0.5, 0.5).equal  # an image missing
    assert not compare_detection_dumps(a, a, 0.5, 0.502).equal  # the AP
    empty = _dump([[], []])
    assert 'nothing to compare' in compare_detection_dumps(empty, empty, 0.0, 0.0).summary()


def test_segmentation_comparison_fails_on_one_pixel_and_on_nothing():
    a = [dict(img_path=f'{i}.jpg', pred_sem_seg=dict(data=torch.zeros(1, 4, 6, dtype=torch.long)))
         for i in range(2)]
    assert compare_segmentation_dumps(a, copy.deepcopy(a), 0.3, 0.3).equal
    b = copy.deepcopy(a)
    b[1]['pred_sem_seg']['data'][0, 3, 5] = 7
    assert '1 of 48 pixels (1 images)' in compare_segmentation_dumps(a, b, 0.3, 0.3).summary()
    # 1 in 10,000 pixels may flip (a tie of the two best logits within float rounding).
    big = [dict(img_path=f'{i}.jpg', pred_sem_seg=dict(data=torch.zeros(1, 100, 100,
                                                                       dtype=torch.long)))
           for i in range(2)]
    flipped = copy.deepcopy(big)
    flipped[0]['pred_sem_seg']['data'][0, 0, :2] = 3
    assert compare_segmentation_dumps(big, flipped, 0.3, 0.3).equal
    flipped[1]['pred_sem_seg']['data'][0, 5, 5] = 3
    assert not compare_segmentation_dumps(big, flipped, 0.3, 0.3).equal
    assert not compare_segmentation_dumps(a, a, 0.3, 0.302).equal
    assert not compare_segmentation_dumps([], [], 0.3, 0.3).equal


@pytest.fixture(scope='module')
def mixed_shapes_root(tmp_path_factory):
    """12 held-out and 4 training shapes images, each of its own size (160-448 px per side)."""
    root = tmp_path_factory.mktemp('data') / 'shapes_mixed'
    run_tool(['tools/misc/make_shapes_coco.py', '--out', root, '--train', '4', '--val', '12',
              '--mixed-sizes', '160', '448'])
    return root


@pytest.mark.parametrize('split, count', [('val', 12), ('train', 4)])
def test_mixed_size_set_has_images_of_many_sizes(mixed_shapes_root, split, count):
    """--mixed-sizes gives each image its own size, its boxes inside it: the held-out images,
    and the training images too (training on them pads the batches, docs/batch_invariance.md's
    "Training with it")."""
    data = json.loads(
        (mixed_shapes_root / 'annotations' / f'instances_{split}2017.json').read_text())
    sizes = {(img['width'], img['height']) for img in data['images']}
    assert len(sizes) == count and all(160 <= s <= 448 for size in sizes for s in size)
    assert data['info']['mixed_sizes'] == [160, 448]
    size_of = {img['id']: (img['width'], img['height']) for img in data['images']}
    assert data['annotations']
    for ann in data['annotations']:
        x, y, w, h = ann['bbox']
        width, height = size_of[ann['image_id']]
        assert 0 <= x and 0 <= y and x + w <= width + 0.01 and y + h <= height + 0.01


def test_main_job_detections_same_at_batch_1_and_4(main_job, mixed_shapes_root, tmp_path):
    """Issue 27's second proof, through the user's path: tools/test.py with the main job's
    RetinaNet on a mixed-size set gives the same detections (count, labels, boxes within
    0.01 px, scores within 1e-4) and COCO AP at test_dataloader.batch_size=1 and =4."""
    work, result = main_job
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ckpt = sorted(work.glob('epoch_*.pth'))[-1]
    comparison = compare_test_runs(MAIN_JOB_CONFIG, str(ckpt), tmp_path, (1, 4),
                                   shapes_options(mixed_shapes_root) + no_worker_options(),
                                   env=cpu_only(dict(OMP_NUM_THREADS='1')), timeout=600)
    assert comparison.images == 12 and min(comparison.detections) > 0, comparison.summary()
    comparison.check()


def test_main_job_detections_same_alone_and_in_dist_test_batches(main_job, mixed_shapes_root,
                                                                  tmp_path):
    """The same proof distributed: ``tools/dist_test.sh ... 2`` at batch size 4 (each rank
    pads its own batches of mixed sizes, the hook sits inside the DDP wrapper) gives the
    detections and COCO AP of one process at batch size 1."""
    work, result = main_job
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ckpt = sorted(work.glob('epoch_*.pth'))[-1]
    comparison = compare_test_runs(MAIN_JOB_CONFIG, str(ckpt), tmp_path, (1, 4),
                                   shapes_options(mixed_shapes_root) + no_worker_options(),
                                   env=cpu_only(dict(OMP_NUM_THREADS='1')), timeout=600,
                                   processes=(1, 2))
    assert comparison.images == 12 and min(comparison.detections) > 0, comparison.summary()
    comparison.check()


def test_main_job_detections_differ_without_batch_invariance(main_job, mixed_shapes_root,
                                                             tmp_path):
    """The same check on the old behaviour (the backbone option off, no hook): the batch of 4
    changes the detections, so the check above can fail and the fix is what makes it pass."""
    work, result = main_job
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ckpt = sorted(work.glob('epoch_*.pth'))[-1]
    old = ['custom_hooks=[]', 'model.backbone.batch_invariant=False']
    comparison = compare_test_runs(MAIN_JOB_CONFIG, str(ckpt), tmp_path, (1, 4),
                                   shapes_options(mixed_shapes_root) + no_worker_options() + old,
                                   env=cpu_only(dict(OMP_NUM_THREADS='1')), timeout=600)
    assert comparison.images == 12 and min(comparison.detections) > 0, comparison.summary()
    with pytest.raises(BatchInvarianceError):
        comparison.check()


@pytest.fixture(scope='module')
def mixed_ade_root(tmp_path_factory):
    """6 held-out ADE20K-layout scenes, each of its own size (64-256 px per side). Seed 2:
    through the test pipeline (shorter side 128, sides multiples of 32) they are 288x128,
    128x224, 128x192, 224x128, 288x128 and 160x128, so each batch of 2 (the loader keeps
    the files' order) holds two sizes: 5 of the 6 images are padded, in both directions in
    the first two batches."""
    root = tmp_path_factory.mktemp('data') / 'ade20k_mixed'
    run_tool(['tools/misc/make_ade20k_tiny.py', '--out', root, '--train', '1', '--val', '6',
              '--mixed-sizes', '64', '256', '--seed', '2'])
    return root


def test_mixed_size_ade_set_has_scenes_of_many_sizes(mixed_ade_root):
    """--mixed-sizes gives each validation scene its own size, its label map the same size."""
    from PIL import Image
    images = sorted((mixed_ade_root / 'images' / 'validation').glob('*.jpg'))
    sizes = [Image.open(path).size for path in images]
    assert len(set(sizes)) == 6 and all(64 <= s <= 256 for size in sizes for s in size)
    for path, size in zip(images, sizes):
        label = mixed_ade_root / 'annotations' / 'validation' / (path.stem + '.png')
        assert Image.open(label).size == size
    assert all(Image.open(p).size == (160, 120)
               for p in (mixed_ade_root / 'images' / 'training').glob('*.jpg'))


@pytest.fixture(scope='module')
def semfpn_alone(trained_segmentor, mixed_ade_root, tmp_path_factory):
    """tools/test.py with the trained Semantic FPN on the mixed-size scenes, one at a time."""
    return run_test_tool(SEG_TINY_CONFIG, str(trained_segmentor.checkpoint),
                         tmp_path_factory.mktemp('semfpn') / 'bs1', 1, ade_options(mixed_ade_root),
                         env=cpu_only(), timeout=600)


def _semfpn_in_pairs(trained_segmentor, mixed_ade_root, work, extra=()):
    run = run_test_tool(SEG_TINY_CONFIG, str(trained_segmentor.checkpoint), work, 2,
                        ade_options(mixed_ade_root) + list(extra), env=cpu_only(), timeout=600)
    # The comparison compares padded images: each batch of 2 holds two sizes, padded to one.
    padded = [tuple(p['img_shape']) != tuple(p['pad_shape']) for p in run.preds]
    for first, second in zip(run.preds[0::2], run.preds[1::2]):
        assert tuple(first['img_shape']) != tuple(second['img_shape'])
        assert tuple(first['pad_shape']) == tuple(second['pad_shape'])
    assert padded == [True, True, True, True, False, True], padded
    return run


def test_semantic_fpn_same_label_maps_at_batch_1_and_2(trained_segmentor, mixed_ade_root,
                                                        semfpn_alone, tmp_path):
    """Issue 27's proof for Semantic FPN, through the user's path: tools/test.py on a
    mixed-size held-out set at test_dataloader.batch_size=1 and =2 gives the same label map on
    every pixel and the same mIoU. The configs' PaddedSegDataPreProcessor pads the batch of 2
    (mmseg's own refuses it, tests/test_seg_preprocessor.py)."""
    pairs = _semfpn_in_pairs(trained_segmentor, mixed_ade_root, tmp_path)
    comparison = compare_segmentation_dumps(semfpn_alone.preds, pairs.preds,
                                            semfpn_alone.metrics['mIoU'], pairs.metrics['mIoU'])
    assert comparison.images == 6 and comparison.detections[0] > 0, comparison.summary()
    comparison.check()


def test_semantic_fpn_label_maps_differ_without_batch_invariance(trained_segmentor,
                                                                 mixed_ade_root, semfpn_alone,
                                                                 tmp_path):
    """The same check on the old behaviour (the backbone option off, no hook; a batch of one
    is the old code path bit for bit): the batch of 2 changes the label maps."""
    old = ['custom_hooks=[]', 'model.backbone.batch_invariant=False']
    pairs = _semfpn_in_pairs(trained_segmentor, mixed_ade_root, tmp_path, old)
    comparison = compare_segmentation_dumps(semfpn_alone.preds, pairs.preds,
                                            semfpn_alone.metrics['mIoU'], pairs.metrics['mIoU'])
    assert comparison.images == 6 and comparison.detections[0] > 0, comparison.summary()
    assert comparison.worst['pixels_differ'] > 0, comparison.summary()
    with pytest.raises(BatchInvarianceError):
        comparison.check()
