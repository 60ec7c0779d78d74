#!/usr/bin/env bash
# Idempotent environment setup for pvt_mm.
#
# Turns a fresh machine (Python 3.11, no GPU needed) into a working OpenMMLab stack in
# .venv/ at the repository root.  Run it as often as you like: every step checks first
# and does nothing when its work is already done.
#
# mmcv 2.1.0 has no Linux wheel on the index, so it is built from source with its
# compiled ops (about 15 minutes on 2 cores).  The built wheel is cached outside the
# repository, keyed by the torch version it was built against, so a second install takes
# seconds.  Override the cache location with PVT_MM_CACHE.
#
# Two stacks, chosen with PVT_MM_STACK (docs/get_started.md lists what each was tested with):
#   PVT_MM_STACK=pinned (default)  torch 2.14.1 + torchvision 0.29.1, in .venv/
#   PVT_MM_STACK=oldest            the last official OpenMMLab wheel set: torch 2.1.2 +
#                                  torchvision 0.16.2 + numpy 1.26.4, in .venv-oldest/
# Both get mmcv 2.1.0 (with ops), mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2 and
# mmpretrain 1.2.0; only the pinned stack gets the `deploy` extra (ONNX export needs a newer
# torch, see pvt_mm/capabilities.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${PVT_MM_STACK:-pinned}"
PY="${PYTHON:-python3}"
CACHE="${PVT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pvt_mm}"

case "$STACK" in
  pinned)
    VENV="${PVT_MM_VENV:-$ROOT/.venv}"
    TORCH_VERSION=2.14.1
    TORCHVISION_VERSION=0.29.1
    NUMPY_SPEC=numpy
    OPENCV_SPEC=opencv-python
    CXX_STD=c++20  # torch >= 2.10's headers need C++20; mmcv 2.1.0 hard-codes C++17
    WITH_DEPLOY=1
    ;;
  oldest)
    VENV="${PVT_MM_VENV:-$ROOT/.venv-oldest}"
    TORCH_VERSION=2.1.2
    TORCHVISION_VERSION=0.16.2
    # torch 2.1 was built against numpy 1.x; OpenCV >= 4.11 wheels want numpy >= 2.
    NUMPY_SPEC=numpy==1.26.4
    OPENCV_SPEC='opencv-python<4.11'
    CXX_STD=c++17  # mmcv's own flag: torch 2.1's headers build with it
    WITH_DEPLOY=0
    ;;
  *)
    printf '[setup_env] PVT_MM_STACK=%s is not a stack; use pinned (default) or oldest\n' "$STACK" >&2
    exit 2
    ;;
esac
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
MMSEG_VERSION=1.2.2
MMPRETRAIN_VERSION=1.2.0
# The `deploy` extra: ONNX export and ONNX Runtime (tools/deployment/, tests/test_deploy.py).
ONNX_VERSION=1.23.2
ONNXRUNTIME_VERSION=1.31.1
ONNXSCRIPT_VERSION=0.7.2
OPENVINO_VERSION=2026.4.1

log() { printf '[setup_env] %s\n' "$*" >&2; }
log "stack: $STACK (torch $TORCH_VERSION) in $VENV"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@"; }

have() {  # have MODULE VERSION -> true when MODULE imports at exactly VERSION
  "$VPY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
try:
    sys.exit(0 if md.version(sys.argv[1]) == sys.argv[2] else 1)
except md.PackageNotFoundError:
    sys.exit(1)
PYEOF
}

# 1. torch + torchvision (the CUDA build: it also runs on CPU, and torchvision needs it).
if ! have torch "$TORCH_VERSION" || ! have torchvision "$TORCHVISION_VERSION"; then
  log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "$NUMPY_SPEC"
fi

# 2. mmcv with compiled ops, from the wheel cache or built from source.
if ! "$VPY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  PYTAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG-$(uname -m)"
  WHEEL="$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$WHEEL" ]; then
    log "building mmcv $MMCV_VERSION with ops from source (about 15 minutes on 2 cores)"
    # mmcv 2.1.0's setup.py only builds with setuptools < 70; torch and mmengine want
    # 77 <= setuptools < 81 (mmengine needs pkg_resources), restored right after the build.
    pip_install "setuptools<70" wheel ninja
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    "$VPY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    if [ "$CXX_STD" != c++17 ]; then
      sed -i "s/-std=c++17/-std=$CXX_STD/g; s/std=c++14/std=$CXX_STD/g" "$SRC/setup.py"
    fi
    (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$VPY" -m pip wheel --no-build-isolation --no-deps --quiet -w "$BUILD/dist" .)
    mkdir -p "$WHEEL_DIR"
    # Copy then rename so an interrupted copy never leaves a half wheel in the cache.
    BUILT="$(ls "$BUILD"/dist/mmcv-*.whl)"
    cp "$BUILT" "$WHEEL_DIR/.partial" && mv "$WHEEL_DIR/.partial" "$WHEEL_DIR/$(basename "$BUILT")"
    WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
    log "cached $WHEEL"
    pip_install "setuptools<81"
  else
    log "installing cached $WHEEL"
  fi
  pip_install --no-deps "$WHEEL"
  # mmcv's own runtime needs (its wheel was installed without resolving them).
  pip_install addict "$NUMPY_SPEC" packaging Pillow pyyaml yapf "$OPENCV_SPEC"
fi

# 3. The OpenMMLab libraries, their undeclared needs, test tools, and pvt_mm itself.
if ! have mmengine "$MMENGINE_VERSION" || ! have mmdet "$MMDET_VERSION" \
   || ! have mmsegmentation "$MMSEG_VERSION" || ! have mmpretrain "$MMPRETRAIN_VERSION" \
   || ! have pvt_mm "$("$VPY" -c "import re;print(re.search(r\"__version__ = '(.+)'\", open('$ROOT/pvt_mm/version.py').read())[1])")" \
   || ! "$VPY" -c "import ftfy, regex, pytest, pycocotools, pkg_resources, modelindex" 2>/dev/null; then
  log "installing mmengine, mmdet, mmsegmentation, mmpretrain and pvt_mm"
  pip_install "mmengine==$MMENGINE_VERSION" "mmdet==$MMDET_VERSION" \
    "mmsegmentation==$MMSEG_VERSION" "mmpretrain==$MMPRETRAIN_VERSION" \
    "mmcv==$MMCV_VERSION" ftfy regex "$NUMPY_SPEC" "$OPENCV_SPEC" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    "setuptools<81"  # mmengine resolves `mmdet::` config bases with pkg_resources
  if [ "$WITH_DEPLOY" = 1 ]; then
    pip_install -e "$ROOT[tests]"
  else  # everything but the deploy extra
    pip_install -e "$ROOT[all]" pytest model-index "torch==$TORCH_VERSION" "$NUMPY_SPEC"
  fi
fi

# 4. The `deploy` extra at the versions the deployment tests were measured with.
if [ "$WITH_DEPLOY" = 1 ] && { ! have onnx "$ONNX_VERSION" || ! have onnxruntime "$ONNXRUNTIME_VERSION" \
   || ! have onnxscript "$ONNXSCRIPT_VERSION" || ! have openvino "$OPENVINO_VERSION"; }; then
  log "installing onnx $ONNX_VERSION, onnxruntime $ONNXRUNTIME_VERSION, onnxscript" \
    "$ONNXSCRIPT_VERSION, openvino $OPENVINO_VERSION"
  pip_install "onnx==$ONNX_VERSION" "onnxruntime==$ONNXRUNTIME_VERSION" \
    "onnxscript==$ONNXSCRIPT_VERSION" "openvino==$OPENVINO_VERSION"
fi

CHECK="import mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models, pvt_mm"
[ "$WITH_DEPLOY" = 1 ] && CHECK="$CHECK, onnx, onnxruntime, onnxscript, openvino"
"$VPY" -c "$CHECK" \
  || { log "the stack does not import; see the messages above"; exit 1; }
log "ready: $VENV"
