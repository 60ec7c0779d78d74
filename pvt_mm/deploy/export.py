"""Export a config's model (or its backbone) to one ONNX file that serves any batch and
input size, and check it against PyTorch.

``torch.onnx.export(..., dynamo=True)`` traces the graph (:mod:`.graphs`, or
:mod:`.retinanet` for a detector) with symbolic
batch, height and width. The export fails (:class:`DeployError`) rather than write a file
that a trace guard pinned to the example size. The file is written to a temporary name
in the same folder and renamed at the end, so an interrupted or failed export leaves no
half file.
"""
import contextlib
import copy
import io
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..fileio import replaced_atomically
from ..models import ops
from ..models.backbones import PVT
from .attention import attention_translations
from .errors import SUPPORTED, DeployError
from .graphs import BackboneGraph, ClassifierGraph, SegmentorGraph
from .mmseg_patch import replace_mmseg_upsamples
from .nms import TRANSLATIONS
from .retinanet import RetinaNetGraph

#: ONNX opset: 23 has the fused ``Attention`` op that ONNX Runtime runs as one kernel.
DEFAULT_OPSET = 23
PARTS = ('model', 'backbone')
#: The inputs of an exported file (a detector's all three, other graphs the images only).
INPUT_NAMES = ['images', 'img_shapes', 'scale_factors']


def model_family(model: nn.Module) -> str:
    """``'detector'``, ``'segmentor'`` or ``'classifier'`` for a built OpenMMLab model."""
    names = {cls.__module__.split('.')[0] for cls in type(model).__mro__}
    if 'mmdet' in names:
        return 'detector'
    if 'mmseg' in names:
        return 'segmentor'
    if 'mmpretrain' in names:
        return 'classifier'
    raise DeployError(f'{type(model).__name__} is no mmdet, mmseg or mmpretrain model. '
                      'Supported: ' + '; '.join(SUPPORTED) + '.')


def build_graph(model: nn.Module, part: str = 'model', img_shapes: bool = False) -> nn.Module:
    """The exportable module for ``part`` of a copy of a built model (in eval mode, each
    token-wise FFN cut into a fixed number of pieces per stage).

    Args:
        model: A model built from a config (weights loaded).
        part: ``'model'`` (end to end) or ``'backbone'`` (the four stage maps).
        img_shapes: ``part='backbone'`` only: the graph also takes each image's size
            (:class:`.graphs.BackboneGraph`'s ``with_img_shapes``; the end-to-end detector
            always does).
    """
    if img_shapes and part != 'backbone':
        raise DeployError("img_shapes is an option of part='backbone' (the end-to-end "
                          'RetinaNet graph always takes img_shapes).')
    if part not in PARTS:
        raise DeployError(f'Unknown part {part!r}; choose one of {PARTS}.')
    model = copy.deepcopy(model)  # the caller's model keeps its own settings
    model.eval()  # dropout / drop-path off, inference code paths (always, whatever the caller did)
    for module in model.modules():
        # FFN token chunking by size depends on the token count (a trace guard on H and
        # W); the graph cuts token-wise FFNs into a fixed number of pieces instead.
        if hasattr(module, 'chunk_tokens') and hasattr(module, 'token_wise'):
            module.chunk_tokens = None
    backbone = getattr(model, 'backbone', model)
    for index, stage in enumerate(getattr(backbone, 'stages', ())):
        for module in stage.modules():
            if getattr(module, 'token_wise', False) and hasattr(module, 'export_chunks'):
                module.export_chunks = ops.export_ffn_chunks(index)
    if part == 'backbone':
        backbone = getattr(model, 'backbone', model)
        return BackboneGraph(backbone, with_img_shapes=img_shapes).eval()
    family = model_family(model)
    if family == 'detector':
        return RetinaNetGraph(model).eval()
    if family == 'segmentor':
        mode = (model.test_cfg or {}).get('mode', 'whole')
        if mode != 'whole' or type(model).__name__ != 'EncoderDecoder':
            raise DeployError(f"Cannot export {type(model).__name__} with test mode {mode!r} "
                              "end to end: only EncoderDecoder with mode='whole'. Supported: "
                              + '; '.join(SUPPORTED) + '.')
        return SegmentorGraph(replace_mmseg_upsamples(model)).eval()
    return ClassifierGraph(model).eval()


#: The smallest example side for a backbone that is not PVT (it states no smallest input):
#: one cell in the last map at the usual total stride of 32.
OTHER_BACKBONE_MIN_SIDE = 32


def min_input_side(model: nn.Module) -> int:
    """The smallest example side an export of ``model`` traces at.

    For PVT, the backbone's own smallest input (:func:`pvt_mm.models.backbones.pvt.min_input_side`
    of its arch) and at least its total stride (every stage map of the example has a cell);
    for another backbone, :data:`OTHER_BACKBONE_MIN_SIDE`.
    """
    backbone = getattr(model, 'backbone', model)
    if not isinstance(backbone, PVT):
        return OTHER_BACKBONE_MIN_SIDE
    return max(backbone.min_input_side, backbone.strides[-1])


def example_inputs(graph: nn.Module, shape: Tuple[int, int], batch: int = 2) -> tuple:
    """Random inputs for ``graph`` at ``shape``; batch 2, so that the batch stays dynamic
    (torch.export specialises a size-1 dimension)."""
    images = torch.randn(batch, 3, *shape)
    if isinstance(graph, RetinaNetGraph):
        # Distinct scale factors per image, so that none is specialised to a constant.
        return (images, torch.tensor([list(shape)] * batch, dtype=torch.float32),
                torch.linspace(0.5, 2.0, 2 * batch).reshape(batch, 2))
    if getattr(graph, 'with_img_shapes', False):  # float32, as the RetinaNet graph's
        return (images, torch.tensor([list(shape)] * batch, dtype=torch.float32))
    return (images, )


def _dynamic_shapes(graph: nn.Module) -> tuple:
    images = {0: 'batch', 2: 'height', 3: 'width'}
    if isinstance(graph, RetinaNetGraph):
        return (images, {0: 'batch'}, {0: 'batch'})
    if getattr(graph, 'with_img_shapes', False):
        return (images, {0: 'batch'})
    return (images, )


def output_names(graph: nn.Module) -> Sequence[str]:
    if isinstance(graph, RetinaNetGraph):
        return ['dets', 'labels']
    if isinstance(graph, BackboneGraph):
        return [f'stage{i + 1}' for i in range(len(graph.backbone.out_indices))]
    if isinstance(graph, SegmentorGraph):
        return ['seg_logits']
    return ['logits']


def check_dynamic(path: Union[str, Path]) -> None:
    """Raise :class:`DeployError` if the file's image input has a fixed batch, H or W, or if
    a ``Resize`` inside has a fixed output size: a module that computed a size in Python
    from the input's shape (``int(h * 2.0)``) had it frozen at the example's, so the file
    would run at other sizes with wrong numbers."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [name for name, dim in zip(('batch', 'channels', 'height', 'width'), dims)
             if name != 'channels' and not dim.dim_param]
    if fixed:
        raise DeployError(f'The export pinned {", ".join(fixed)} of the input to the example '
                          f'size ({[d.dim_value for d in dims]}): a trace guard in the model '
                          'depends on it. Export refused (one file must serve every size).')
    shapes = {v.name: v.type.tensor_type.shape.dim
              for v in list(proto.graph.value_info) + list(proto.graph.output)}
    frozen = []
    for node in proto.graph.node:
        out = shapes.get(node.output[0]) if node.op_type == 'Resize' else None
        if out is not None and len(out) == 4 and not (out[2].dim_param or out[3].dim_param):
            frozen.append(f'{node.name} -> {out[2].dim_value}x{out[3].dim_value}')
    if frozen:
        raise DeployError(f'The export froze the output size of {len(frozen)} Resize node(s) '
                          f'to the example\'s ({", ".join(frozen[:4])}): a module computes an '
                          'upsampling size in Python from the input\'s shape. Export refused '
                          '(the file would give wrong results at every other size).')


def other_size(shape: Tuple[int, int]) -> Tuple[int, int]:
    """The second size an export is checked at: larger than the example by a grid step in
    H and two in W, so that every map of every stage changes size, by different amounts in
    H and W."""
    return shape[0] + 32, shape[1] + 64


def check_other_size(graph: nn.Module, path: Union[str, Path], shape: Tuple[int, int]) -> str:
    """Run the written file and ``graph`` in PyTorch at a batch of one at
    :func:`other_size` and raise :class:`DeployError` unless every output agrees (stage
    maps, logits: 1e-4 relative; a detector's boxes, scores, labels as
    :func:`.verify.detections_equal`). This catches what the file's declared shapes cannot
    show: an op whose size-dependent parameter was frozen to the example (the 8x8
    ``AveragePool`` the exporter writes for an adaptive pool to 7x7 has the right output
    shape at the example size only), or a size computed in Python from the input's shape.

    Returns:
        What was compared (a detector without detections -- untrained weights -- has only
        its empty outputs compared; see the docs).
    """
    from .runner import ORTRunner
    from .verify import MAP_RTOL, detections_close, relative_error
    size = other_size(shape)
    generator = torch.Generator().manual_seed(1)
    inputs = example_inputs(graph, size, batch=1)
    inputs = (torch.randn(inputs[0].shape, generator=generator), ) + inputs[1:]
    with torch.no_grad():
        ref = graph(*inputs)
    ref = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref, ))]
    what = f'{size[0]}x{size[1]} (batch 1)'
    try:
        outs = ORTRunner(path).run(inputs[0], *(t.numpy() for t in inputs[1:]))
    except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's own error types vary
        outs = None
        problem = f'ONNX Runtime cannot run it there ({str(exc).splitlines()[0][:300]})'
    if outs is None:
        pass  # problem says why
    elif [o.shape for o in outs] != [r.shape for r in ref]:
        problem = (f'output shapes {[o.shape for o in outs]} where PyTorch gives '
                   f'{[r.shape for r in ref]}')
    elif isinstance(graph, RetinaNetGraph):
        problem = detections_close(ref, outs)
        count = int((ref[1] >= 0).sum())
        what += f', {count} detections' if count else ', no detections (untrained weights?)'
    else:
        errors = [relative_error(torch.from_numpy(r), torch.from_numpy(o))
                  for r, o in zip(ref, outs)]
        problem = None
        if max(errors) > MAP_RTOL:
            problem = (f'max relative error per output {", ".join(f"{e:.2g}" for e in errors)} '
                       f'(tolerance {MAP_RTOL})')
    if problem:
        raise DeployError(f'The exported file gives other results than PyTorch at {what}, a '
                          f'size other than the example\'s {shape[0]}x{shape[1]}: {problem}. '
                          'An op was frozen to the example size (a size-dependent parameter '
                          'or a size computed in Python from the input\'s shape). Export '
                          'refused (one file must serve every size).')
    return f'checked at {what}'


def export_onnx(model: nn.Module, out: Union[str, Path], part: str = 'model',
                shape: Tuple[int, int] = (256, 320), opset: int = DEFAULT_OPSET,
                verbose: bool = False, attention: str = 'onnx', img_shapes: bool = False) -> Path:
    """Export ``part`` of ``model`` to ``out`` with dynamic batch, height and width.

    Args:
        model: A built model (weights loaded); it is put in eval mode.
        out: The ``.onnx`` file (one file, weights inside). Written atomically.
        part: ``'model'`` or ``'backbone'``.
        shape: Example ``(H, W)`` used for tracing (any size works afterwards).
        opset: ONNX opset (23: fused ``Attention``).
        verbose: Print the exporter's progress.
        attention: ``'onnx'`` (ONNX ``Attention``, every runtime) or ``'ort'`` (ONNX
            Runtime's ``MultiHeadAttention``, FlashAttention on CPU); see
            :mod:`.attention`.
        img_shapes: ``part='backbone'``: a second input, each image's ``(h, w)`` float32
            ``(B, 2)``, for batch-invariant maps (see :class:`.graphs.BackboneGraph`); needs
            ``attention='onnx'`` (the masked attention).

    Returns:
        The path written.
    """
    out = Path(out)
    translations = {**TRANSLATIONS, **attention_translations(attention)}
    if out.suffix != '.onnx':
        raise DeployError(f'The output file must end with .onnx, got {str(out)!r}.')
    out.parent.mkdir(parents=True, exist_ok=True)
    # Everything from here writes to a temporary file in the same folder, renamed over
    # `out` only when the export is complete and checked: a failure or an interrupt at
    # any point leaves `out` as it was.
    with replaced_atomically(out, suffix='.partial') as tmp:
        graph = build_graph(model, part, img_shapes=img_shapes)
        side = min_input_side(model)
        if min(shape) < side:
            raise DeployError(f'Example shape {tuple(shape)} is below the model\'s smallest '
                              f'input {side}x{side}; pass a larger --shape.')
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with torch.no_grad(), quiet:
            program = torch.onnx.export(
                graph, example_inputs(graph, shape), dynamo=True, opset_version=opset,
                input_names=INPUT_NAMES[:len(_dynamic_shapes(graph))],
                output_names=list(output_names(graph)),
                dynamic_shapes=_dynamic_shapes(graph),
                custom_translation_table=translations, verbose=verbose)
            program.save(tmp, external_data=False)
        check_dynamic(tmp)
        check_other_size(graph, tmp, shape)
    return out


def load_model(config: str, checkpoint: Optional[str] = None,
               cfg_options: Optional[Dict] = None) -> Tuple[nn.Module, object]:
    """Build ``config``'s model in eval mode, with ``checkpoint``'s weights if given (else
    the config's own initialisation, e.g. random).

    Returns:
        ``(model, cfg)``.
    """
    from pvt_mm.config import build_from_config
    model, cfg = build_from_config(config, cfg_options=cfg_options, with_weights=False)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    else:
        model.init_weights()
    return model.eval(), cfg
