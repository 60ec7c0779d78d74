"""Deployment (issue 18): ONNX export with dynamic batch / H / W, ONNX Runtime equal to
PyTorch, test_onnx.py scoring like tools/test.py, clear refusals. Small sizes here; the
large ones in tools/deployment/benchmark_onnx.py."""
import json
import pickle
import re
from collections import Counter

import numpy as np
import pytest
import torch
from mmengine.config import Config

from .conftest import (CLS_TINY_CONFIG, PYTHON, REPO, SEG_TINY_CONFIG, ade_options, build_from_config,
                       imagenet_options, load_tool, run_tool)

# The deploy extra (onnx, onnxruntime, onnxscript, openvino) is installed by tools/setup_env.sh: a
# missing one is a failure, not a skip.
import onnx
import onnxruntime  # noqa: F401

from pvt_mm.deploy import DeployError, ORTClassifier, ORTDetector, ORTRunner, load_model
from pvt_mm.deploy.verify import canonical_order

MAIN_JOB_CONFIG = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
# Backbone exports take 25-70 s each on 2 cores, so the suite exports the code paths, not
# every preset: PVT v1 (Tiny: position embeddings interpolated to any grid) and PVT v2's
# linear SRA (b2_li's layers, one per stage: the adaptive pool to 7x7 from any grid). v2's
# overlapping patch embeddings and depth-wise conv FFN are exported in the main job's
# RetinaNet below. tools/deployment/check_archs.py exports and checks every preset.
V2_LINEAR_CONFIG = """_base_ = '{repo}/configs/retinanet/pvtv2_b0_fpn_shapes.py'
model = dict(backbone=dict(arch=dict(_delete_=True, depths=(1, 1, 1, 1), linear_sra=True)))
"""
# Each with one attention mode of the export (pvt_mm.deploy.attention): ONNX Attention and
# ONNX Runtime's MultiHeadAttention.
BACKBONES = {'tiny': 'onnx', 'b2_li-depth1': 'ort'}


def _save_weights(model, path) -> None:
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


def _backbone_config(name: str, tmp) -> str:
    if name == 'tiny':
        return 'configs/retinanet/pvt_tiny_fpn_shapes.py'
    path = tmp / 'pvtv2_linear_depth1.py'
    path.write_text(V2_LINEAR_CONFIG.format(repo=REPO))
    return str(path)


@pytest.fixture(scope='module', params=sorted(BACKBONES))
def backbone_export(request, tmp_path_factory):
    """(config, PyTorch backbone, one dynamic .onnx of it, attention mode), exported by
    the CLI tool at 224x224, batch 2."""
    tmp = tmp_path_factory.mktemp(f'onnx_{request.param}')
    config = _backbone_config(request.param, tmp)
    torch.manual_seed(0)
    _, model = build_from_config(config, with_weights=False)
    model.init_weights()
    assert model.backbone.arch['linear_sra'] == (request.param != 'tiny')
    _save_weights(model, tmp / 'weights.pth')
    out = tmp / 'backbone.onnx'
    run_tool(['tools/deployment/pytorch2onnx.py', config, '--checkpoint', tmp / 'weights.pth',
              '--part', 'backbone', '--out', out, '--shape', '224', '224',
              '--attention', BACKBONES[request.param]])
    return config, model.backbone.eval(), out, BACKBONES[request.param]


def test_backbone_one_file_any_size(backbone_export):
    """Every stage map within 1e-4 relative at 224x224 (batch 2), 800x1333 and 481x623 (not
    a multiple of 32), from the one file exported at 224x224: the size PVT v1 stores its
    position embeddings for, where a trace guard on the grid would pin H and W (the export
    then refuses to write the file), and where linear SRA's 7x7 pool is a plain 8x8
    average pool that the exporter would freeze."""
    _, backbone, path, _ = backbone_export
    runner = ORTRunner(path)
    for batch, shape in ((2, (224, 224)), (1, (800, 1333)), (1, (481, 623))):
        images = torch.randn(batch, 3, *shape)
        with torch.no_grad():
            ref = backbone(images)
        outs = runner.run(images)
        assert len(outs) == len(ref) == 4
        for r, o in zip(ref, outs, strict=True):
            assert o.shape == tuple(r.shape)
            err = np.abs(o - r.numpy()).max() / r.abs().max().item()
            assert err <= 1e-4, (shape, err)


def _attention_ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def check_attention_fused(path, layers: int, op: str = 'Attention') -> None:
    """Every encoder layer's attention is one fused node (``op``: ONNX ``Attention``, opset
    23, or ONNX Runtime's ``MultiHeadAttention``), none is left as MatMul-Softmax-MatMul,
    and ONNX Runtime keeps them fused after its own graph optimisation."""
    import onnxruntime as ort
    ops = _attention_ops(path)
    other = {'Attention': 'MultiHeadAttention', 'MultiHeadAttention': 'Attention'}[op]
    assert ops[op] == layers and ops[other] == 0 and ops['Softmax'] == 0, ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_name(path.stem + '_ort_optimized.onnx'))
    ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    optimized = _attention_ops(options.optimized_model_filepath)
    assert optimized[op] == layers and optimized['Softmax'] == 0, optimized


def test_attention_is_fused(backbone_export):
    _, backbone, path, attention = backbone_export
    op = {'onnx': 'Attention', 'ort': 'MultiHeadAttention'}[attention]
    check_attention_fused(path, sum(backbone.arch['depths']), op)


def test_ffn_runs_in_pieces_in_the_graph(backbone_export):
    """Each token-wise FFN (PVT v1's) is cut into a fixed number of pieces per stage in the
    exported file (16, 4, 1, 1: ~4,200-token pieces in stages 1-3 at 800x1333, as eager
    chunks), one GELU per piece; v2's FFNs (depth-wise conv: tokens not independent) stay
    whole. Equality at every size: test_backbone_one_file_any_size."""
    from pvt_mm.models import ops
    _, backbone, path, _ = backbone_export
    depths = backbone.arch['depths']
    token_wise = not backbone.arch['ffn_dwconv']
    expected = sum(d * (ops.export_ffn_chunks(i) if token_wise else 1)
                   for i, d in enumerate(depths))
    if backbone.arch['linear_sra']:
        expected += sum(depths)  # linear SRA's own GELU after its pooled keys
    assert _attention_ops(path)['Gelu'] == expected
    if token_wise:
        assert expected > sum(depths)


def test_fixed_chunks_compute_the_same_numbers():
    """run_fixed_chunks (the graph's FFN pieces) equals one piece for token counts that
    are not a multiple of the pieces, and for fewer tokens than pieces."""
    from pvt_mm.models import export_ops
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    for shape in ((2, 37, 8), (1, 3, 8), (5, 8)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(export_ops.run_fixed_chunks(mlp, x, 16), mlp(x), atol=1e-6)


def test_runner_refuses_bad_input(backbone_export):
    _, _, path, _ = backbone_export
    runner = ORTRunner(path)
    with pytest.raises(DeployError, match='rank 3'):
        runner.run(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(DeployError, match='3 channels'):
        runner.run(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(DeployError, match='float32'):
        runner.run(np.zeros((1, 3, 64, 64), np.float64))
    with pytest.raises(DeployError, match='float32'):
        runner.run(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_equality_checks_refuse_an_empty_comparison():
    """Comparing nothing is not equality: no detections on either side (an untrained
    detector), detections on one side only, no images at all, or all-zero maps."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from pvt_mm.deploy.verify import compare_detections, detections_equal, relative_error

    def result(n):
        sample = DetDataSample()
        sample.pred_instances = InstanceData(bboxes=torch.arange(4 * n, dtype=torch.float32).reshape(n, 4),
                                             scores=torch.linspace(0.9, 0.5, n),
                                             labels=torch.zeros(n, dtype=torch.int64))
        return sample

    assert detections_equal(compare_detections([result(3)], [result(3)]))
    assert not detections_equal(compare_detections([result(0)], [result(0)]))
    assert not detections_equal(compare_detections([result(0)], [result(2)]))
    assert not detections_equal(compare_detections([], []))
    with pytest.raises(DeployError, match='compare the same images'):
        compare_detections([result(1)], [])
    zeros = torch.zeros(2, 3)
    assert relative_error(zeros, zeros) == float('inf')
    assert relative_error(torch.ones(2, 3), torch.ones(2, 3)) == 0.0


def _tiny_onnx(path, output: str) -> None:
    """A one-node file (global mean of the image) whose output is named ``output``."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('ReduceMean', ['images'], [output], axes=[2, 3], keepdims=0)], 'tiny',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, ['batch', 3, 'h', 'w'])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ['batch', 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)
    onnx.save(model, str(path))


def test_runner_for_opens_one_session(tmp_path, monkeypatch):
    """runner_for reads the file's outputs and builds the fitting runner over one ONNX
    Runtime session (not a probe session and then another)."""
    from pvt_mm.deploy import runner_for
    opened = []
    real = onnxruntime.InferenceSession

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, 'InferenceSession', counting)
    _tiny_onnx(tmp_path / 'cls.onnx', 'logits')
    runner = runner_for(tmp_path / 'cls.onnx', num_threads=1)
    assert isinstance(runner, ORTClassifier) and len(opened) == 1
    logits = runner.predict(torch.ones(2, 3, 8, 8))
    assert torch.equal(logits, torch.ones(2, 3))


def test_verify_fails_loudly_on_a_mismatch(backbone_export):
    """--verify's check raises when the file and the model differ (here: other weights)."""
    from pvt_mm.deploy import build_graph, verify_onnx
    config, _, path, _ = backbone_export
    torch.manual_seed(1)
    _, other = build_from_config(config, with_weights=False)
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


def test_verify_image_errors_come_before_the_export(tmp_path):
    """--image names a missing file, or comes without --verify: exit 1 with what to do, at
    once (no export, no file)."""
    out = tmp_path / 'model.onnx'
    base = ['tools/deployment/pytorch2onnx.py', MAIN_JOB_CONFIG, '--out', out]
    missing = run_tool(base + ['--verify', '--image', tmp_path / 'nope.jpg'], check=False)
    assert missing.returncode == 1 and "nope.jpg' does not exist" in missing.stderr
    alone = run_tool(base + ['--image', tmp_path / 'nope.jpg'], check=False)
    assert alone.returncode == 1 and 'add --verify' in alone.stderr
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


def test_size_frozen_inside_the_graph_is_refused(tmp_path):
    """A module that computes an upsampling size in Python from the input's shape (mmseg's
    ``Upsample``: ``int(h * 2.0)``) gets the example's size frozen into the graph, which
    then runs at other sizes with wrong numbers: the export refuses and writes nothing."""
    from mmseg.models.utils import Upsample

    from pvt_mm.deploy import export_onnx

    class Frozen(torch.nn.Module):
        out_indices = (0, )

        def __init__(self):
            super().__init__()
            self.up = Upsample(scale_factor=2, mode='bilinear', align_corners=False)

        def forward(self, x):
            return [self.up(x)]

    model = torch.nn.Module()
    model.backbone = Frozen()
    with pytest.raises(DeployError, match=r'froze the output size of 1 Resize.*64x80'):
        export_onnx(model, tmp_path / 'frozen.onnx', part='backbone', shape=(32, 40))
    assert list(tmp_path.iterdir()) == []

def test_frozen_average_pool_is_refused(tmp_path, monkeypatch):
    """The second freeze of the past: linear SRA's adaptive pool to 7x7 written as the plain
    8x8 AveragePool of the 224x224 example (what the exporter makes of
    ``F.adaptive_avg_pool2d``). Every declared shape is right, so only running the file at
    a second size shows it: the export compares with PyTorch there, refuses, and writes
    nothing."""
    import torch.nn.functional as F

    from pvt_mm.deploy import export_onnx
    from pvt_mm.models import export_ops
    config = _backbone_config('b2_li-depth1', tmp_path)
    _, model = build_from_config(config, with_weights=False)
    monkeypatch.setattr(export_ops, 'adaptive_avg_pool2d', F.adaptive_avg_pool2d)  # the old code
    out = tmp_path / 'out' / 'frozen.onnx'
    with pytest.raises(DeployError, match=r'other results than PyTorch at 256x288'):
        export_onnx(model, out, part='backbone', shape=(224, 224))
    assert list(out.parent.iterdir()) == []


def test_openvino_runs_the_same_file(backbone_export):
    """OpenVINO (the deploy extra's third engine, benchmark_onnx.py --openvino) reads the
    exported file (opset 23, fused Attention or ONNX Runtime's MultiHeadAttention, dynamic
    batch / H / W) and gives PyTorch's stage maps within 1e-4 relative at two sizes, fp32."""
    import openvino as ov
    _, backbone, path, _ = backbone_export
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), 'CPU',
                                  {'INFERENCE_PRECISION_HINT': 'f32'})
    for batch, shape in ((2, (224, 224)), (1, (481, 623))):
        images = torch.randn(batch, 3, *shape)
        with torch.no_grad():
            ref = backbone(images)
        result = compiled([images.numpy()])
        outs = [result[o] for o in compiled.outputs]
        assert len(outs) == len(ref) == 4
        for r, o in zip(ref, outs, strict=True):
            assert o.shape == tuple(r.shape)
            assert np.abs(o - r.numpy()).max() / r.abs().max().item() <= 1e-4
    # benchmark_onnx.py --openvino's engine: the ONNX Runtime runner's interface over an
    # OpenVINO session (input checks, output names), the same numbers.
    runner = load_tool('tools/deployment/benchmark_onnx.py').openvino_runner(str(path), 1)
    reference = ORTRunner(path, num_threads=1)
    assert runner.output_names == reference.output_names
    assert runner.input_names == reference.input_names
    images = torch.randn(1, 3, 96, 128)
    for o, r in zip(runner.run(images), reference.run(images), strict=True):
        assert np.abs(o - r).max() / np.abs(r).max() <= 1e-4
    with pytest.raises(DeployError, match='float32'):
        runner.run(images.double())


def test_benchmark_without_openvino_is_a_clear_error():
    """benchmark_onnx.py --openvino where OpenVINO does not import (a user who installed
    only onnx / onnxruntime; simulated by blocking the import) exits at once, before
    exporting, with the pip command."""
    script = ("import runpy, sys; sys.modules['openvino'] = None; "
              "sys.argv = ['benchmark_onnx.py', sys.argv[1], '--openvino']; "
              "runpy.run_path('tools/deployment/benchmark_onnx.py', run_name='__main__')")
    result = run_tool([PYTHON, '-c', script, MAIN_JOB_CONFIG], check=False, timeout=60)
    assert result.returncode == 1, result.output[-3000:]
    assert 'pip install "openvino>=2026.4"' in result.stderr


@pytest.fixture(scope='module')
def main_job_onnx(main_job, tmp_path_factory):
    """The main job's trained RetinaNet + PVT v2-b0, exported end to end and checked by
    ``--verify --image`` on a held-out image: a trained detector finds nothing on random
    pixels, so the user's verify must run on a real picture and compare real detections."""
    work, result = main_job
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ckpt = sorted(work.glob('epoch_*.pth'))[-1]
    image = sorted((REPO / 'data' / 'shapes_coco' / 'val2017').iterdir())[0]
    out = tmp_path_factory.mktemp('onnx_main_job') / 'retinanet.onnx'
    export = run_tool(['tools/deployment/pytorch2onnx.py', MAIN_JOB_CONFIG, '--checkpoint', ckpt,
                       '--out', out, '--shape', '192', '256', '--verify', '--image', image])
    assert out.is_file(), export.output
    counts = re.findall(r'verify ok: \d+x\d+: (\d+) detections \(PyTorch\), (\d+) ', export.stdout)
    assert len(counts) == 2 and all(int(a) > 0 and int(b) > 0 for a, b in counts), export.stdout
    return work, out


def test_retinanet_pvtv2_attention_is_fused(main_job_onnx):
    _, path = main_job_onnx
    check_attention_fused(path, 8)  # PVT v2-b0: 2 + 2 + 2 + 2 layers


def test_retinanet_onnx_equals_pytorch_on_held_out_images(main_job_onnx, tmp_path):
    """test_onnx.py over the 64 held-out images: the same detections as tools/test.py's
    PyTorch run (count and labels, boxes within 0.01 px, scores within 1e-4) and the same
    COCO AP (within 0.002)."""
    work, path = main_job_onnx
    run_tool(['tools/deployment/test_onnx.py', MAIN_JOB_CONFIG, path, '--work-dir', tmp_path,
              '--out', tmp_path / 'preds.pkl'])
    ref = pickle.loads((work / 'test' / 'preds.pkl').read_bytes())
    ort = pickle.loads((tmp_path / 'preds.pkl').read_bytes())
    assert len(ref) == len(ort) == 64
    ref = sorted(ref, key=lambda r: r['img_id'])
    ort = sorted(ort, key=lambda r: r['img_id'])
    # A box scoring within the score tolerance of test_cfg.score_thr may fall on either side
    # of it in the two engines (seen: 0.05000 kept by ONNX Runtime, not by PyTorch): those
    # are left out of the comparison; every other box must match.
    edge = Config.fromfile(REPO / MAIN_JOB_CONFIG).model.test_cfg.score_thr + 1e-4
    total = 0
    for a, b in zip(ref, ort):
        a, b = ({k: v[x['pred_instances']['scores'] > edge] for k, v in x['pred_instances'].items()
                 if k in ('bboxes', 'scores', 'labels')} for x in (a, b))
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



def _main_job_checkpoint(work):
    return sorted(work.glob('epoch_*.pth'))[-1]


def _held_out_images(count: int) -> list:
    """The first ``count`` held-out images of the shapes set the main job made (320x256)."""
    root = REPO / 'data' / 'shapes_coco'
    info = json.loads((root / 'annotations' / 'instances_val2017.json').read_text())
    return [root / 'val2017' / image['file_name'] for image in info['images'][:count]]


def _detector_batch(model, paths, sizes, pad_divisor: int = 32):
    """Images resized to ``sizes`` (``(h, w)`` each; ``scale_factor`` from the original),
    through the model's data preprocessor, padded to a multiple of ``pad_divisor`` (1: the
    tensor keeps the image's own size)."""
    import mmcv
    from mmdet.structures import DetDataSample
    inputs, samples = [], []
    for path, (h, w) in zip(paths, sizes, strict=True):
        image = mmcv.imread(str(path))  # BGR, as LoadImageFromFile
        h0, w0 = image.shape[:2]
        inputs.append(torch.from_numpy(mmcv.imresize(image, (w, h))).permute(2, 0, 1).contiguous())
        samples.append(DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h0, w0),
                                                   scale_factor=(w / w0, h / h0))))
    preprocessor = model.data_preprocessor
    divisor, preprocessor.pad_size_divisor = preprocessor.pad_size_divisor, pad_divisor
    try:
        data = preprocessor(dict(inputs=inputs, data_samples=samples), False)
    finally:
        preprocessor.pad_size_divisor = divisor
    return data['inputs'], data['data_samples']


def _predict_both(model, detector, inputs, samples):
    """``model.predict(rescale=True)`` and the file's, on copies of the same samples."""
    from mmdet.structures import DetDataSample
    with torch.no_grad():
        ref = model.predict(inputs, [DetDataSample(metainfo=s.metainfo) for s in samples])
    ort = detector.predict(inputs, [DetDataSample(metainfo=s.metainfo) for s in samples])
    return ref, ort


def _assert_same_detections(ref, ort) -> dict:
    from pvt_mm.deploy import compare_detections, detections_equal
    worst = compare_detections(ref, ort)
    assert detections_equal(worst), worst
    assert all(len(r.pred_instances) and len(o.pred_instances) for r, o in zip(ref, ort)), \
        'an image without detections compares nothing'
    return worst


def test_retinanet_onnx_equals_pytorch_at_other_sizes(main_job_onnx):
    """The trained RetinaNet's one file (exported at 192x256) against model.predict
    (rescale=True, to the 320x256 originals) on held-out images at three other sizes --
    one, 203x277, not a multiple of 32 and fed unpadded -- and on a padded batch of two
    images of different sizes: the same detections (count, labels, boxes within 0.01 px,
    scores within 1e-4), with detections on every image."""
    work, path = main_job_onnx
    model, _ = load_model(str(REPO / MAIN_JOB_CONFIG), str(_main_job_checkpoint(work)))
    detector = ORTDetector(path)
    paths = _held_out_images(3)
    for size in ((224, 288), (320, 416), (203, 277)):
        inputs, samples = _detector_batch(model, paths[:1], [size], pad_divisor=1)
        assert tuple(inputs.shape[2:]) == size
        _assert_same_detections(*_predict_both(model, detector, inputs, samples))
    inputs, samples = _detector_batch(model, paths[1:3], [(192, 240), (237, 301)])
    assert tuple(inputs.shape) == (2, 3, 256, 320)  # one padded batch, two image sizes
    # The file is batch invariant (issue 27), so its reference is PyTorch with the
    # config's BatchInvariantHook's masks, as tools/test.py runs it (through the model's
    # forward, where the hooks read the samples' img_shape).
    from mmdet.structures import DetDataSample
    from pvt_mm.models.batch_invariance import enable_batch_invariance
    invariance = enable_batch_invariance(model)
    try:
        with torch.no_grad():
            ref = model(inputs, [DetDataSample(metainfo=s.metainfo) for s in samples],
                        mode='predict')
    finally:
        invariance.remove()
    ort = detector.predict(inputs, [DetDataSample(metainfo=s.metainfo) for s in samples])
    _assert_same_detections(ref, ort)


def check_mixed_batch_equals_alone(model, detector, paths, sizes) -> list:
    """Two images of different ``sizes``, zero-padded into one batch (``img_shapes`` given),
    against each run alone (padded to its own size) through the same file: the same
    detections (count, labels, boxes within 0.01 px, scores within 1e-4), with detections
    on each image. Returns the comparisons, one per image."""
    inputs, samples = _detector_batch(model, paths, sizes)
    assert len({tuple(s.metainfo['img_shape']) for s in samples}) == 2
    assert inputs.shape[0] == 2 and any(inputs.shape[2:] != torch.Size(
        [-(-h // 32) * 32, -(-w // 32) * 32]) for h, w in sizes), 'no image is padded'
    batch = detector.predict(inputs, samples)
    worst = []
    for index, (path, size) in enumerate(zip(paths, sizes)):
        alone_inputs, alone_samples = _detector_batch(model, [path], [size])
        alone = detector.predict(alone_inputs, alone_samples)
        worst.append(_assert_same_detections(alone, batch[index:index + 1]))
    return worst


def test_retinanet_onnx_mixed_batch_equals_each_image_alone(main_job_onnx):
    """Batch invariance of the deployed RetinaNet (issue 27): the trained main job's file,
    given a batch of two held-out images of different sizes (one zero-padded to the other's
    batch, the other not a multiple of 32), gives each image the detections it gets alone.
    Without the graph's masks the padded image's detections differ."""
    work, path = main_job_onnx
    model, _ = load_model(str(REPO / MAIN_JOB_CONFIG), str(_main_job_checkpoint(work)))
    check_mixed_batch_equals_alone(model, ORTDetector(path), _held_out_images(2),
                                   [(192, 224), (253, 301)])


def _count(results) -> int:
    return sum(len(r.pred_instances) for r in results)


def test_retinanet_min_bbox_size_and_class_agnostic_nms(main_job_onnx, tmp_path):
    """``min_bbox_size`` applies to the boxes in the original image's coordinates and
    ``nms.class_agnostic=True`` suppresses across labels, as in mmdet: a file exported
    with both (pytorch2onnx.py --cfg-options) gives model.predict's detections on held-out
    images upscaled 1.5x. Both settings change the result here, and applying the minimum
    size in the input's coordinates instead (the old graph) would too."""
    work, _ = main_job_onnx
    ckpt = str(_main_job_checkpoint(work))
    plain, _ = load_model(str(REPO / MAIN_JOB_CONFIG), ckpt)
    inputs, samples = _detector_batch(plain, _held_out_images(2), [(384, 480)] * 2)
    with torch.no_grad():
        ref_plain = plain.predict(inputs, samples)
    boxes = torch.cat([r.pred_instances.bboxes for r in ref_plain])
    # The median smaller side of the detections in the original images: some go, some stay.
    min_size = round(float(torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).median()), 2)

    def options(size, agnostic=True):
        return {'model.test_cfg.min_bbox_size': size, 'model.test_cfg.nms.class_agnostic': agnostic}

    def predict(size, agnostic=True):
        model, _ = load_model(str(REPO / MAIN_JOB_CONFIG), ckpt, options(size, agnostic))
        with torch.no_grad():
            return model.predict(inputs, [type(s)(metainfo=s.metainfo) for s in samples]), model

    ref, model = predict(min_size)
    assert _count(ref) < _count(ref_plain)
    assert _count(predict(min_size / 1.5)[0]) != _count(ref)  # input coordinates (x1.5)
    assert _count(predict(min_size, agnostic=False)[0]) != _count(ref)
    path = tmp_path / 'retinanet_nms.onnx'
    run_tool(['tools/deployment/pytorch2onnx.py', MAIN_JOB_CONFIG, '--checkpoint', ckpt,
              '--out', path, '--shape', '192', '256', '--cfg-options',
              f'model.test_cfg.min_bbox_size={min_size}', 'model.test_cfg.nms.class_agnostic=True'])
    _assert_same_detections(*_predict_both(model, ORTDetector(path), inputs, samples))


def test_unsupported_nms_setting_is_refused(tmp_path):
    """An NMS option the graph does not implement (mmcv's ``offset``) is refused by name
    before anything is written."""
    out = tmp_path / 'offset.onnx'
    result = run_tool(['tools/deployment/pytorch2onnx.py', MAIN_JOB_CONFIG, '--out', out,
                       '--cfg-options', 'model.test_cfg.nms.offset=1'], check=False)
    assert result.returncode == 1, result.output[-3000:]
    assert "its NMS config sets ['offset']" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_benchmark_times_nms_on_trained_weights(main_job_onnx):
    """benchmark_onnx.py --checkpoint: the RetinaNet row runs on trained weights, so the
    file's NMS runs and its detections are compared with PyTorch's before timing; without
    --checkpoint a detector row is refused (nothing would be compared)."""
    work, path = main_job_onnx
    args = ['tools/deployment/benchmark_onnx.py', MAIN_JOB_CONFIG, '--part', 'model',
            '--onnx', path, '--shape', '192', '256', '--repeat', '1', '--warmup', '0',
            '--no-memory', '--threads', '1']
    out = run_tool(args + ['--checkpoint', _main_job_checkpoint(work),
                          '--image', _held_out_images(1)[0]]).output
    found = re.search(r'equal: 192x256: (\d+) detections \(PyTorch\), (\d+) \(ONNX Runtime\)', out)
    assert found and int(found[1]) > 0 and found[1] == found[2], out[-3000:]
    refused = run_tool(args, check=False)
    assert refused.returncode == 1 and '--checkpoint' in refused.stderr, refused.output[-3000:]


# ------------------------------------------------------------- classifier and segmentor
def test_classifier_onnx_equals_pytorch(trained_classifier, imagenet_root, tmp_path):
    """The tiny classifier trained by tools/dist_train.sh, exported end to end: logits within
    1e-4 relative through the runner API (two sizes, one file), and test_onnx.py gives
    tools/test.py's top-1 with the same label and scores (1e-4) for every image."""
    run = trained_classifier
    ckpt, path = run.checkpoint, tmp_path / 'classifier.onnx'
    run_tool(['tools/deployment/pytorch2onnx.py', CLS_TINY_CONFIG, '--checkpoint', ckpt,
              '--out', path, '--shape', '64', '64'])
    model, _ = load_model(str(REPO / CLS_TINY_CONFIG), str(ckpt))
    classifier = ORTClassifier(path)
    for shape in ((64, 64), (96, 80)):
        images = torch.randn(2, 3, *shape)
        with torch.no_grad():
            ref = model(images, mode='tensor')
        logits = classifier.predict(images)
        assert logits.shape == ref.shape == (2, 1000)
        assert float((logits - ref).abs().max() / ref.abs().max()) <= 1e-4

    out = run_tool(['tools/deployment/test_onnx.py', CLS_TINY_CONFIG, path, '--work-dir',
                    tmp_path, '--out', tmp_path / 'onnx.pkl', '--cfg-options',
                    *imagenet_options(imagenet_root)]).output
    top1 = json.loads((tmp_path / 'test_metrics.json').read_text())['accuracy/top1']
    assert re.search(rf'accuracy/top1: {top1:.4f}', out), out[-2000:]
    assert top1 == run.metrics['accuracy/top1']
    ref = pickle.loads(run.preds.read_bytes())
    ort = pickle.loads((tmp_path / 'onnx.pkl').read_bytes())
    assert len(ref) == len(ort) == 8
    for a, b in zip(ref, ort, strict=True):
        assert a['img_path'] == b['img_path'] and int(a['pred_label']) == int(b['pred_label'])
        assert float((a['pred_score'] - b['pred_score']).abs().max()) <= 1e-4


def test_semantic_fpn_onnx_equals_pytorch(trained_segmentor, ade_root, tmp_path):
    """The Semantic FPN trained by tools/train.py, exported end to end: test_onnx.py labels
    >= 99.99 % of the validation pixels as tools/test.py does and prints the same mIoU."""
    run = trained_segmentor
    path = tmp_path / 'semfpn.onnx'
    run_tool(['tools/deployment/pytorch2onnx.py', SEG_TINY_CONFIG, '--checkpoint',
              run.checkpoint, '--out', path, '--shape', '128', '160'])
    out = run_tool(['tools/deployment/test_onnx.py', SEG_TINY_CONFIG, path, '--work-dir',
                    tmp_path / 'test', '--out', tmp_path / 'onnx.pkl', '--cfg-options',
                    *ade_options(ade_root)]).output
    metrics = json.loads((tmp_path / 'test' / 'test_metrics.json').read_text())
    assert re.search(rf"mIoU: {metrics['mIoU']:.4f}", out), out[-2000:]
    assert metrics['mIoU'] == pytest.approx(run.metrics['mIoU'], abs=0.01)
    assert metrics['aAcc'] == pytest.approx(run.metrics['aAcc'], abs=0.01)
    ref = pickle.loads(run.preds.read_bytes())
    ort = pickle.loads((tmp_path / 'onnx.pkl').read_bytes())
    assert len(ref) == len(ort) == 2
    same = total = 0
    for a, b in zip(ref, ort, strict=True):
        assert a['img_path'] == b['img_path']
        a, b = a['pred_sem_seg']['data'], b['pred_sem_seg']['data']
        assert a.shape == b.shape
        same += int((a == b).sum())
        total += a.numel()
    assert same / total >= 0.9999, f'{same / total:.6%} of pixels agree'


@pytest.mark.parametrize('arch', ['tiny', 'b2_li'])
def test_backbone_export_with_img_shapes_is_batch_invariant(arch, tmp_path):
    """``img_shapes=True`` (issue 27): the file takes each image's ``(h, w)``, and an image
    in a padded batch of mixed sizes gets the maps it gets alone in PyTorch (1e-4 relative
    in its region; zero outside). v1 Tiny: key masks in ONNX Attention and position
    embeddings interpolated per image in the graph; b2_li: per-image linear SRA pooling.
    One layer per stage."""
    from pvt_mm import PVT, PVTv2
    from pvt_mm.deploy import export_onnx
    from pvt_mm.models.backbones import archs
    row = archs.arch_row(arch)
    torch.manual_seed(0)
    model = (PVT if row.version == 'v1' else PVTv2)(arch=dict(row.fields, depths=(1, 1, 1, 1)))
    model.init_weights()
    model.eval()
    path = export_onnx(model, tmp_path / 'backbone.onnx', part='backbone', shape=(224, 224),
                       img_shapes=True)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ['images', 'img_shapes']
    sizes = [(96, 160), (181, 100)]  # the second one not a multiple of 32
    generator = torch.Generator().manual_seed(1)
    images = torch.zeros(2, 3, 192, 160)
    for index, (h, w) in enumerate(sizes):
        images[index, :, :h, :w] = torch.randn(3, h, w, generator=generator)
    outs = ORTRunner(path).run(images, np.array(sizes, dtype=np.float32))
    with torch.no_grad():
        for index, (h, w) in enumerate(sizes):
            own = (-(-h // 32) * 32, -(-w // 32) * 32)
            alone = model(images[index:index + 1, :, :own[0], :own[1]])
            for out, ref in zip(outs, alone):
                got = torch.from_numpy(out[index:index + 1, :, :ref.shape[2], :ref.shape[3]])
                assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-4
                assert np.abs(out[index]).sum() == pytest.approx(float(got.abs().sum()), rel=1e-5)
