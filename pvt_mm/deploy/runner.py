"""ONNX Runtime inference of an exported file: load once, ``predict(images)`` many times.

:class:`ORTSession` is the engine (one ONNX Runtime session); :class:`ORTRunner` checks
the input and runs it; :class:`ORTDetector` turns the
graph's padded ``dets`` / ``labels`` into mmdet ``DetDataSample`` results (rescaled to the
original image with each sample's ``scale_factor`` inside the graph, as
``model.predict(rescale=True)``).
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .errors import DeployError

Array = Union[np.ndarray, torch.Tensor]


class ORTSession:
    """An ONNX Runtime CPU session over one exported file: the engine under every runner.

    Any object with the same four members (``input_names``, ``output_names``,
    ``channels`` and ``run(feeds)``) can stand in for it, e.g. an OpenVINO compiled model
    (``tools/deployment/benchmark_onnx.py --openvino``).

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

    def run(self, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """Every output, in ``output_names`` order."""
        return self.session.run(self.output_names, feeds)

    def end_profiling(self) -> str:
        """Stop profiling; the path of ONNX Runtime's JSON profile."""
        return self.session.end_profiling()


class ORTRunner:
    """Checked inputs in, the graph's raw outputs out, over one session.

    Args:
        path: The ``.onnx`` file, or an open engine (an :class:`ORTSession` or an object
            with its members), which is then used as is.
        **session_kwargs: :class:`ORTSession`'s options when ``path`` is a file
            (``num_threads``, ``providers``, ``profile``).
    """

    def __init__(self, path: Union[str, Path, ORTSession], **session_kwargs) -> None:
        if isinstance(path, (str, Path)):
            self.session = ORTSession(path, **session_kwargs)
        elif session_kwargs:
            raise TypeError(f'session options {sorted(session_kwargs)} apply to a file path, '
                            'not to an open session')
        else:
            self.session = path

    @property
    def input_names(self) -> List[str]:
        return self.session.input_names

    @property
    def output_names(self) -> List[str]:
        return self.session.output_names

    @property
    def channels(self):
        return self.session.channels

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
        if len(extra) != len(self.input_names) - 1:
            raise DeployError(f'The file takes inputs {self.input_names}; got the images and '
                              f'{len(extra)} more.')
        feeds = dict(zip(self.input_names, (self.check_images(images), ) + extra))
        return self.session.run(feeds)

    def end_profiling(self) -> str:
        """Stop profiling; the path of ONNX Runtime's JSON profile."""
        return self.session.end_profiling()


class ORTDetector(ORTRunner):
    """A RetinaNet file exported with ``part='model'``: mmdet-style results."""

    @staticmethod
    def whole_image_inputs(images: Array) -> tuple:
        """The file's ``img_shapes`` and ``scale_factors`` for a batch whose images fill
        the tensor, with results in its coordinates (what ``predict`` passes without data
        samples)."""
        b, _, h, w = images.shape
        return (np.array([[h, w]] * b, dtype=np.float32), np.ones((b, 2), dtype=np.float32))

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
        # The graph rescales to the original image itself (min_bbox_size and NMS apply
        # there, as in mmdet); factors of one keep the input's coordinates.
        factors = np.array([s.metainfo['scale_factor'] if rescale else (1.0, 1.0)
                            for s in data_samples], dtype=np.float32)
        dets, labels = self.run(images, shapes, factors)
        for sample, det, label in zip(data_samples, dets, labels):
            keep = label >= 0
            result = InstanceData()
            result.bboxes = torch.from_numpy(det[keep, :4].copy())
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
    """The runner class that fits the file's outputs, over one session of it."""
    session = ORTSession(path, **kwargs)
    cls = {'dets': ORTDetector, 'logits': ORTClassifier,
           'seg_logits': ORTSegmentor}.get(session.output_names[0], ORTRunner)
    return cls(session)
