"""The supported range is true: what differs between torch releases is decided in
:mod:`pvt_mm.capabilities`, every gate fails clearly, the safe read is as strict on the
oldest torch as on the newest, and installing pvt_mm into the official OpenMMLab wheel set
upgrades nothing.

Marked ``compat``: tools/run_tests.sh runs these on both stacks.
"""
import json
import os
import re

import pytest
import torch

from pvt_mm import capabilities
from pvt_mm.capabilities import CapabilityError, Feature, require
from pvt_mm.checkpoint import CheckpointError, read_checkpoint

from .conftest import PYTHON, cross_stack_python, run_tool

pytestmark = pytest.mark.compat


class _Payload:
    """Pickles as a call that would create ``marker`` on load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


# Each safe-read path this stack has: the restricted unpickler of torch < 2.6 (forced on a
# newer torch, so both stacks test it) and, where torch has the allow-list API, its own.
LOAD_PATHS = ['restricted unpickler'] + (['torch weights_only'] if capabilities.SAFE_GLOBALS.available
                                         else [])


@pytest.fixture(params=LOAD_PATHS)
def load_path(request, monkeypatch):
    """Read checkpoints through one of :data:`LOAD_PATHS`."""
    if request.param == 'restricted unpickler':
        monkeypatch.setattr(capabilities.SAFE_GLOBALS, 'minimum', (99, 0))
    return request.param


def test_crafted_pickle_is_refused_on_every_load_path(tmp_path, load_path):
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match='Refused to load'):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_mmengine_training_checkpoint_loads_on_every_load_path(tmp_path, load_path):
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('pvt_mm_compat')
    hub.update_scalar('train/loss', np.float64(1.5))
    hub.update_info('iter', 3)
    state = {'backbone.w': torch.arange(6.).reshape(2, 3), 'backbone.b': torch.ones(2).half()}
    rng = np.random.get_state()
    torch.save({'meta': {'epoch': 1, 'seed': np.int64(3), 'np_rng': rng, 'dtype': torch.float16},
                'message_hub': hub.state_dict(), 'state_dict': state,
                'optimizer': {'state': {0: {'step': torch.tensor(2.)}}, 'param_groups': [
                    {'lr': 1e-3, 'betas': (0.9, 0.999), 'params': [0]}]}}, tmp_path / 'e.pth')
    ckpt = read_checkpoint(str(tmp_path / 'e.pth'))
    for key, value in state.items():
        torch.testing.assert_close(ckpt['state_dict'][key], value)
    assert ckpt['meta']['seed'] == 3 and ckpt['meta']['dtype'] is torch.float16
    np.testing.assert_array_equal(ckpt['meta']['np_rng'][1], rng[1])
    restored = MessageHub.get_instance('pvt_mm_compat_restored')
    restored.load_state_dict(ckpt['message_hub'])
    assert restored.get_scalar('train/loss').current() == 1.5


def test_restricted_unpickler_refuses_a_global_torch_would_refuse(tmp_path, monkeypatch):
    """Not only ``os.system``: any global outside the allow-list (here a harmless one)."""
    monkeypatch.setattr(capabilities.SAFE_GLOBALS, 'minimum', (99, 0))
    import collections
    torch.save({'x': collections.deque([1])}, tmp_path / 'deque.pth')
    with pytest.raises(CheckpointError, match='collections.deque'):
        read_checkpoint(str(tmp_path / 'deque.pth'))


def test_require_names_the_version_and_what_to_do():
    require(Feature('anything old', (1, 0), 'nothing'))
    with pytest.raises(CapabilityError, match=r'teleportation needs torch >= 99\.1; this '
                       rf'environment has torch {re.escape(torch.__version__)}\. To use it, wait\.'):
        require(Feature('teleportation', (99, 1), 'wait'))


def test_onnx_export_gate_is_a_clear_cli_error(tmp_path):
    """On a torch without the exporter (the oldest stack) the tool says what it needs; on the
    pinned stack the gate is forced (its minimum raised), so removing it fails here too."""
    force = '' if not capabilities.ONNX_EXPORT.available else (
        'import pvt_mm.capabilities as c; c.ONNX_EXPORT.minimum = (99, 0); ')
    code = (f'{force}import runpy, sys; sys.argv = sys.argv[1:]; '
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = tmp_path / 'x.onnx'
    result = run_tool([PYTHON, '-c', code, 'tools/deployment/pytorch2onnx.py',
                       'configs/retinanet/pvtv2_b0_fpn_shapes.py', '--out', out], check=False)
    assert result.returncode != 0
    assert 'ONNX export (the dynamo exporter at opset 23) needs torch >= ' in result.stderr, \
        result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize('target', ['.', '.[det]'])
def test_pip_install_upgrades_nothing(target, tmp_path):
    """What ``pip install .`` would do in this environment: nothing to torch, torchvision,
    mmcv or numpy (on the oldest stack: the official wheel set stays as it is)."""
    report = tmp_path / 'report.json'
    result = run_tool([PYTHON, '-m', 'pip', 'install', '--dry-run', '--quiet', '--report', report,
                       target], check=False, timeout=600)
    assert result.returncode == 0, result.output[-3000:]
    planned = {item['metadata']['name'].lower(): item['metadata']['version']
               for item in json.loads(report.read_text())['install']}
    assert 'pvt-mm' in planned or 'pvt_mm' in planned, planned  # the report is about us
    touched = {name: v for name, v in planned.items()
               if name in ('torch', 'torchvision', 'mmcv', 'numpy', 'mmengine', 'mmdet')}
    assert not touched, f'pip install {target} would change {touched}'
    import mmcv.ops  # noqa: F401  (compiled ops still load)


@pytest.mark.parametrize('tool', ['tools/train.py', 'tools/test.py'])
def test_compile_gate_is_a_clear_cli_error(tool, tmp_path):
    """``--compile`` where this torch cannot compile the model (forced on the pinned stack)."""
    force = '' if not capabilities.COMPILE.available else (
        'import pvt_mm.capabilities as c; c.COMPILE.minimum = (99, 0); ')
    code = (f'{force}import runpy, sys; sys.argv = sys.argv[1:]; '
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    args = [PYTHON, '-c', code, tool, 'configs/retinanet/pvtv2_b0_fpn_shapes.py']
    if tool.endswith('test.py'):
        checkpoint = tmp_path / 'model.pth'
        torch.save({'state_dict': {'backbone.w': torch.zeros(1)}}, checkpoint)
        args.append(checkpoint)
    result = run_tool(args + ['--compile', '--work-dir', tmp_path / 'work'], check=False)
    assert result.returncode != 0
    assert 'error: --compile (torch.compile of the whole model) needs torch >= ' in result.stderr, \
        result.stderr[-2000:]
    assert not (tmp_path / 'work').exists() or not list((tmp_path / 'work').rglob('*.pth'))


def test_training_state_written_by_the_other_stack_loads_here(tmp_path):
    """numpy 1.26 (oldest stack) and numpy 2 (pinned) name their pickling helpers from
    different modules; mmengine checkpoints hold numpy state, so either stack's must load on
    the other through the safe read."""
    other = cross_stack_python()
    if other is None:
        return
    path = tmp_path / 'other.pth'
    run_tool([other, '-c', '\n'.join([
        'import sys, numpy as np, torch',
        'from mmengine.logging import MessageHub',
        "hub = MessageHub.get_instance('other'); hub.update_scalar('loss', np.float64(1.5))",
        "torch.save({'meta': {'seed': np.int64(3), 'np_rng': np.random.get_state()},",
        "            'message_hub': hub.state_dict(), 'state_dict': {'w': torch.ones(2)}}, sys.argv[1])",
    ]), path])
    ckpt = read_checkpoint(str(path))
    assert ckpt['meta']['seed'] == 3 and ckpt['meta']['np_rng'][1].shape == (624, )
    torch.testing.assert_close(ckpt['state_dict']['w'], torch.ones(2))
