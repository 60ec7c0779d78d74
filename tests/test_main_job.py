"""The README's main job: `bash tools/quickstart.sh` trains RetinaNet + PVT v2-b0 on the
embedded COCO-format set and must reach an AP that an untrained detector cannot."""
import json
import re

import numpy as np
import pytest
import torch

from pvt_mm.threshold_metrics import Detections, threshold_metrics

from .conftest import MAIN_JOB_AP_FLOOR, build_from_config, run_tool

CONFIG = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
# The main job (the session fixture `main_job` in conftest.py) is measured to score ~0.6
# (README.md); an untrained detector ~0.00.
AP_FLOOR = MAIN_JOB_AP_FLOOR
UNTRAINED_CEILING = 0.05


def test_main_job_learns(main_job):
    work, result = main_job
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    line = re.search(r'Main job: COCO bbox AP = ([\d.]+) on held-out images.*PASS', out)
    assert line, out[-3000:]
    assert float(line[1]) > AP_FLOOR
    metrics = json.loads((work / 'test' / 'test_metrics.json').read_text())
    assert metrics['coco/bbox_mAP'] == pytest.approx(float(line[1]), abs=1e-3)
    assert (work / 'predictions.png').stat().st_size > 10_000
    assert (work / 'curves.png').stat().st_size > 10_000
    assert list(work.glob('epoch_*.pth'))
    assert list(work.glob('*/vis_data/scalars.json'))
    # Compact progress on the console, the full mmengine output in the work dir's logs.
    assert re.search(r'epoch \d+/\d+ +iter +\d+/\d+ +loss [\d.]+ +ETA', result.stdout)
    assert 'Config:' not in result.stdout and 'Config:' in (work / 'train.log').read_text()


def test_untrained_detector_stays_below_the_floor(main_job, tmp_path, checkpoint_server, torch_home):
    """Also the checkpoint-URL path of tools/test.py: the untrained detector is served over
    http, downloaded once into the torch hub cache, and evaluated from there."""
    work, result = main_job
    assert result.returncode == 0
    torch.manual_seed(0)
    _, model = build_from_config(CONFIG)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint_server.root / 'untrained.pth')
    run_tool(['tools/test.py', CONFIG, checkpoint_server.url + 'untrained.pth',
              '--work-dir', tmp_path / 'eval', '--cfg-options', 'model.test_cfg.score_thr=0.0'],
             env={'TORCH_HOME': str(torch_home)})
    metrics = json.loads((tmp_path / 'eval' / 'test_metrics.json').read_text())
    assert metrics['coco/bbox_mAP'] < UNTRAINED_CEILING
    assert (torch_home / 'hub' / 'checkpoints' / 'untrained.pth').is_file()
    assert checkpoint_server.requests == ['/untrained.pth']  # mmengine read our download


def _boxes(*boxes):
    return np.array(boxes, dtype=float).reshape(-1, 4)


def test_threshold_metrics_match_one_box_per_object_and_class():
    """Hand-made boxes whose right counts are known: a second box of another class, a
    duplicate of the right class, a box that overlaps too little, one under the threshold."""
    names = ['circle', 'triangle', 'rectangle']
    gts = [Detections(_boxes([0, 0, 10, 10], [20, 20, 40, 40]), np.array([0, 2])),
           Detections(_boxes([50, 50, 70, 70]), np.array([1]))]
    preds = [
        Detections(_boxes([0, 0, 10, 11],      # triangle on the circle: wrong class
                          [0, 0, 10, 10],      # circle on the circle: found
                          [22, 20, 40, 40],    # rectangle on the rectangle: found (IoU 0.9)
                          [20, 20, 40, 40],    # rectangle again: the object is taken
                          [20, 20, 40, 40]),   # circle under the threshold: not drawn
                   np.array([0, 1, 2, 2, 0]), np.array([0.9, 0.8, 0.7, 0.6, 0.2])),
        Detections(_boxes([50, 50, 70, 61]),   # triangle at IoU 0.55: found
                   np.array([1]), np.array([0.95])),
    ]
    m = threshold_metrics(gts, preds, names, score_thr=0.3)
    assert (m.num_objects, m.num_predictions, m.num_found) == ([1, 1, 1], [1, 2, 2], [1, 1, 1])
    assert m.precision == [1.0, 0.5, 0.5] and m.recall == [1.0, 1.0, 1.0]
    assert m.predictions_per_object == pytest.approx(5 / 3)
    assert m.found_right_class == 1.0
    m = threshold_metrics(gts, preds, names, score_thr=0.3, iou_thr=0.6)
    assert m.num_found == [1, 0, 1]  # the triangle's box overlaps only 0.55
    m = threshold_metrics(gts, preds, names, score_thr=0.1)
    assert m.num_predictions == [2, 2, 2] and m.num_found == [1, 1, 1]
    assert 'circle 0.50 / 1.00; triangle 0.50 / 1.00; rectangle 0.50 / 1.00' in m.lines()[1]
    with pytest.raises(ValueError, match='no ground-truth objects'):
        threshold_metrics([Detections(_boxes(), np.array([]))], preds[:1], names, 0.3)
