"""Shared test helpers and fixtures.

- The embedded data sets (COCO-layout shapes, ADE20K-tiny, ImageNet-tiny) are generated once
  per session by their own tools and shared by every test module.
- :func:`run_tool` runs a ``tools/`` script as a user would (from the repository root, in a
  fresh interpreter); :func:`cpu_only` pins such a run to the CPU on any host;
  :func:`load_tool` imports one as a module to call its functions.
- The trained models several modules use (the main job's detector, the tiny classifier
  and Semantic FPN) are trained once per session by session fixtures.
- :func:`build_from_config` builds a config's model through its registry;
  :func:`predict_random_image` runs a built model's whole test step on one random image.

``tests`` is a package, so test modules import these (and ``official_pvt``) relatively;
nothing here edits ``sys.path``.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# The deployment tests need the exporter (the pinned stack, with the deploy extra); the
# oldest stack runs the compatibility subset, which has no deployment test.
from pvt_mm.capabilities import COMPILE, ONNX_EXPORT  # noqa: E402

collect_ignore = [] if ONNX_EXPORT.available else ['test_deploy.py']


@pytest.fixture
def fake_arch(monkeypatch):
    """A tiny PVT v2 preset, ``'b_fake'`` (one layer per stage, widths 16 / 32 / 80 / 128,
    weights at an unreachable URL), added to the arch table for one test: every place
    derived from the table must see it."""
    from pvt_mm.models.backbones import archs
    row = archs.ArchRow('b_fake', 'v2',
                        dict(archs.arch_row('b1').fields, depths=(1, 1, 1, 1),
                             embed_dims=(16, 32, 80, 128)),
                        weights_url='https://example.invalid/pvt/pvt_v2_b_fake.pth')
    monkeypatch.setitem(archs.ARCH_TABLE, row.name, row)
    return row


@dataclass
class ToolRun:
    """What a tool run printed, and its exit status."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr (mmengine logs to both)."""
        return self.stdout + self.stderr


def run_tool(args: Sequence, *, timeout: float = 900, check: bool = True,
             env: Optional[Dict[str, str]] = None) -> ToolRun:
    """Run a repository script from the repository root in a fresh process.

    Args:
        args: The script (``tools/x.py`` runs with this interpreter, ``tools/x.sh`` with
            bash, anything else as given) and its arguments.
        timeout: Seconds before the run is killed (a hang fails the test).
        check: Assert a zero exit status, showing the end of the output otherwise.
        env: Extra environment variables, over ``os.environ`` with unbuffered output and one
            OpenMP thread per process.
    """
    cmd = [str(a) for a in args]
    if cmd[0].endswith('.py'):
        cmd.insert(0, PYTHON)
    elif cmd[0].endswith('.sh'):
        cmd.insert(0, 'bash')
    # PYTHON: the launch scripts (tools/_python.sh) run this interpreter, i.e. this stack.
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PYTHON=PYTHON,
                    **(env or {}))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    result = ToolRun(proc.returncode, proc.stdout, proc.stderr)
    if check:
        assert result.returncode == 0, (f'{" ".join(cmd[1:3])} exited {result.returncode}:\n'
                                        + result.stdout[-4000:] + result.stderr[-4000:])
    return result


def cross_stack_python() -> Optional[str]:
    """The other stack's interpreter, for checks that one stack reads what the other wrote.

    ``tools/run_tests.sh`` sets ``PVT_MM_CROSS_PYTHON`` (the oldest stack's python for the
    main suite, the pinned one's for the compatibility subset). Without it (pytest run by
    hand) the cross-stack half of those tests is left out, with a warning.
    """
    python = os.environ.get('PVT_MM_CROSS_PYTHON')
    if not python:
        import warnings
        warnings.warn('cross-stack check left out: PVT_MM_CROSS_PYTHON is unset '
                      '(tools/run_tests.sh sets it)')
        return None
    if not os.access(python, os.X_OK):
        raise AssertionError(f'PVT_MM_CROSS_PYTHON={python!r} is not an interpreter; run '
                             'tools/setup_env.sh for both stacks (tools/run_tests.sh does).')
    return python


def evaluate_on_both_stacks(config: str, checkpoint: Path, work: Path,
                            options: Sequence[str] = ()) -> Tuple[dict, dict]:
    """``tools/test.py`` on this stack and on the other one (:func:`cross_stack_python`),
    each dumping its detections.

    Returns:
        ``(this, other)``: each ``{'metrics': test_metrics.json, 'preds': the --out dump}``;
        ``other`` is ``None`` when no other stack is named.
    """
    import pickle
    results = []
    other = cross_stack_python()
    for name, python in (('this', PYTHON), ('other', other)):
        if python is None:
            results.append(None)
            continue
        out = work / name
        args = [python, 'tools/test.py', config, checkpoint, '--work-dir', out,
                '--out', out / 'preds.pkl']
        run_tool(args + (['--cfg-options', *options] if options else []), env=cpu_only(), timeout=900)
        with open(out / 'preds.pkl', 'rb') as f:
            preds = pickle.load(f)
        results.append({'metrics': json.loads((out / 'test_metrics.json').read_text()),
                        'preds': preds})
    return results[0], results[1]


def assert_matches_official(model, official, x) -> None:
    """``model``'s stage maps (eval mode) equal the official model's ``forward_dense`` on ``x``
    (fp32 tolerances of a loaded, converted checkpoint)."""
    import torch
    with torch.no_grad():
        for a, b in zip(model.eval()(x), official.forward_dense(x), strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def assert_same_detections(a: list, b: list, score_tol: float = 1e-3, box_tol: float = 0.05) -> None:
    """Two ``--out`` dumps of the same images agree: every image has detections on both
    sides, and its best detection (label, score, box) is the same."""
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        px, py = x['pred_instances'], y['pred_instances']
        assert len(px['scores']) > 0 and len(py['scores']) > 0, 'nothing to compare'
        i, j = int(px['scores'].argmax()), int(py['scores'].argmax())
        assert int(px['labels'][i]) == int(py['labels'][j])
        assert abs(float(px['scores'][i]) - float(py['scores'][j])) <= score_tol
        assert (px['bboxes'][i] - py['bboxes'][j]).abs().max() <= box_tol


def cpu_only(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``env`` plus ``CUDA_VISIBLE_DEVICES=''``, for :func:`run_tool`: the run uses the CPU
    on every host.

    mmengine (and ``pvt_mm.distributed``'s launcher setup) take CUDA and NCCL whenever a GPU is
    visible, so without this a "2 CPU processes" or resume test would test another path on
    a GPU host than on a CPU-only one.

    Args:
        env: Other variables for the run.
    """
    return dict(env or {}, CUDA_VISIBLE_DEVICES='')


def load_tool(relpath: str) -> ModuleType:
    """Import a repository script (e.g. ``'tools/demo.py'``) as a module, without running
    its command line, to call its functions in-process.

    Args:
        relpath: The script's path from the repository root.
    """
    name = 'tool_' + re.sub(r'\W', '_', relpath)
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_from_config(config: str, with_weights: bool = True) -> Tuple[Any, Any]:
    """Build the model of ``configs/<config>`` through its scope's registry.

    Args:
        config: Path below ``configs/`` (e.g. ``'retinanet/pvt_tiny_fpn_1x_coco.py'``) or
            from the repository root.
        with_weights: Keep the backbone's ``init_cfg`` (nothing is read before
            ``init_weights``).

    Returns:
        ``(cfg, model)``.
    """
    from pvt_mm.config import build_from_config as build
    path = REPO / config if config.startswith('configs/') else REPO / 'configs' / config
    model, cfg = build(str(path), with_weights=with_weights)
    return cfg, model


def predict_random_image(model, scope: str, size: Tuple[int, int] = (64, 64)) -> list:
    """One ``test_step`` (data preprocessor, forward, post-processing) of a built detector,
    segmentor or classifier on a random ``size`` uint8 image, as a dataloader would feed it.

    Args:
        model: A model from :func:`build_from_config` (eval mode).
        scope: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'`` (which data sample to make).
        size: Image ``(H, W)``.

    Returns:
        The model's predictions (one data sample).
    """
    import torch
    h, w = size
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample as Sample
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmpretrain.structures import DataSample as Sample
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[Sample(metainfo=meta)]))


def shapes_options(root: Path) -> List[str]:
    """``--cfg-options`` that point a ``*_shapes.py`` config at a generated COCO set."""
    return [f'{loader}.dataset.data_root={root}/'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        f'{evaluator}.ann_file={root}/annotations/instances_val2017.json'
        for evaluator in ('val_evaluator', 'test_evaluator')]


def no_worker_options(*loaders: str) -> List[str]:
    """``--cfg-options`` that load data in the main process (no worker processes)."""
    loaders = loaders or ('train_dataloader', 'val_dataloader', 'test_dataloader')
    return [f'{loader}.{key}' for loader in loaders
            for key in ('num_workers=0', 'persistent_workers=False')]


def _generate(tmp_path_factory, tool: str, name: str) -> Path:
    root = tmp_path_factory.mktemp('data') / name
    run_tool([f'tools/misc/{tool}', '--out', root, '--train', '4', '--val', '2'])
    return root


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory) -> Path:
    """The COCO-layout shapes set: 4 training and 2 validation images."""
    return _generate(tmp_path_factory, 'make_shapes_coco.py', 'shapes_coco')


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory) -> Path:
    """The ADE20K-layout set: 4 training and 2 validation scenes."""
    return _generate(tmp_path_factory, 'make_ade20k_tiny.py', 'ade20k_tiny')


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory) -> Path:
    """The ImageNet-layout set: 4 classes of 4 training and 2 validation images each."""
    return _generate(tmp_path_factory, 'make_imagenet_tiny.py', 'imagenet_tiny')


#: The small configs the suite trains (tiny images and models).
CLS_TINY_CONFIG = 'configs/classification/pvt_tiny_in1k_tiny.py'
SEG_TINY_CONFIG = 'configs/semfpn/pvt_tiny_fpn_ade20k_tiny.py'


def imagenet_options(root: Path) -> List[str]:
    """``--cfg-options`` for the tiny classifier on the generated ImageNet-layout set: one
    epoch, batches of 4, seed 0, no worker processes."""
    return [f'{loader}.dataset.data_root={root}/'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
        'train_dataloader.batch_size=4', 'val_dataloader.batch_size=4',
        'test_dataloader.batch_size=4', 'default_hooks.logger.interval=1', 'randomness.seed=0',
        *no_worker_options()]


def ade_options(root: Path) -> List[str]:
    """``--cfg-options`` for the tiny Semantic FPN on the generated ADE20K-layout set: two
    iterations of batch 2, seed 0, no worker processes."""
    return [f'{loader}.dataset.data_root={root}/'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
        'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1', 'randomness.seed=0',
        *no_worker_options()]


@dataclass
class TrainedModel:
    """What a training fixture ran: a tools/ training run, then tools/test.py on its
    checkpoint with ``--out``."""

    work: Path
    checkpoint: Path
    train_output: str
    test_output: str
    metrics: Dict[str, float]  # tools/test.py's test_metrics.json
    preds: Path  # tools/test.py --out


@pytest.fixture(scope='session')
def trained_classifier(imagenet_root, tmp_path_factory) -> TrainedModel:
    """The tiny classifier trained by a real 2-process (gloo) tools/dist_train.sh run, then
    tested by tools/test.py with ``--compile`` (backend 'eager': tracing without code
    generation; dynamo's log on) and ``--out``; shared by the classification and deployment
    tests."""
    work = tmp_path_factory.mktemp('cls') / 'ddp'
    options = imagenet_options(imagenet_root)
    train = run_tool(['tools/dist_train.sh', CLS_TINY_CONFIG, '2', '--work-dir', work,
                      '--cfg-options', *options],
                     env=cpu_only(dict(PORT=str(30500 + os.getpid() % 1000)))).output
    checkpoint = work / 'epoch_1.pth'
    # --compile where this torch can (pvt_mm.capabilities.COMPILE; test_compat checks the
    # refusal elsewhere).
    compile_args = ['--compile'] if COMPILE.available else []
    test = run_tool(['tools/test.py', CLS_TINY_CONFIG, checkpoint, '--work-dir', work / 'test',
                     *compile_args, '--out', work / 'preds.pkl', '--cfg-options', *options,
                     'compile.backend=eager'], timeout=600, env=dict(TORCH_LOGS='dynamo')).output
    metrics = json.loads((work / 'test' / 'test_metrics.json').read_text())
    return TrainedModel(work, checkpoint, train, test, metrics, work / 'preds.pkl')


@pytest.fixture(scope='session')
def trained_segmentor(ade_root, tmp_path_factory) -> TrainedModel:
    """Semantic FPN (PVT-Tiny) trained 2 iterations by tools/train.py and evaluated by
    tools/test.py, shared by the segmentation and deployment tests."""
    work = tmp_path_factory.mktemp('seg') / 'semfpn'
    options = ade_options(ade_root)
    train = run_tool(['tools/train.py', SEG_TINY_CONFIG, '--work-dir', work, '--cfg-options',
                      *options], timeout=900).output
    checkpoint = work / 'iter_2.pth'
    test = run_tool(['tools/test.py', SEG_TINY_CONFIG, checkpoint, '--work-dir', work / 'test',
                     '--show-dir', work / 'show', '--out', work / 'preds.pkl',
                     '--cfg-options', *options], timeout=600).output
    metrics = json.loads((work / 'test' / 'test_metrics.json').read_text())
    return TrainedModel(work, checkpoint, train, test, metrics, work / 'preds.pkl')


@dataclass
class CheckpointServer:
    """A local HTTP server of checkpoint files, as a model zoo would serve them."""

    root: Path
    url: str
    requests: List[str]


@contextmanager
def serve_checkpoints(root: Path) -> Iterator[CheckpointServer]:
    """Serve the files of ``root`` at ``http://127.0.0.1:PORT/`` from a thread.

    ``GET /truncated/NAME`` announces NAME's full size but closes the connection after a
    third of it (a download cut short); ``GET /cut/NAME`` sends a third of it with no
    ``Content-Length`` at all (the client cannot tell from the headers). Every request path
    is appended to the server's ``requests``.
    """
    import http.server
    import threading
    requests: List[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            mode, _, name = self.path.lstrip('/').partition('/')
            if mode not in ('truncated', 'cut') or not name:
                return super().do_GET()
            data = (root / name).read_bytes()
            self.send_response(200)
            if mode == 'truncated':
                self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 3])
            self.close_connection = True

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CheckpointServer(root, f'http://127.0.0.1:{server.server_address[1]}/', requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def checkpoint_server(tmp_path):
    """:func:`serve_checkpoints` of a fresh ``served`` directory, for one test."""
    root = tmp_path / 'served'
    root.mkdir()
    with serve_checkpoints(root) as server:
        yield server


def cached_files(torch_home: Path) -> List[str]:
    """The checkpoint files in ``torch_home``'s hub cache (lock files aside), sorted."""
    return sorted(str(p) for p in (torch_home / 'hub' / 'checkpoints').rglob('*')
                  if p.is_file() and not p.name.endswith('.lock'))


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty ``TORCH_HOME`` (torch hub cache) for this test and the tools it runs."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


#: The main job's AP floor (tools/quickstart.sh's AP_FLOOR); its measured runs (docs/main_job.md)
#: score ~0.78, an untrained detector ~0.00.
MAIN_JOB_AP_FLOOR = 0.6


@pytest.fixture(scope='session')
def main_job(tmp_path_factory) -> Tuple[Path, subprocess.CompletedProcess]:
    """`bash tools/quickstart.sh` (the README's main job: trains RetinaNet + PVT v2-b0, ~8
    minutes; docs/main_job.md), run once per session and shared by the main-job and
    deployment tests.

    Returns:
        ``(work dir, completed process)``; the work dir holds the checkpoint and
        ``test/test_metrics.json`` / ``test/preds.pkl`` of ``tools/test.py``.
    """
    work = tmp_path_factory.mktemp('quickstart')
    # As a user runs it (all cores: not run_tool, which pins tools to one thread).
    env = dict(os.environ, WORK_DIR=str(work), AP_FLOOR=str(MAIN_JOB_AP_FLOOR),
               PYTHONUNBUFFERED='1')
    result = subprocess.run(['bash', 'tools/quickstart.sh'], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500)
    return work, result


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, on a machine without a CUDA GPU."""
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (none visible on this machine)')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)
