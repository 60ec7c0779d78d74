"""How attention is written into an exported file.

* ``'onnx'`` (default): the exporter's own translation of
  ``F.scaled_dot_product_attention``, one ONNX ``Attention`` node (opset 23) per layer, which
  every runtime that reads opset 23 runs (ONNX Runtime, OpenVINO 2026.4+). ONNX Runtime
  1.31's CPU kernel of it computes the whole ``q k^T`` matrix per (image, head, query group).
* ``'ort'``: ONNX Runtime's contrib op ``com.microsoft.MultiHeadAttention``, which its CPU
  provider runs with a FlashAttention kernel (blocked, the score matrix never materialised):
  faster at large inputs, but a file only ONNX Runtime reads.
"""
from .errors import DeployError

ATTENTION_MODES = ('onnx', 'ort')


def _mha_schema():
    """The part of the contrib op's schema used here (onnx has none for contrib ops and
    the exporter's tracer needs one)."""
    from onnx.defs import OpSchema
    param = OpSchema.FormalParameter
    return OpSchema(
        'MultiHeadAttention', 'com.microsoft', 1,
        inputs=[param('query', 'T'), param('key', 'T'), param('value', 'T')],
        outputs=[param('output', 'T')],
        type_constraints=[('T', ['tensor(float)'], 'float tensors')],
        attributes=[OpSchema.Attribute('num_heads', OpSchema.AttrType.INT, 'heads', required=True),
                    OpSchema.Attribute('scale', OpSchema.AttrType.FLOAT, 'scale', required=False)])


def ort_multi_head_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0,
                             is_causal: bool = False, scale=None, enable_gqa: bool = False):
    """``aten::scaled_dot_product_attention`` on ``(B, heads, N, d)`` as ONNX Runtime's
    ``MultiHeadAttention`` (an entry of ``custom_translation_table``): queries, keys and
    values to ``(B, tokens, heads * d)``, the output back to ``(B, heads, N, d)``."""
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset
    if attn_mask is not None or is_causal or dropout_p or enable_gqa:
        raise DeployError("attention='ort' exports unmasked, non-causal attention only; "
                          "use attention='onnx'.")
    heads = query.shape[1]
    if not isinstance(heads, int):
        raise DeployError("attention='ort' needs a static number of heads; use attention='onnx'.")
    mha = Op(Opset('com.microsoft', 1), 'MultiHeadAttention', _mha_schema())
    # (B, heads, N, d) -> (B, N, heads * d) for all three: with 4-D (BNSH) keys and values
    # ONNX Runtime 1.31 leaves its flash kernel for the unfused one (2.4x slower measured).
    q, k, v = (op.Reshape(op.Transpose(t, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))
               for t in (query, key, value))
    attrs = dict(num_heads=heads) if scale is None else dict(num_heads=heads, scale=float(scale))
    out = mha(q, k, v, **attrs)
    out = op.Reshape(out, op.Constant(value_ints=[0, 0, heads, -1]))
    return op.Transpose(out, perm=[0, 2, 1, 3])


def attention_translations(mode: str) -> dict:
    """The ``custom_translation_table`` entries for attention mode ``mode``."""
    import torch
    if mode not in ATTENTION_MODES:
        raise DeployError(f'Unknown attention mode {mode!r}; choose one of {ATTENTION_MODES}.')
    if mode == 'onnx':
        return {}
    return {torch.ops.aten.scaled_dot_product_attention.default: ort_multi_head_attention}
