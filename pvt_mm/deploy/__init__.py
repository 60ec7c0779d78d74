"""Deployment: ONNX export (``torch.onnx.export(dynamo=True)``, dynamic batch / H / W) and
ONNX Runtime inference of pvt_mm models. Needs the ``deploy`` extra
(``pip install ".[deploy]"``: onnx, onnxruntime, onnxscript).

Importing it on a torch without the exporter's APIs (:data:`pvt_mm.capabilities.ONNX_EXPORT`)
raises :class:`pvt_mm.capabilities.CapabilityError`, naming the torch it needs."""
from ..capabilities import ONNX_EXPORT, require

require(ONNX_EXPORT)  # before .nms registers its op with torch.library.custom_op (2.4+)

from .attention import ATTENTION_MODES
from .export import DEFAULT_OPSET, PARTS, build_graph, check_dynamic, export_onnx, load_model
from .errors import SUPPORTED, DeployError
from .runner import ORTClassifier, ORTDetector, ORTRunner, ORTSegmentor, runner_for
from .verify import compare_detections, detections_equal, verify_onnx

__all__ = ['ATTENTION_MODES', 'DEFAULT_OPSET', 'PARTS', 'SUPPORTED', 'DeployError', 'ORTClassifier', 'ORTDetector',
           'ORTRunner', 'ORTSegmentor', 'build_graph', 'check_dynamic', 'export_onnx',
           'load_model', 'runner_for', 'compare_detections', 'detections_equal', 'verify_onnx']
