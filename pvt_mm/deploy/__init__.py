"""Deployment: ONNX export (``torch.onnx.export(dynamo=True)``, dynamic batch / H / W) and
ONNX Runtime inference of pvt_mm models. Needs the ``deploy`` extra
(``pip install ".[deploy]"``: onnx, onnxruntime, onnxscript)."""
from .attention import ATTENTION_MODES
from .export import DEFAULT_OPSET, PARTS, build_graph, check_dynamic, export_onnx, load_model
from .errors import SUPPORTED, DeployError
from .runner import ORTClassifier, ORTDetector, ORTRunner, ORTSegmentor, runner_for
from .verify import compare_detections, detections_equal, verify_onnx

__all__ = ['ATTENTION_MODES', 'DEFAULT_OPSET', 'PARTS', 'SUPPORTED', 'DeployError', 'ORTClassifier', 'ORTDetector',
           'ORTRunner', 'ORTSegmentor', 'build_graph', 'check_dynamic', 'export_onnx',
           'load_model', 'runner_for', 'compare_detections', 'detections_equal', 'verify_onnx']
