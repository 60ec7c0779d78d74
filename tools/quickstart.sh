#!/usr/bin/env bash
# The main job: set up the stack (same setup as the tests), generate the embedded COCO-format
# shapes set, train RetinaNet + PVT v2-b0 on it from scratch, evaluate it on held-out images
# (drawn from a different random stream, never seen in training or tuning) and draw the
# result. Says first what it will do and how long it takes, then prints one line per phase
# plus training progress, and at the end the figures and where everything is; the full logs
# stay in the work dir. Measured runs: docs/main_job.md.
#   bash tools/quickstart.sh            # WORK_DIR=work_dirs/quickstart by default
# Uses the GPU when PyTorch sees one (mmengine picks it); nothing here forces the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
CONFIG=configs/retinanet/pvtv2_b0_fpn_shapes.py
WORK=${WORK_DIR:-work_dirs/quickstart}
DATA=data/shapes_coco
AP_FLOOR=${AP_FLOOR:-0.6}  # an untrained detector scores ~0.00; docs/main_job.md has measured runs
SCORE_THR=0.3              # predictions drawn in predictions.png and counted in the summary
TRAIN_IMAGES=800
HELD_OUT=64
mkdir -p "$WORK"

cat <<EOF
pvt_mm main job: train a detector (RetinaNet with a PVT v2-b0 backbone) from scratch on
generated images of circles, triangles and rectangles, then test it on $HELD_OUT held-out images.
  1. setup  check the Python stack in .venv; the first run builds it (~15 min on 2 cores)
  2. data   draw $TRAIN_IMAGES training and $HELD_OUT held-out images (seconds)
  3. train  7 epochs: about 5 minutes on an idle 2-core CPU, up to 10 on a busy one (a progress line with ETA every 30 s)
  4. test   COCO box AP and per-class precision / recall on the held-out images (~15 s)
  5. draw   predictions.png and curves.png
Everything goes to $WORK/, each phase's full log too.

EOF

# Runs "$@" with its output in the log file $1; on failure shows the log's tail and stops.
quiet() {
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "FAILED: $* (exit status above; full log: $log)" >&2
    exit 1
  fi
}

echo "[setup] checking the Python stack in .venv (full log: $WORK/setup.log)"
quiet "$WORK/setup.log" bash tools/setup_env.sh
PY=.venv/bin/python
"$PY" -c "import torch; print('[setup] ok: torch', torch.__version__, '-', \
'training on GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
'no GPU: training on ' + str(torch.get_num_threads()) + ' CPU thread(s)')"

echo "[data] $DATA: the embedded shapes set (made once, reused after)"
quiet "$WORK/data.log" "$PY" tools/misc/make_shapes_coco.py --out "$DATA" \
  --train "$TRAIN_IMAGES" --val "$HELD_OUT"
echo "[data] $(tail -n 1 "$WORK/data.log")"

TRAIN_START=$SECONDS
"$PY" -m pvt_mm.progress "$WORK/train.log" training -- \
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK"
CKPT="$WORK/$(xargs basename < "$WORK/last_checkpoint")"

"$PY" -m pvt_mm.progress "$WORK/test.log" "evaluation on the held-out images" -- \
  "$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --out "$WORK/test/preds.pkl"
TRAIN_EVAL=$((SECONDS - TRAIN_START))

echo "[pictures] predictions.png and curves.png"
quiet "$WORK/draw.log" "$PY" tools/misc/draw_predictions.py \
  "$DATA/annotations/instances_val2017.json" "$WORK/test/preds.pkl" "$WORK/predictions.png" \
  --num 6 --cols 3 --score-thr "$SCORE_THR" --config "$CONFIG" \
  --title "RetinaNet + PVT v2-b0 from scratch, held-out images"
quiet "$WORK/curves.log" "$PY" tools/analysis/analyze_logs.py plot_curve "$WORK" \
  --keys loss bbox_mAP bbox_mAP_50 --legend quickstart --out "$WORK/curves.png" \
  --title "training loss; COCO bbox AP and AP50 on the held-out images after each epoch"

# The figures: COCO AP from tools/test.py, and what the picture shows (the boxes at the
# drawing threshold, counted by pvt_mm.threshold_metrics from the same predictions).
echo
# (mmengine's import of pkg_resources warns on every start; nothing to act on here.)
"$PY" -W 'ignore:pkg_resources is deprecated:UserWarning' - "$WORK" "$DATA/annotations/instances_val2017.json" "$CONFIG" "$SCORE_THR" \
  "$AP_FLOOR" "$((SECONDS - START))" "$TRAIN_EVAL" <<'PYEOF'
import json
import sys

from mmengine.config import Config

from pvt_mm.threshold_metrics import load_coco_detections, threshold_metrics

work, ann_file, config, thr, floor, seconds, train_eval = sys.argv[1:]
metrics = json.load(open(f'{work}/test/test_metrics.json'))
ap, floor = metrics['coco/bbox_mAP'], float(floor)
classes = Config.fromfile(config).test_dataloader.dataset.metainfo['classes']
images, gts, preds, names = load_coco_detections(ann_file, f'{work}/test/preds.pkl', classes)
print(f'[result] Main job: COCO bbox AP = {ap:.3f} on the {len(images)} held-out images '
      f'(AP50 {metrics["coco/bbox_mAP_50"]:.3f}); floor {floor}: '
      f'{"PASS" if ap > floor else "FAIL"}')
for line in threshold_metrics(gts, preds, names, float(thr)).lines():
    print(f'[result] {line}')


def minutes(s: str) -> str:
    return f'{int(s) // 60}m{int(s) % 60:02d}s'


print(f'[result] {minutes(seconds)} in all, of which training + evaluation {minutes(train_eval)}')
sys.exit(0 if ap > floor else 1)
PYEOF
cat <<EOF

Where everything is ($WORK/):
  predictions.png          6 held-out images: predictions (thick, score >= $SCORE_THR)
                           over the ground truth (thin, dashed)
  curves.png               training loss; AP on the held-out images after each epoch
  $(printf '%-24s' "$(basename "$CKPT")") the trained detector (last_checkpoint names it)
  test/test_metrics.json   COCO metrics (test/preds.pkl: every prediction)
  *.log                    each phase's full log (train.log: mmengine's own output)
Evaluate it again: .venv/bin/python tools/test.py $CONFIG $CKPT
EOF
