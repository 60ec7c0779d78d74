#!/usr/bin/env bash
# The main job: set up the stack (same setup as the tests), generate the embedded COCO-format
# shapes set, train RetinaNet + PVT-Tiny on it from scratch, evaluate on held-out images
# and draw predictions. About 8 minutes on 2 CPU cores once the stack is installed
# (8m30s measured on the 2-core development machine, 2026-11-21).
#   bash tools/quickstart.sh            # WORK_DIR=work_dirs/quickstart by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
PY=.venv/bin/python
CONFIG=configs/retinanet/pvt_tiny_fpn_shapes.py
WORK=${WORK_DIR:-work_dirs/quickstart}
DATA=data/shapes_coco
AP_FLOOR=${AP_FLOOR:-0.05}  # an untrained detector scores ~0.00; trained: 0.135, 0.165

"$PY" tools/misc/make_shapes_coco.py --out "$DATA"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK"
CKPT="$WORK/$(cat "$WORK/last_checkpoint" | xargs basename)"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --show-dir "$WORK/vis"
"$PY" tools/misc/image_grid.py "$WORK/vis" "$WORK/predictions.png" --num 4
"$PY" - "$WORK/test/test_metrics.json" "$AP_FLOOR" <<'PYEOF'
import json, sys
metrics = json.load(open(sys.argv[1]))
ap, floor = metrics['coco/bbox_mAP'], float(sys.argv[2])
print(f'Main job: COCO bbox AP = {ap:.3f} on held-out images (AP50 {metrics["coco/bbox_mAP_50"]:.3f}); '
      f'floor {floor}: {"PASS" if ap > floor else "FAIL"}')
sys.exit(0 if ap > floor else 1)
PYEOF
echo "checkpoint: $CKPT   logs: $WORK   predictions: $WORK/predictions.png"
