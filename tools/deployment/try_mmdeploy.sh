#!/usr/bin/env bash
# Try mmdeploy 1.3.1's own ONNX export (mmdeploy.apis.torch2onnx, ONNX Runtime backend,
# dynamic detection config) on RetinaNet-PVTv2-b0 with random weights, on this stack.
# mmdeploy goes into a temporary --target, never into the environment: it pins
# protobuf<=3.20.2, which would break onnx. Prints the outcome (WORKED only when the file
# gives PyTorch's detections at both sizes; exit status 0 then); see docs/deployment_mmdeploy.md.
#
#   bash tools/deployment/try_mmdeploy.sh [MMDEPLOY_WHEEL_OR_SPEC]   (default: mmdeploy==1.3.1)
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
SPEC=${1:-mmdeploy==1.3.1}
TARGET=$(mktemp -d /tmp/mmdeploy_try.XXXX)
WORK=$(mktemp -d /tmp/mmdeploy_work.XXXX)
trap 'rm -rf "$TARGET" "$WORK"' EXIT
# --no-deps: only the pure-python requirements the environment lacks (not protobuf/onnx).
"$PY" -m pip install -q --no-deps --target "$TARGET" "$SPEC" aenum multiprocess dill || exit 1
export PYTHONPATH="$TARGET:$PWD${PYTHONPATH:+:$PYTHONPATH}"
cat > "$WORK/try.py" <<'PY'
import functools, sys, traceback, warnings
warnings.filterwarnings('ignore')
import mmcv, mmdet, mmengine, numpy as np, onnx, torch
import mmdeploy
from mmengine import Config
from mmengine.logging import MMLogger
from pvt_mm.deploy import load_model

work, legacy = sys.argv[1], sys.argv[2] == 'legacy'
MMLogger.get_current_instance().setLevel('WARNING')  # no init_weights listing
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '
      f'mmengine {mmengine.__version__}, onnx {onnx.__version__}, mmdeploy {mmdeploy.__version__}')
config = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'
torch.manual_seed(0)
model, _ = load_model(config)  # random weights: the export does not depend on them
with torch.no_grad():
    model.bbox_head.retina_cls.bias.fill_(-1.0)  # scores ~0.3: 100 detections to compare
torch.save({'state_dict': model.state_dict()}, f'{work}/random.pth')
# mmdeploy's configs/mmdet/detection/detection_onnxruntime_dynamic.py, flattened.
deploy_cfg = Config(dict(
    onnx_config=dict(
        type='onnx', export_params=True, keep_initializers_as_inputs=False, opset_version=11,
        save_file='end2end.onnx', input_names=['input'], output_names=['dets', 'labels'],
        input_shape=None, optimize=True,
        dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'},
                      'dets': {0: 'batch', 1: 'num_dets'},
                      'labels': {0: 'batch', 1: 'num_dets'}}),
    codebase_config=dict(
        type='mmdet', task='ObjectDetection', model_type='end2end',
        post_processing=dict(score_threshold=0.05, confidence_threshold=0.005,
                             iou_threshold=0.5, max_output_boxes_per_class=200,
                             pre_top_k=5000, keep_top_k=100, background_label_id=-1)),
    backend_config=dict(type='onnxruntime')))
image = np.random.RandomState(0).randint(0, 256, (256, 320, 3), dtype=np.uint8)
from mmdeploy.apis import torch2onnx
if legacy:
    # Workaround for the first failure: torch >= 2.9 defaults to dynamo=True, which
    # mmdeploy (written for torch <= 2.0) does not expect; ask for the TorchScript exporter.
    torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)
    print('(torch.onnx.export called with dynamo=False)')
try:
    torch2onnx(image, work, 'end2end.onnx', deploy_cfg, config, f'{work}/random.pth', 'cpu')
except BaseException as exc:  # noqa: B036 (report whatever stops it)
    traceback.print_exc()
    lines = str(exc).splitlines() or ['']
    cause = next((ln for ln in lines if ln.startswith('<class')), lines[0])  # export summary
    print(f'OUTCOME: mmdeploy torch2onnx FAILED: {type(exc).__name__}: {cause}')
    sys.exit(1)
import onnxruntime as ort
from mmdet.structures import DetDataSample
sess = ort.InferenceSession(f'{work}/end2end.onnx', providers=['CPUExecutionProvider'])
print('exported: opset', onnx.load(f'{work}/end2end.onnx').opset_import[0].version)
same = True  # WORKED means: the file runs at both sizes AND gives PyTorch's detections
for h, w in ((256, 320), (289, 337)):  # the example size and another (dynamic axes)
    x = torch.randn(1, 3, h, w)
    dets, labels = sess.run(None, {'input': x.numpy()})
    meta = dict(img_shape=(h, w), batch_input_shape=(h, w), scale_factor=(1., 1.))
    with torch.no_grad():
        ref = model.predict(x, [DetDataSample(metainfo=meta)], rescale=False)[0].pred_instances
    n, m = len(ref.scores), int((dets[0, :, 4] > 0).sum())
    k = min(n, m)
    labels_equal = bool((labels[0, :k] == ref.labels.numpy()[:k]).all())
    box = float(np.abs(dets[0, :k, :4] - ref.bboxes.numpy()[:k]).max()) if k else float('nan')
    ok = n > 0 and n == m and labels_equal and box <= 0.01
    same = same and ok
    print(f'{h}x{w}: ONNX Runtime {m} dets, PyTorch {n}; labels equal: {labels_equal}; '
          f'max |box diff| {box:.2g} px (tolerance 0.01) -> {"same" if ok else "DIFFERENT"}')
if not same:
    print('OUTCOME: mmdeploy torch2onnx exported a file, but its detections DIFFER from '
          "PyTorch's (or there were none to compare)")
    sys.exit(2)
print('OUTCOME: mmdeploy torch2onnx WORKED (same detections as PyTorch at both sizes)')
PY
echo "== 1. mmdeploy as is (torch.onnx.export's default exporter)"
"$PY" "$WORK/try.py" "$WORK" default 2>&1 | tail -n 25
first=${PIPESTATUS[0]}
echo "== 2. the same with the TorchScript exporter (dynamo=False)"
"$PY" "$WORK/try.py" "$WORK" legacy 2>&1 | tail -n 25
second=${PIPESTATUS[0]}
# Exit 0 only when one of the two ways gave PyTorch's detections.
[ "$first" -eq 0 ] || [ "$second" -eq 0 ]
