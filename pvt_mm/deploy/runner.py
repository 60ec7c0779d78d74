"""ONNX Runtime inference of an exported file: load once, ``predict(images)`` many times.

:class:`ORTRunner` checks the input and runs the session; :class:`ORTDetector` turns the
graph's padded ``dets`` / ``labels`` into mmdet ``DetDataSample`` results (rescaled to the
original image with each sample's ``scale_factor``, as ``model.predict(rescale=True)``).
"""
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .graphs import DeployError

Array = Union[np.ndarray, torch.Tensor]


class ORTRunner:
    """An ONNX Runtime CPU session over one exported file.

    Args:
        path: The ``.onnx`` file.
        num_threads: Intra-op threads; default ``torch.get_num_threads()`` (the same
            threads PyTorch would use).
        providers: ONNX Runtime execution providers (default: CPU).
        profile: Write ONNX Runtime's per-operator profile (see :meth:`end_profiling`).
    """

    def __init__(self, path: Union[str, Path], num_threads: Optional[int] = None,
                 providers: Sequence[str] = ('CPUExecutionProvider', ),
                 profile: bool = False) -> None:
        import onnxruntime as ort
        if not Path(path).is_file():
            raise FileNotFoundError(f'ONNX file {str(path)!r} does not exist; export one with '
                                    'tools/deployment/pytorch2onnx.py.')
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = profile
        if profile:
            # ONNX Runtime writes the profile into the working directory by default (in a
            # checkout: among the sources); the temporary directory keeps it out.
            import os
            import tempfile
            options.profile_file_prefix = os.path.join(tempfile.gettempdir(),
                                                       'onnxruntime_profile')
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.channels = self.session.get_inputs()[0].shape[1]

    def check_images(self, images: Array) -> np.ndarray:
        """The batch as a float32 ndarray, or a :class:`DeployError` naming what is wrong."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if not isinstance(images, np.ndarray):
            raise DeployError(f'images must be a numpy array or a torch tensor, got '
                              f'{type(images).__name__}.')
        if images.ndim != 4:
            raise DeployError(f'images must be a (B, {self.channels}, H, W) batch, got rank '
                              f'{images.ndim} (shape {images.shape}); add the batch axis.')
        if isinstance(self.channels, int) and images.shape[1] != self.channels:
            raise DeployError(f'images must have {self.channels} channels in axis 1 (NCHW), '
                              f'got shape {images.shape}.')
        if images.dtype != np.float32:
            raise DeployError(f'images must be float32 (normalised by the data preprocessor), '
                              f'got {images.dtype}; the exported model is fp32.')
        return np.ascontiguousarray(images)

    def run(self, images: Array, *extra: np.ndarray) -> List[np.ndarray]:
        """The graph's raw outputs for a checked batch (and any further inputs)."""
        feeds = dict(zip(self.input_names, (self.check_images(images), ) + extra))
        return self.session.run(self.output_names, feeds)

    def end_profiling(self) -> str:
        """Stop profiling; the path of ONNX Runtime's JSON profile."""
        return self.session.end_profiling()


class ORTDetector(ORTRunner):
    """A RetinaNet file exported with ``part='model'``: mmdet-style results."""

    def predict(self, images: Array, data_samples: Optional[list] = None,
                rescale: bool = True) -> list:
        """Detect in a normalised, padded batch.

        Args:
            images: ``(B, 3, H, W)`` float32, after the data preprocessor.
            data_samples: mmdet ``DetDataSample`` per image (their ``img_shape`` clips the
                boxes, ``scale_factor`` rescales them); ``None``: whole tensor, no rescale.
            rescale: Map boxes back to the original image (mmdet's ``rescale=True``).

        Returns:
            ``data_samples`` (new ones when ``None``) with ``pred_instances``
            (``bboxes``, ``scores``, ``labels``), best first.
        """
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        images = self.check_images(images)
        b, _, h, w = images.shape
        if data_samples is None:
            data_samples = [DetDataSample(metainfo=dict(img_shape=(h, w))) for _ in range(b)]
            rescale = False
        if len(data_samples) != b:
            raise DeployError(f'{len(data_samples)} data samples for a batch of {b} images.')
        shapes = np.array([s.metainfo.get('img_shape', (h, w))[:2] for s in data_samples],
                          dtype=np.float32)
        dets, labels = self.run(images, shapes)
        for sample, det, label in zip(data_samples, dets, labels):
            keep = label >= 0
            result = InstanceData()
            bboxes = torch.from_numpy(det[keep, :4].copy())
            if rescale:
                sx, sy = sample.metainfo['scale_factor']
                bboxes = bboxes * bboxes.new_tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy])
            result.bboxes = bboxes
            result.scores = torch.from_numpy(det[keep, 4].copy())
            result.labels = torch.from_numpy(label[keep].copy())
            sample.pred_instances = result
        return data_samples


class ORTClassifier(ORTRunner):
    """A classifier file: ``predict(images)`` returns the logits ``(B, classes)``."""

    def predict(self, images: Array) -> torch.Tensor:
        return torch.from_numpy(self.run(images)[0])


class ORTSegmentor(ORTRunner):
    """A Semantic FPN file: ``predict(images)`` returns the per-pixel logits at the input
    size (``(B, classes, H, W)``); the label map is their argmax over axis 1."""

    def predict(self, images: Array) -> torch.Tensor:
        return torch.from_numpy(self.run(images)[0])


def runner_for(path: Union[str, Path], **kwargs) -> ORTRunner:
    """The runner class that fits the file's outputs."""
    runner = ORTRunner(path, **kwargs)
    cls = {'dets': ORTDetector, 'logits': ORTClassifier,
           'seg_logits': ORTSegmentor}.get(runner.output_names[0], ORTRunner)
    return runner if cls is ORTRunner else cls(path, **kwargs)
