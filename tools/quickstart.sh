#!/usr/bin/env bash
# The main job: set up the stack (same setup as the tests), generate the embedded COCO-format
# shapes set, train RetinaNet + PVT v2-b0 on it from scratch, evaluate COCO AP on held-out
# images (drawn from a different random stream, never seen in training) and draw the result.
# Prints one line per phase plus training progress; the full logs stay in the work dir.
# Measured figures (time, AP) are in README.md's main-job section.
#   bash tools/quickstart.sh            # WORK_DIR=work_dirs/quickstart by default
# Uses the GPU when PyTorch sees one (mmengine picks it); nothing here forces the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
CONFIG=configs/retinanet/pvtv2_b0_fpn_shapes.py
WORK=${WORK_DIR:-work_dirs/quickstart}
DATA=data/shapes_coco
AP_FLOOR=${AP_FLOOR:-0.4}  # an untrained detector scores ~0.00; see README for measured runs
SCORE_THR=0.3              # predictions drawn in predictions.png
mkdir -p "$WORK"

# Runs "$@" with its output in the log file $1; on failure shows the log's tail and stops.
quiet() {
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "FAILED: $* (exit status above; full log: $log)" >&2
    exit 1
  fi
}

echo "[setup] checking the Python stack in .venv (the first run builds mmcv: ~15 min on 2 cores)"
quiet "$WORK/setup.log" bash tools/setup_env.sh
PY=.venv/bin/python
"$PY" -c "import torch; print('[setup] ok: torch', torch.__version__, '-', \
'training on GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
'no GPU: training on ' + str(torch.get_num_threads()) + ' CPU threads')"

echo "[data] $DATA: the embedded shapes set (made once, reused after)"
quiet "$WORK/data.log" "$PY" tools/misc/make_shapes_coco.py --out "$DATA"
echo "[data] $(tail -n 1 "$WORK/data.log")"

"$PY" -m pvt_mm.progress "$WORK/train.log" training -- \
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK"
CKPT="$WORK/$(xargs basename < "$WORK/last_checkpoint")"

"$PY" -m pvt_mm.progress "$WORK/test.log" evaluation -- \
  "$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --out "$WORK/test/preds.pkl"

echo "[pictures] predictions.png and curves.png"
quiet "$WORK/draw.log" "$PY" tools/misc/draw_predictions.py \
  "$DATA/annotations/instances_val2017.json" "$WORK/test/preds.pkl" "$WORK/predictions.png" \
  --num 6 --cols 3 --score-thr "$SCORE_THR" --config "$CONFIG" \
  --title "RetinaNet + PVT v2-b0 from scratch, held-out images"
quiet "$WORK/curves.log" "$PY" tools/analysis/analyze_logs.py plot_curve "$WORK" \
  --keys loss bbox_mAP bbox_mAP_50 --legend quickstart --out "$WORK/curves.png" \
  --title "training loss; COCO bbox AP and AP50 on the held-out images after each epoch"

"$PY" - "$WORK/test/test_metrics.json" "$AP_FLOOR" "$((SECONDS - START))" <<'PYEOF'
import json, sys
metrics = json.load(open(sys.argv[1]))
ap, floor, seconds = metrics['coco/bbox_mAP'], float(sys.argv[2]), int(sys.argv[3])
print(f'[result] Main job: COCO bbox AP = {ap:.3f} on held-out images '
      f'(AP50 {metrics["coco/bbox_mAP_50"]:.3f}); floor {floor}: '
      f'{"PASS" if ap > floor else "FAIL"} ({seconds // 60}m{seconds % 60:02d}s in all)')
sys.exit(0 if ap > floor else 1)
PYEOF
echo "checkpoint: $CKPT   logs: $WORK/*.log   pictures: $WORK/predictions.png $WORK/curves.png"
