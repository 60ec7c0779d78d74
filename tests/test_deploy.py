"""Deployment (issue 18): ONNX export with dynamic batch / H / W, ONNX Runtime equal to
PyTorch, test_onnx.py scoring like tools/test.py, clear refusals. Small sizes here; the
large ones in tools/deployment/benchmark_onnx.py."""
import importlib.util
import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from .conftest import REPO, build_from_config, run_tool

# The deploy extra (onnx, onnxruntime, onnxscript) is installed by tools/setup_env.sh: a
# missing one is a failure, not a skip.
import onnx
import onnxruntime  # noqa: F401

from pvt_mm.deploy import DeployError, ORTDetector, ORTRunner
from pvt_mm.deploy.verify import canonical_order

MAIN_JOB_CONFIG = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
# Backbone exports take 20-40 s each on 2 cores: PVT v1 here (the smallest, Tiny); PVT v2
# (b0) is exported inside the main job's RetinaNet below and checked there at two sizes;
# the large archs in tools/deployment/benchmark_onnx.py.
BACKBONE_CONFIGS = {'tiny': 'configs/retinanet/pvt_tiny_fpn_shapes.py'}


def _save_weights(model, path) -> None:
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


@pytest.fixture(scope='module', params=sorted(BACKBONE_CONFIGS))
def backbone_export(request, tmp_path_factory):
    """(arch, PyTorch backbone, one dynamic .onnx of it), exported by the CLI tool at
    224x224."""
    arch = request.param
    torch.manual_seed(0)
    _, model = build_from_config(BACKBONE_CONFIGS[arch], with_weights=False)
    model.init_weights()
    tmp = tmp_path_factory.mktemp(f'onnx_{arch}')
    _save_weights(model, tmp / 'weights.pth')
    out = tmp / 'backbone.onnx'
    run_tool(['tools/deployment/pytorch2onnx.py', BACKBONE_CONFIGS[arch], '--checkpoint',
              tmp / 'weights.pth', '--part', 'backbone', '--out', out, '--shape', '224', '224'])
    return arch, model.backbone.eval(), out


def test_backbone_one_file_any_size(backbone_export):
    """Every stage map within 1e-4 relative at 96x128 (batch 1) and 481x623 (not a
    multiple of 32, batch 2) from the one file exported at 224x224, batch 2: the size PVT
    stores its position embeddings for, where a trace guard on the grid would pin H and W
    (the export then refuses to write the file)."""
    _, backbone, path = backbone_export
    runner = ORTRunner(path)
    for batch, shape in ((1, (96, 128)), (2, (481, 623))):
        images = torch.randn(batch, 3, *shape)
        with torch.no_grad():
            ref = backbone(images)
        outs = runner.run(images)
        assert len(outs) == len(ref) == 4
        for r, o in zip(ref, outs):
            assert o.shape == tuple(r.shape)
            err = np.abs(o - r.numpy()).max() / r.abs().max().item()
            assert err <= 1e-4, (shape, err)


def _attention_ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def check_attention_fused(path, layers: int) -> None:
    """Every encoder layer's attention is one ONNX ``Attention`` node (opset 23), none is
    left as MatMul-Softmax-MatMul, and ONNX Runtime keeps them fused after its own graph
    optimisation."""
    import onnxruntime as ort
    ops = _attention_ops(path)
    assert ops['Attention'] == layers and ops['Softmax'] == 0, ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_name(path.stem + '_ort_optimized.onnx'))
    ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    optimized = _attention_ops(options.optimized_model_filepath)
    assert optimized['Attention'] == layers and optimized['Softmax'] == 0, optimized


def test_attention_is_fused(backbone_export):
    _, backbone, path = backbone_export
    check_attention_fused(path, sum(backbone.arch['depths']))


def test_runner_refuses_bad_input(backbone_export):
    _, _, path = backbone_export
    runner = ORTRunner(path)
    with pytest.raises(DeployError, match='rank 3'):
        runner.run(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(DeployError, match='3 channels'):
        runner.run(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(DeployError, match='float32'):
        runner.run(np.zeros((1, 3, 64, 64), np.float64))
    with pytest.raises(DeployError, match='float32'):
        runner.run(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_verify_fails_loudly_on_a_mismatch(backbone_export):
    """--verify's check raises when the file and the model differ (here: other weights)."""
    from pvt_mm.deploy import build_graph, verify_onnx
    arch, _, path = backbone_export
    torch.manual_seed(1)
    _, other = build_from_config(BACKBONE_CONFIGS[arch], with_weights=False)
    other.init_weights()
    with pytest.raises(DeployError, match='disagree beyond the tolerance'):
        verify_onnx(build_graph(other, 'backbone'), path, shapes=[(64, 96)], batch=1)


def test_unsupported_model_is_refused_without_a_file(tmp_path):
    """Mask R-CNN has no end-to-end export: a clear error naming what is supported, exit
    status 1, and no file (nor temporary file) left behind."""
    out = tmp_path / 'mask_rcnn.onnx'
    result = run_tool(['tools/deployment/pytorch2onnx.py',
                       'configs/mask_rcnn/pvt_tiny_fpn_shapes.py', '--out', out], check=False)
    assert result.returncode == 1, result.output[-3000:]
    assert 'Cannot export this detector end to end' in result.stderr
    assert 'RetinaNet' in result.stderr and "part='backbone'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_the_old_file(tmp_path):
    """An export that fails after its temporary file was opened (an example size below
    the model's smallest input) keeps an existing file as it was, leaves no partial file
    and exits 1 with the reason."""
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'previous export')
    result = run_tool(['tools/deployment/pytorch2onnx.py', MAIN_JOB_CONFIG, '--part',
                       'backbone', '--out', out, '--shape', '16', '16'], check=False)
    assert result.returncode == 1 and 'smallest input' in result.stderr, result.output[-3000:]
    assert out.read_bytes() == b'previous export'
    assert [p.name for p in tmp_path.iterdir()] == ['model.onnx']


def test_openvino_runs_the_same_file(backbone_export):
    """Where OpenVINO is installed (an optional engine of benchmark_onnx.py --openvino), it
    reads the exported file (opset 23, fused Attention, dynamic batch / H / W) and gives
    PyTorch's stage maps within 1e-4 relative at two sizes, fp32."""
    ov = pytest.importorskip('openvino')
    _, backbone, path = backbone_export
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), 'CPU',
                                  {'INFERENCE_PRECISION_HINT': 'f32'})
    for batch, shape in ((1, (96, 128)), (2, (481, 623))):
        images = torch.randn(batch, 3, *shape)
        with torch.no_grad():
            ref = backbone(images)
        result = compiled([images.numpy()])
        outs = [result[o] for o in compiled.outputs]
        assert len(outs) == len(ref) == 4
        for r, o in zip(ref, outs):
            assert o.shape == tuple(r.shape)
            assert np.abs(o - r.numpy()).max() / r.abs().max().item() <= 1e-4


def test_benchmark_openvino_missing_is_a_clear_error():
    """benchmark_onnx.py --openvino without OpenVINO exits at once (before exporting) with
    the pip command: OpenVINO is optional, not in the deploy extra."""
    if importlib.util.find_spec('openvino') is not None:
        pytest.skip('OpenVINO is installed here')
    result = run_tool(['tools/deployment/benchmark_onnx.py', MAIN_JOB_CONFIG, '--openvino'],
                      check=False, timeout=60)
    assert result.returncode == 1, result.output[-3000:]
    assert 'pip install "openvino>=2026.4"' in result.stderr


@pytest.fixture(scope='module')
def main_job_onnx(main_job, tmp_path_factory):
    """The main job's trained RetinaNet + PVT v2-b0, exported end to end (its equality with
    PyTorch is checked on the held-out images below, so no --verify here: it saves ~40 s)."""
    work, result = main_job
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ckpt = sorted(work.glob('epoch_*.pth'))[-1]
    out = tmp_path_factory.mktemp('onnx_main_job') / 'retinanet.onnx'
    export = run_tool(['tools/deployment/pytorch2onnx.py', MAIN_JOB_CONFIG, '--checkpoint', ckpt,
                       '--out', out, '--shape', '192', '256'])
    assert out.is_file(), export.output
    return work, out


def test_retinanet_pvtv2_attention_is_fused(main_job_onnx):
    _, path = main_job_onnx
    check_attention_fused(path, 8)  # PVT v2-b0: 2 + 2 + 2 + 2 layers


def test_retinanet_onnx_equals_pytorch_on_held_out_images(main_job_onnx, tmp_path):
    """test_onnx.py over the 64 held-out images: the same detections as tools/test.py's
    PyTorch run (count and labels, boxes within 0.01 px, scores within 1e-4) and the same
    COCO AP (within 0.002)."""
    import json
    work, path = main_job_onnx
    run_tool(['tools/deployment/test_onnx.py', MAIN_JOB_CONFIG, path, '--work-dir', tmp_path,
              '--out', tmp_path / 'preds.pkl'])
    ref = pickle.loads((work / 'test' / 'preds.pkl').read_bytes())
    ort = pickle.loads((tmp_path / 'preds.pkl').read_bytes())
    assert len(ref) == len(ort) == 64
    ref = sorted(ref, key=lambda r: r['img_id'])
    ort = sorted(ort, key=lambda r: r['img_id'])
    total = 0
    for a, b in zip(ref, ort):
        a, b = a['pred_instances'], b['pred_instances']
        assert len(a['scores']) == len(b['scores'])
        total += len(a['scores'])
        if not len(a['scores']):
            continue
        (ab, as_, al), (bb, bs, bl) = (canonical_order(x['bboxes'], x['scores'], x['labels'])
                                       for x in (a, b))
        assert torch.equal(al, bl)
        assert (ab - bb).abs().max().item() <= 0.01
        assert (as_ - bs).abs().max().item() <= 1e-4
    assert total > 64  # detections on every image, not a vacuous comparison
    ap_torch = json.loads((work / 'test' / 'test_metrics.json').read_text())['coco/bbox_mAP']
    ap_ort = json.loads((tmp_path / 'test_metrics.json').read_text())['coco/bbox_mAP']
    assert ap_ort == pytest.approx(ap_torch, abs=0.002)
    assert ap_ort > 0.4


def test_detector_runner_api(main_job_onnx):
    """The Python API: load once, predict(images) -> mmdet results; wrong input refused."""
    _, path = main_job_onnx
    detector = ORTDetector(path)
    results = detector.predict(torch.randn(2, 3, 160, 224))
    assert len(results) == 2
    for sample in results:
        inst = sample.pred_instances
        assert inst.bboxes.shape[1] == 4 and len(inst.scores) == len(inst.labels) <= 100
        if len(inst.scores):
            assert (inst.scores[:-1] >= inst.scores[1:]).all()
            assert inst.bboxes[:, 2].max() <= 224 and inst.bboxes[:, 3].max() <= 160
    with pytest.raises(DeployError, match='float32'):
        detector.predict(np.zeros((1, 3, 64, 64), np.uint8))

