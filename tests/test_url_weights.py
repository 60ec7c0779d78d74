"""Checkpoints named by URL on every path a user types, distributed included, and one safe read
behind all of them.

One real 2-process (gloo) ``tools/dist_train.sh`` run, whose backbone weights come from a URL
served on 127.0.0.1 and whose only checkpoint is a ``save_best`` one, feeds three tests:
one download per node and identical weights on both ranks (training and, with the trained
detector served in turn, ``tools/dist_test.sh``), and every rank's RNG state in a save that no
interval announced. A crafted pickle served by URL is then refused by each CLI.
"""
import os
from pathlib import Path

import pytest
import torch

from pvt_mm.capabilities import ONNX_EXPORT

from .conftest import (REPO, cpu_only, no_worker_options, run_tool, serve_checkpoints,
                       shapes_options)
from .fault_injection import state_digest

# Weights, files and RNG: run on both stacks (tools/run_tests.sh).
pytestmark = pytest.mark.compat

CONFIG = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
TINY_CONFIG = 'configs/retinanet/pvt_tiny_fpn_shapes.py'


def _ddp_config(directory: Path, url: str) -> Path:
    """CONFIG with the backbone's weights at ``url`` and the test-only probes (per-rank
    weights dump, RNG digests) from tests/fault_injection.py."""
    config = directory / 'url_weights.py'
    config.write_text(
        f"_base_ = '{REPO / CONFIG}'\n"
        "custom_imports = dict(imports=['pvt_mm', 'fault_injection'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DumpWeightsHook'), dict(type='PrintRNGHook')]\n"
        "model = dict(backbone=dict(init_cfg=dict(\n"
        f"    _delete_=True, type='Pretrained', checkpoint='{url}')))\n")
    return config


def _ddp_env(torch_home: Path, port: int) -> dict:
    return cpu_only(dict(TORCH_HOME=str(torch_home), PORT=str(port),
                         PYTHONPATH=f"{REPO / 'tests'}:{os.environ.get('PYTHONPATH', '')}"))


@pytest.fixture(scope='module')
def url_ddp(shapes_root, tmp_path_factory):
    """``tools/dist_train.sh CONFIG 2`` with URL backbone weights (1 epoch, batch 1: two
    iterations per rank, different seeds per rank), saving only the best checkpoint
    (no interval, no last-epoch save), then ``tools/dist_test.sh CONFIG URL 2`` of that
    checkpoint served by URL."""
    from pvt_mm import PVTv2
    tmp = tmp_path_factory.mktemp('url_ddp')
    (tmp / 'served').mkdir()
    torch.manual_seed(0)
    weights = PVTv2(arch='b0').state_dict()
    torch.save({'state_dict': weights}, tmp / 'served' / 'pvt_v2_b0.pth')
    work, torch_home = tmp / 'work', tmp / 'torch_home'
    port = 31500 + os.getpid() % 1000
    options = shapes_options(shapes_root) + no_worker_options() + [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=1',
        'default_hooks.checkpoint.interval=100', 'default_hooks.checkpoint.save_last=False',
        'default_hooks.checkpoint.save_best=coco/bbox_mAP', 'default_hooks.logger.interval=1',
        'model.test_cfg.score_thr=0.0', 'randomness.seed=0', 'randomness.diff_rank_seed=True']
    with serve_checkpoints(tmp / 'served') as server:
        config = _ddp_config(tmp, server.url + 'pvt_v2_b0.pth')
        train = run_tool(['tools/dist_train.sh', config, '2', '--work-dir', work,
                          '--cfg-options', *options], env=_ddp_env(torch_home, port), timeout=900)
        train_requests = list(server.requests)
        best, = work.glob('best_*.pth')
        (tmp / 'served' / 'det.pth').write_bytes(best.read_bytes())
        test = run_tool(['tools/dist_test.sh', config, server.url + 'det.pth', '2', '--work-dir',
                         work / 'test', '--cfg-options', *options],
                        env=_ddp_env(torch_home, port + 1), timeout=900)
        test_requests = server.requests[len(train_requests):]
    return dict(weights=weights, work=work, best=best, train=train.output, test=test.output,
                train_requests=train_requests, test_requests=test_requests)


def _assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys() and expected
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_dist_train_downloads_url_weights_once_and_every_rank_holds_them(url_ddp):
    assert url_ddp['train_requests'] == ['/pvt_v2_b0.pth'], url_ddp['train'][-3000:]
    for rank in (0, 1):
        dumped = torch.load(url_ddp['work'] / f'weights_rank{rank}_train.pth', weights_only=True)
        _assert_same({k[len('backbone.'):]: v for k, v in dumped.items()
                      if k.startswith('backbone.')}, url_ddp['weights'])


def test_dist_test_downloads_the_checkpoint_once_and_every_rank_holds_it(url_ddp):
    assert url_ddp['test_requests'] == ['/det.pth'], url_ddp['test'][-3000:]
    saved = torch.load(url_ddp['best'], map_location='cpu', weights_only=False)['state_dict']
    for rank in (0, 1):
        _assert_same(torch.load(url_ddp['work'] / 'test' / f'weights_rank{rank}_test.pth',
                                weights_only=True), saved)
    assert 'coco/bbox_mAP' in url_ddp['test']


def test_a_save_no_interval_announced_keeps_every_ranks_rng_state(url_ddp):
    """The best checkpoint (saved after validation; no interval or last-epoch save) holds
    each rank's generators as they were at the save: PrintRNGHook prints them after it."""
    import re
    saved = torch.load(url_ddp['best'], map_location='cpu', weights_only=False)
    ranks = saved['rng_state']['ranks']
    printed = dict(re.findall(r'rng rank (\d) after val 1: (\w+)', url_ddp['train']))
    assert len(ranks) == 2 and all(state is not None for state in ranks), ranks
    assert [state_digest(state) for state in ranks] == [printed['0'], printed['1']]
    assert printed['0'] != printed['1']  # diff_rank_seed: two different streams were kept


def _crafted_checkpoint(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}', ))

    torch.save({'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {}, 'x': Payload()}, path)


def test_crafted_pickle_served_by_url_is_refused_by_every_tool(shapes_root, tmp_path,
                                                               checkpoint_server):
    """Weights by URL reach every CLI (Pretrained init_cfg, --resume, load_from, test, demo,
    ONNX export, the converter): a pickle that would run code is refused by each, clearly,
    and its payload never runs."""
    marker = tmp_path / 'payload_ran'
    _crafted_checkpoint(checkpoint_server.root / 'evil.pth', marker)
    url = checkpoint_server.url + 'evil.pth'
    init_cfg = tmp_path / 'init_cfg.py'
    init_cfg.write_text(f"_base_ = '{REPO / TINY_CONFIG}'\n"
                        "model = dict(backbone=dict(init_cfg=dict(\n"
                        f"    _delete_=True, type='Pretrained', checkpoint='{url}')))\n")
    options = ['--cfg-options', *shapes_options(shapes_root), *no_worker_options(),
               'train_cfg.max_epochs=1']
    work = ['--work-dir', tmp_path / 'work']
    image = next((shapes_root / 'val2017').glob('*.jpg'))
    commands = {
        'train init_cfg': ['tools/train.py', init_cfg, *work, *options],
        'train --resume': ['tools/train.py', TINY_CONFIG, *work, '--resume', url, *options],
        'train load_from': ['tools/train.py', TINY_CONFIG, *work, *options, f'load_from={url}'],
        'test': ['tools/test.py', TINY_CONFIG, url, *work, *options],
        'demo': ['tools/demo.py', image, TINY_CONFIG, url, '--out-dir', tmp_path / 'vis'],
        'converter': ['tools/model_converters/pvt_official_to_mm.py', url, tmp_path / 'x.pth'],
    }
    if ONNX_EXPORT.available:  # an older torch refuses the export before reading anything
        commands['pytorch2onnx'] = ['tools/deployment/pytorch2onnx.py', TINY_CONFIG,
                                    '--checkpoint', url, '--out', tmp_path / 'x.onnx']
    env = cpu_only(dict(TORCH_HOME=str(tmp_path / 'torch_home')))
    for tool, command in commands.items():
        result = run_tool(command, check=False, env=env, timeout=600)
        assert result.returncode != 0, f'{tool}: {result.output[-2000:]}'
        assert 'Refused to load' in result.output, f'{tool}: {result.output[-2000:]}'
        assert not marker.exists(), f'{tool} ran the payload'
