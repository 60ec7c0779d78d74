#!/usr/bin/env python
"""Run a pvt_mm detector or segmentor on images or a video and save drawn predictions.

    python tools/demo.py INPUT CONFIG CHECKPOINT [--out-dir DIR] [--device cpu|cuda:0]
                         [--score-thr 0.3] [--opacity 0.5]

INPUT is an image, a directory of images or a video (.mp4, .avi, .mov, .mkv, .webm). The
config's ``default_scope`` picks the library: ``mmdet`` configs run through mmdet's
``DetInferencer`` (boxes, and masks for Mask R-CNN), ``mmseg`` configs through mmseg's
``MMSegInferencer`` (segmentation maps). Each image becomes ``DIR/<name>.png``; a video
becomes ``DIR/<name>.mp4``. Outputs are written to a temporary name and renamed, so an
interrupted run never leaves a partial file.
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from typing import Optional, Tuple

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
SUPPORTED_SCOPES = ('mmdet', 'mmseg')


class DemoError(Exception):
    """Bad input: reported as a one-line error, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Draw the predictions of a PVT model')
    parser.add_argument('input', help='image file, directory of images, or video file')
    parser.add_argument('config', help='model config (mmdet or mmseg default_scope)')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL')
    parser.add_argument('--out-dir', default='outputs', help='where drawn results are saved')
    parser.add_argument('--device', default=None, help="e.g. 'cpu' or 'cuda:0' (default: "
                        'cuda:0 if available, else cpu)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: minimum score of the boxes drawn')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: opacity of the drawn map')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config settings, e.g. model.test_cfg.score_thr=0.05')
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(argv)


def collect_inputs(path: str):
    """Return ``('images', [paths])`` or ``('video', path)``."""
    if osp.isdir(path):
        images = sorted(osp.join(path, n) for n in os.listdir(path)
                        if n.lower().endswith(IMAGE_EXTS))
        if not images:
            raise DemoError(f'directory {path!r} holds no images ({", ".join(IMAGE_EXTS)})')
        return 'images', images
    if not osp.isfile(path):
        raise DemoError(f'input {path!r} does not exist')
    if path.lower().endswith(VIDEO_EXTS):
        return 'video', path
    return 'images', [path]


def read_image(path: str):
    """Read an image as RGB uint8, or raise DemoError saying the file is not an image."""
    import mmcv
    try:
        with open(path, 'rb') as f:
            img = mmcv.imfrombytes(f.read(), flag='color', channel_order='rgb')
    except Exception as exc:  # cv2/pillow raise various types for junk
        raise DemoError(f'cannot read image {path!r}: {exc}') from exc
    if img is None:
        raise DemoError(f'cannot read image {path!r}: not an image file (or it is damaged)')
    return img


def load_config(path: str, cfg_options: Optional[dict]):
    """Read the config (``pvt_mm.config.read_config``) and check it is a detection or
    segmentation one; return ``(cfg, scope)``."""
    from pvt_mm.config import read_config
    try:
        cfg = read_config(path, cfg_options)  # also runs custom_imports (pvt_mm)
    except FileNotFoundError as exc:
        raise DemoError(str(exc)) from None
    scope = cfg.get('default_scope', 'mmdet')
    if cfg.get('visualizer') is not None:
        cfg.visualizer.vis_backends = None  # we save the drawn images ourselves
    if scope not in SUPPORTED_SCOPES:
        raise DemoError(f'config {path!r} has default_scope={scope!r}; tools/demo.py draws '
                        f'{" and ".join(SUPPORTED_SCOPES)} models (detection, segmentation)')
    return cfg, scope


def check_checkpoint(path: str) -> Tuple[str, dict]:
    """Read the whole-model checkpoint as ``tools/test.py`` does (safe load, clear errors for
    missing, damaged or backbone-only files; an http(s) URL is downloaded once into the torch
    hub cache).

    Returns:
        The checkpoint's local file (what the inferencer loads) and the ``dataset_meta`` it
        carries (empty if none).
    """
    from pvt_mm.checkpoint import CheckpointError, open_model_checkpoint
    try:
        local, ckpt = open_model_checkpoint(path)
    except (FileNotFoundError, CheckpointError) as exc:
        raise DemoError(str(exc)) from None
    meta = ckpt.get('meta')
    return local, (dict(meta.get('dataset_meta') or {}) if isinstance(meta, dict) else {})


def config_metainfo(cfg, scope: str) -> dict:
    """Classes and palette of the config's test dataset (used when the checkpoint has none,
    instead of the inferencers' COCO / Cityscapes fallbacks)."""
    import importlib
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    meta = {}
    try:
        cls = importlib.import_module(f'{scope}.registry').DATASETS.get(dataset.get('type'))
        meta.update(getattr(cls, 'METAINFO', {}) or {})
    except Exception:  # unknown / custom dataset type: keep the inferencer's default
        pass
    meta.update(dataset.get('metainfo') or {})
    return {k: meta[k] for k in ('classes', 'palette') if k in meta}


class Predictor:
    """One-line OpenMMLab inference: ``DetInferencer`` or ``MMSegInferencer`` + drawing."""

    def __init__(self, cfg, scope: str, checkpoint: str, device=None, score_thr: float = 0.3,
                 opacity: float = 0.5, dataset_meta: Optional[dict] = None) -> None:
        # Registers PVT and the safe checkpoint loaders the inferencers read through (the
        # config's custom_imports does too).
        import pvt_mm  # noqa: F401
        self.scope = scope
        if scope == 'mmdet':
            from mmdet.apis import DetInferencer
            self.inferencer = DetInferencer(model=cfg, weights=checkpoint, device=device,
                                            scope='mmdet', show_progress=False)
            if dataset_meta:  # the checkpoint had none: use the config's dataset classes
                self.inferencer.model.dataset_meta = dict(dataset_meta)
                self.inferencer.visualizer.dataset_meta = dict(dataset_meta)
            self.draw_kwargs = dict(pred_score_thr=score_thr)
        else:
            from mmseg.apis import MMSegInferencer
            dataset_meta = dataset_meta or {}
            self.inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device,
                                              scope='mmseg', classes=dataset_meta.get('classes'),
                                              palette=dataset_meta.get('palette'))
            self.inferencer.visualizer.alpha = opacity
            self.draw_kwargs = dict(with_labels=True)

    def __call__(self, rgb, name: str = 'image'):
        """Predict on an RGB uint8 image; return (drawn RGB image, data sample)."""
        bgr = rgb[:, :, ::-1].copy()  # OpenMMLab pipelines take BGR arrays
        if self.scope == 'mmdet':
            pred = self.inferencer(bgr, return_datasamples=True)['predictions'][0]
        else:
            pred = self.inferencer(bgr, return_datasamples=True)
            pred = pred[0] if isinstance(pred, list) else pred
        visualizer = self.inferencer.visualizer
        visualizer.add_datasample(name, rgb, pred, draw_gt=False, draw_pred=True, show=False,
                                  **self.draw_kwargs)
        return visualizer.get_image(), pred


def save_image(rgb, out_file: str) -> None:
    from PIL import Image
    tmp = f'{out_file}.tmp.png'
    try:
        Image.fromarray(rgb).save(tmp)
        os.replace(tmp, out_file)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def run_images(predictor: Predictor, images, out_dir: str):
    from tqdm import tqdm
    written = []
    for path in tqdm(images, desc='images', unit='img', disable=len(images) == 1):
        rgb = read_image(path)
        drawn, _ = predictor(rgb, osp.basename(path))
        out_file = osp.join(out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        save_image(drawn, out_file)
        written.append(out_file)
    return written


def run_video(predictor: Predictor, video: str, out_dir: str):
    import cv2
    from tqdm import tqdm
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise DemoError(f'cannot read video {video!r}: not a video file or no codec for it')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_file = osp.join(out_dir, osp.splitext(osp.basename(video))[0] + '.mp4')
    tmp = f'{out_file}.tmp.mp4'
    writer, frames = None, 0
    try:
        with tqdm(total=total, desc='frames', unit='frame') as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                drawn, _ = predictor(frame[:, :, ::-1].copy(), f'frame_{frames:06d}')
                if writer is None:
                    h, w = drawn.shape[:2]
                    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
                    if not writer.isOpened():
                        raise DemoError(f'cannot write {out_file!r}: OpenCV has no mp4v encoder')
                writer.write(drawn[:, :, ::-1].copy())
                frames += 1
                bar.update(1)
        if writer is None:
            raise DemoError(f'cannot read video {video!r}: it has no frames')
        writer.release()
        writer = None
        os.replace(tmp, out_file)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if osp.exists(tmp):
            os.remove(tmp)
    return [out_file]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        kind, inputs = collect_inputs(args.input)
        cfg, scope = load_config(args.config, args.cfg_options)
        checkpoint, ckpt_meta = check_checkpoint(args.checkpoint)
        if kind == 'images' and len(inputs) == 1:
            read_image(inputs[0])  # fail on an unreadable image before building the model
        os.makedirs(args.out_dir, exist_ok=True)
        # Class names / palette: the checkpoint's when it has them, else the config dataset's.
        # (MMSegInferencer's visualizer only learns them through its constructor.)
        meta = ckpt_meta if ckpt_meta.get('classes') else config_metainfo(cfg, scope)
        if scope == 'mmdet' and ckpt_meta.get('classes'):
            meta = None  # DetInferencer takes them from the checkpoint itself
        predictor = Predictor(cfg, scope, checkpoint, args.device, args.score_thr,
                              args.opacity, meta)
        if kind == 'video':
            written = run_video(predictor, inputs, args.out_dir)
        else:
            written = run_images(predictor, inputs, args.out_dir)
    except DemoError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    for path in written:
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
