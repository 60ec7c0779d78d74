"""The deployment package's error type and the list of what it exports, shared by every
deploy module (no module imports them from another's internals)."""


class DeployError(ValueError):
    """A model or input that the deployment code cannot handle (the message says why)."""


#: What :func:`pvt_mm.deploy.build_graph` exports, for error messages and docs.
SUPPORTED = (
    "part='backbone': the backbone of any config (PVT v1 / v2: the four stage maps)",
    "part='model': RetinaNet (mmdet single-stage detectors with an AnchorHead that scores "
    'with a sigmoid and decodes with DeltaXYWHBBoxCoder), mmseg EncoderDecoder '
    "(Semantic FPN, mode='whole') and mmpretrain ImageClassifier",
)
