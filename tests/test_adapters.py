"""pvt_mm.adapters, the only places pvt_mm touches mmengine internals: each still does its
job on the installed mmengine (run on the oldest stack too), so an upgrade that moves one
fails here, by name, before it breaks a training run."""
import inspect
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import MMLogger, MessageHub
from mmengine.runner import Runner
from mmengine.structures import InstanceData

from pvt_mm.adapters import (CheckpointHookWithPointerDir, compile_runner_method,
                             drop_cached_file_backends, to_cpu)
from pvt_mm.hooks import AtomicCheckpointHook

pytestmark = pytest.mark.compat


def _runner_and_saves(work_dir: str):
    """A stand-in runner: what ``CheckpointHook._save_checkpoint_with_step`` uses of it."""
    saved = []
    runner = SimpleNamespace(
        work_dir=work_dir, message_hub=MessageHub.get_instance('test_adapters'),
        save_checkpoint=lambda out_dir, filename, *args, **kwargs: saved.append(
            osp.join(out_dir, filename)))
    return runner, saved


def _ready(hook, out_dir: str):
    """What ``CheckpointHook.before_train`` sets up."""
    hook.out_dir = out_dir
    hook.file_backend = get_file_backend(out_dir)
    return hook


def test_checkpoint_hook_writes_its_pointer_into_the_pointer_dir(tmp_path):
    seen = []

    class Recording(CheckpointHookWithPointerDir):
        def pointer_dir(self, runner):
            (tmp_path / 'staging').mkdir(exist_ok=True)
            return str(tmp_path / 'staging')

        def pointer_written(self, runner, written):
            seen.append((written, open(written).read()))

    runner, saved = _runner_and_saves(str(tmp_path))
    _ready(Recording(interval=1), str(tmp_path))._save_checkpoint_with_step(runner, 3, {})
    assert saved == [str(tmp_path / 'epoch_3.pth')]
    assert seen == [(str(tmp_path / 'staging' / 'last_checkpoint'), str(tmp_path / 'epoch_3.pth'))]
    assert not (tmp_path / 'last_checkpoint').exists()  # nothing written the plain way


def test_atomic_checkpoint_hook_publishes_the_pointer(tmp_path):
    runner, saved = _runner_and_saves(str(tmp_path))
    _ready(AtomicCheckpointHook(interval=1), str(tmp_path))._save_checkpoint_with_step(runner, 2, {})
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_2.pth')
    assert not (tmp_path / '.last_checkpoint.staging' / 'last_checkpoint').exists()


def test_cached_file_backends_are_dropped(tmp_path):
    first = get_file_backend(str(tmp_path), enable_singleton=True)
    assert get_file_backend(str(tmp_path), enable_singleton=True) is first  # cached
    drop_cached_file_backends(type(first))
    assert get_file_backend(str(tmp_path), enable_singleton=True) is not first


def test_runner_compiles_a_named_method():
    assert list(inspect.signature(Runner._maybe_compile).parameters) == ['self', 'target']

    class Model(torch.nn.Module):
        def test_step(self, data):
            return data

    class FakeRunner:  # what Runner._maybe_compile reads
        _maybe_compile = Runner._maybe_compile

        def __init__(self, compile_cfg):
            self.cfg = dict(compile=compile_cfg)
            self.model = Model()
            self.logger = MMLogger.get_instance('test_adapters')

    plain = FakeRunner(None)
    compile_runner_method(plain, 'test_step')
    assert 'test_step' not in vars(plain.model)  # no compile asked: the method is untouched
    compiled = FakeRunner(dict(backend='eager'))
    compile_runner_method(compiled, 'test_step')
    assert 'test_step' in vars(compiled.model)  # replaced by torch.compile's wrapper


def test_to_cpu_moves_nested_tensors_into_new_containers():
    instances = InstanceData(scores=torch.ones(2))
    data = [dict(a=torch.zeros(1), b=(instances, 'text'))]
    moved = to_cpu(data)
    assert moved is not data and moved[0] is not data[0]
    assert moved[0]['a'].device.type == 'cpu' and moved[0]['b'][1] == 'text'
    assert isinstance(moved[0]['b'][0], InstanceData)
