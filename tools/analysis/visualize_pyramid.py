#!/usr/bin/env python
"""Picture PVT's feature pyramid (and its spatial-reduction attention) for one image.

    python tools/analysis/visualize_pyramid.py IMAGE CONFIG [CHECKPOINT] --out pyramid.png
        [--attn-query X Y] [--layer -1] [--size 512] [--reduce pca|mean|norm]

The first row shows the image and the four backbone feature maps (strides 4, 8, 16, 32),
each reduced to one channel (first PCA component by default, or the channel mean / L2
norm) and normalised. With ``--attn-query X Y`` (pixel coordinates in the original image)
a second row shows, for each stage, where that query pixel attends: the spatial-reduction
attention of one encoder layer (``--layer``, the last by default), averaged over heads and
drawn over the image. Keys of a stage live on its grid shrunk R x R times (R = 8, 4, 2, 1),
which is what the blocks in the picture show.

The attention is computed explicitly from the layer's own ``q`` / ``kv`` projections and
reduction, while the backbone runs its own forward (:mod:`pvt_mm.models.attention_maps`;
the model itself runs fused scaled-dot-product attention and never materialises the
matrix). Works with any config whose backbone is pvt_mm's ``PVT``
(detection, segmentation, classification); without a checkpoint the backbone is randomly
initialised. The PNG is written to a temporary name and renamed.
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from typing import List, Optional, Tuple

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import numpy as np
import torch
import torch.nn.functional as F

from pvt_mm.models.attention_maps import pyramid
from pvt_mm.cli import run_tool

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class PyramidError(Exception):
    """Bad input: reported as a one-line error."""


# --------------------------------------------------------------------------- model
def build_backbone(config: str, checkpoint: Optional[str] = None):
    """Build the config's PVT backbone (random init, or weights from ``checkpoint``).

    Returns:
        ``(backbone, cfg)``; the backbone is in eval mode.
    """
    import pvt_mm
    from pvt_mm.checkpoint import CheckpointError
    from pvt_mm.models.backbones.pvt_convert import load_pretrained
    from pvt_mm.config import build_from_config

    if checkpoint is not None and not osp.isfile(checkpoint):
        raise PyramidError(f'checkpoint file {checkpoint!r} does not exist')
    try:  # weights come from `checkpoint` (or stay random), not the config's init_cfg
        backbone, cfg = build_from_config(config, with_weights=False, part='backbone')
    except (FileNotFoundError, KeyError) as exc:
        raise PyramidError(exc.args[0]) from None
    if not isinstance(backbone, pvt_mm.PVT):
        raise PyramidError(f'the backbone of {config!r} is {type(backbone).__name__}, not PVT')
    backbone.init_weights()
    if checkpoint is not None:
        try:
            load_pretrained(backbone, checkpoint)
        except CheckpointError as exc:
            raise PyramidError(str(exc)) from None
    return backbone.eval(), cfg


def preprocess(rgb: np.ndarray, cfg, size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Resize (longer side ``size``, both sides multiples of 32) and normalise like the
    config's data preprocessor. Returns the ``(1, 3, H, W)`` tensor and ``(H, W)``."""
    pre = cfg.get('model', {}).get('data_preprocessor') or {}
    mean = pre.get('mean') or IMAGENET_MEAN
    std = pre.get('std') or IMAGENET_STD
    rgb_input = pre.get('bgr_to_rgb', pre.get('to_rgb', True))
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    new_h = max(32, int(round(h * scale / 32)) * 32)
    new_w = max(32, int(round(w * scale / 32)) * 32)
    img = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    img = F.interpolate(img, size=(new_h, new_w), mode='bilinear', align_corners=False)
    if not rgb_input:  # the model was trained on BGR
        img = img.flip(1)
    img = (img - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return img, (new_h, new_w)


# --------------------------------------------------------------------------- drawing
def reduce_channels(feature: np.ndarray, how: str = 'pca') -> np.ndarray:
    """(C, h, w) -> (h, w) in [0, 1]: first PCA component, channel mean, or L2 norm."""
    c, h, w = feature.shape
    flat = feature.reshape(c, -1).T.astype(np.float64)  # (hw, C)
    if how == 'mean':
        out = flat.mean(1)
    elif how == 'norm':
        out = np.linalg.norm(flat, axis=1)
    else:
        centred = flat - flat.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[0]
        if np.corrcoef(out, flat.mean(1))[0, 1] < 0:  # fix PCA's arbitrary sign
            out = -out
    return normalise(out.reshape(h, w))


def normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    if not np.isfinite(lo) or hi - lo < 1e-12:
        return np.zeros_like(a, dtype=np.float64)
    return np.clip((a - lo) / (hi - lo), 0, 1)


def draw(rgb_resized: np.ndarray, stages: List[dict], out: str, reduce: str = 'pca',
         query_xy: Optional[Tuple[float, float]] = None, title: str = '',
         query_label: Optional[Tuple[float, float]] = None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = 2 if query_xy is not None else 1
    cols = 1 + len(stages)
    height, width = rgb_resized.shape[:2]
    panel = 2.6
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols, panel * rows * height / width + 0.6 * rows),
                             squeeze=False)
    axes[0, 0].imshow(rgb_resized)
    axes[0, 0].set_title(f'input {width}x{height}', fontsize=9)
    for k, info in enumerate(stages):
        feat = info['feature']
        ax = axes[0, k + 1]
        ax.imshow(reduce_channels(feat, reduce), cmap='viridis', interpolation='nearest')
        ax.set_title(f'stage {k + 1}: stride {info["stride"]}\n{feat.shape[0]} ch, '
                     f'{feat.shape[1]}x{feat.shape[2]}', fontsize=9)
    if query_xy is not None:
        axes[1, 0].imshow(rgb_resized)
        axes[1, 0].plot(*query_xy, marker='+', color='red', markersize=14, mew=2)
        shown = query_label or query_xy
        axes[1, 0].set_title(f'query pixel ({shown[0]:.0f}, {shown[1]:.0f})', fontsize=9)
        for k, info in enumerate(stages):
            ax = axes[1, k + 1]
            attn = info['attention']
            ax.imshow(rgb_resized, alpha=0.45)
            span = attn.max() - attn.min()
            ax.imshow((attn - attn.min()) / span if span > 0 else np.zeros_like(attn),
                      cmap='magma', alpha=0.7,
                      extent=(0, width, height, 0), interpolation='nearest', vmin=0, vmax=1)
            ax.plot(*query_xy, marker='+', color='cyan', markersize=12, mew=2)
            ax.set_title(f'SRA R={info["sr_ratio"]} (layer {info["layer"] + 1}, '
                         f'{info["heads"]} heads)\nkeys {attn.shape[0]}x{attn.shape[1]}',
                         fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    label = {'pca': 'first PCA component', 'mean': 'channel mean', 'norm': 'L2 norm'}[reduce]
    fig.suptitle(f'{title}feature maps: {label} per stage, normalised', fontsize=10)
    fig.tight_layout()
    tmp = f'{out}.tmp.png'
    try:
        fig.savefig(tmp, dpi=80, format='png')
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if osp.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------- CLI
def read_image(path: str) -> np.ndarray:
    if not osp.isfile(path):
        raise PyramidError(f'image {path!r} does not exist')
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert('RGB'))
    except (UnidentifiedImageError, OSError) as exc:
        raise PyramidError(f'cannot read image {path!r}: {exc}') from None


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Draw the PVT feature pyramid of an image')
    parser.add_argument('image')
    parser.add_argument('config', help='any config whose model.backbone is PVT')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='whole-model, pvt_mm or official PVT weights (default: random)')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--attn-query', nargs=2, type=float, metavar=('X', 'Y'),
                        help='also draw the SRA attention of this pixel (original image coords)')
    parser.add_argument('--layer', type=int, default=-1,
                        help='encoder layer of each stage whose attention is drawn (default: last)')
    parser.add_argument('--size', type=int, default=512,
                        help='longer side the image is resized to (rounded to multiples of 32)')
    parser.add_argument('--reduce', choices=['pca', 'mean', 'norm'], default='pca',
                        help='how a feature map is reduced to one channel')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random initialisation')
    return parser


def visualize(args: argparse.Namespace) -> str:
    """Draw the picture that ``args`` asks for; returns the line that reports it.

    Raises:
        PyramidError: a wrong argument or an unreadable image.
    """
    if not args.out.lower().endswith('.png'):
        raise PyramidError(f'--out must be a .png file, got {args.out!r}')
    if args.size < 32:
        raise PyramidError('--size must be at least 32')
    rgb = read_image(args.image)
    query = None
    if args.attn_query is not None:
        x, y = args.attn_query
        if not (0 <= x < rgb.shape[1] and 0 <= y < rgb.shape[0]):
            raise PyramidError(f'--attn-query ({x:g}, {y:g}) is outside the '
                               f'{rgb.shape[1]}x{rgb.shape[0]} image')
    torch.manual_seed(args.seed)
    backbone, cfg = build_backbone(args.config, args.checkpoint)
    img, (h, w) = preprocess(rgb, cfg, args.size)
    if args.attn_query is not None:
        query = (args.attn_query[0] * w / rgb.shape[1], args.attn_query[1] * h / rgb.shape[0])
    try:
        stages = pyramid(backbone, img, query, args.layer)
    except ValueError as exc:
        raise PyramidError(f'--layer: {exc}') from None
    resized = np.asarray(
        F.interpolate(torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None],
                      size=(h, w), mode='bilinear', align_corners=False)[0]
        .permute(1, 2, 0).clamp(0, 255).byte())
    weights = 'random weights' if args.checkpoint is None else osp.basename(args.checkpoint)
    title = f'PVT-{backbone.arch["depths"]} ({weights}): '
    names = [n for n, a in type(backbone).arch_zoo.items() if a == backbone.arch]
    if names:
        title = f'PVT-{names[0].capitalize()} ({weights}): '
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    draw(resized, stages, args.out, args.reduce, query, title,
         tuple(args.attn_query) if args.attn_query is not None else None)
    return f'wrote {args.out}'


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: visualize(args), PyramidError)


if __name__ == '__main__':
    sys.exit(main())
