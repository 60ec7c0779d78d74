"""The README's main job: `bash tools/quickstart.sh` trains RetinaNet + PVT v2-b0 on the
embedded COCO-format set and must reach an AP that an untrained detector cannot."""
import json
import re

import pytest
import torch

from .conftest import (MAIN_JOB_AP_FLOOR, assert_same_detections, build_from_config,
                       evaluate_on_both_stacks, run_tool)

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


def test_main_job_checkpoint_scores_the_same_on_the_other_stack(main_job, tmp_path):
    """The main job's checkpoint (trained on this stack) evaluated by tools/test.py here and
    on the other supported stack (tools/run_tests.sh names it): the same COCO AP within
    0.002 and the same best detection per held-out image."""
    work, result = main_job
    assert result.returncode == 0
    checkpoint = work / (work / 'last_checkpoint').read_text().strip().split('/')[-1]
    this, other = evaluate_on_both_stacks(CONFIG, checkpoint, tmp_path)
    ap = json.loads((work / 'test' / 'test_metrics.json').read_text())['coco/bbox_mAP']
    assert this['metrics']['coco/bbox_mAP'] == pytest.approx(ap, abs=1e-4)
    if other is None:
        return
    assert abs(other['metrics']['coco/bbox_mAP'] - ap) <= 0.002, (ap, other['metrics'])
    assert_same_detections(this['preds'], other['preds'])
