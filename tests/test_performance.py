"""Performance work must not change the model: pvt_mm == mmdet's PVT with the same weights,
finite under AMP, compilable without graph breaks; and the analysis tools run end to end.
Speed itself is reported by tools/analysis/benchmark_backbone.py, never asserted here."""
import json
import statistics

import pytest
import torch

from pvt_mm import PVT
from pvt_mm.flops import count_complexity
from pvt_mm.models.backbones.pvt_convert import convert_official_keys, to_official_keys

from .conftest import load_tool, run_tool
from .official_pvt import OfficialPVT
from .official_pvt_v2 import OfficialPVTv2


@pytest.fixture(scope='module')
def official_and_ours(tmp_path_factory):
    """An official-layout PVT-Tiny, and pvt_mm's PVT loaded from its release-format file."""
    torch.manual_seed(0)
    official = OfficialPVT(depths=(2, 2, 2, 2)).eval()
    path = tmp_path_factory.mktemp('perf') / 'pvt_tiny.pth'
    torch.save({'model': official.state_dict()}, path)
    ours = PVT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    return official, ours.eval()


@pytest.mark.parametrize('size', [(224, 224), (96, 160)])
def test_same_outputs_as_mmdet_pvt_with_official_weights(official_and_ours, size):
    from mmdet.models.backbones.pvt import PyramidVisionTransformer, pvt_convert
    official, ours = official_and_ours
    # mmdet uses LayerNorm eps 1e-6 everywhere; the official code (and pvt_mm) 1e-5 in the
    # patch embeddings and reductions: unchanged, mmdet differs by up to 1.5e-4 here.
    bench = load_tool('tools/analysis/benchmark_backbone.py')
    ref = bench.use_official_norm_eps(PyramidVisionTransformer(num_layers=[2, 2, 2, 2]).eval())
    result = ref.load_state_dict(pvt_convert(official.state_dict()), strict=False)
    assert not result.missing_keys  # leftovers are the classifier head, norm and class token
    torch.manual_seed(2)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x), strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize('arch', ['b0', 'b2'])
def test_v2_same_outputs_as_mmdet_pvtv2(arch):
    """benchmark_backbone.py --arch b0/b2: mmdet's PyramidVisionTransformerV2 loaded with
    pvt_mm's weights (our official-format export -> mmdet's pvt_convert) gives pvt_mm's
    outputs in fp32 on small inputs, so the timings compare the same model."""
    bench = load_tool('tools/analysis/benchmark_backbone.py')
    models = bench.build_models(arch, 'cpu')
    assert type(models['mmdet_pvt']).__name__ == 'PyramidVisionTransformerV2'
    for size in ((64, 64), (61, 93)):
        assert bench.check_equivalence(models, 'cpu', size=size, atol=2e-5, rtol=1e-4) < 2e-5


def test_v2_official_weights_give_mmdet_pvtv2_our_outputs(tmp_path):
    """Independently of the benchmark's mapping: an official-format v2-b0 release read by
    mmdet's own converter and by pvt_mm's init_cfg gives the same features."""
    from mmdet.models.backbones.pvt import PyramidVisionTransformerV2, pvt_convert
    from pvt_mm import PVTv2
    bench = load_tool('tools/analysis/benchmark_backbone.py')
    torch.manual_seed(0)
    official = OfficialPVTv2().perturb_norms_().eval()
    path = tmp_path / 'pvt_v2_b0.pth'
    torch.save({'model': official.state_dict()}, path)
    ours = PVTv2(arch='b0', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    ref = bench.use_official_norm_eps(PyramidVisionTransformerV2(embed_dims=32, num_layers=[2] * 4))
    result = ref.load_state_dict(pvt_convert(official.state_dict()), strict=False)
    assert not result.missing_keys and not result.unexpected_keys  # the head is dropped
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), ref.eval()(x), strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_benchmark_refuses_an_arch_mmdet_cannot_build():
    bench = load_tool('tools/analysis/benchmark_backbone.py')
    with pytest.raises(ValueError, match='no linear SRA.*benchmark b2'):
        bench.build_models('b2_li', 'cpu')


def _grads_in_mmdet_layout(model):
    """pvt_mm's parameter gradients renamed/reshaped exactly as its weights go to mmdet."""
    from mmdet.models.backbones.pvt import pvt_convert
    grads = {name: p.grad for name, p in model.named_parameters()}
    return pvt_convert(to_official_keys(grads, stage_norms=model.arch['stage_norm']))


@pytest.mark.parametrize('arch, threads', [('tiny', 1), ('tiny', 2), ('tiny', 5), ('b0', 2)])
def test_training_gradients_equal_mmdet_pvt(arch, threads):
    """The training fast path (query groups sized by the thread count; v2's depth-wise
    conv FFN) keeps every gradient equal to the reference implementation's, whatever the
    thread count."""
    bench = load_tool('tools/analysis/benchmark_backbone.py')
    torch.manual_seed(0)
    models = bench.build_models(arch, 'cpu')
    ours, ref = models['pvt_mm'], models['mmdet_pvt']
    for module in (*ours.modules(), *ref.modules()):  # stochastic depth would differ
        if hasattr(module, 'drop_prob'):
            module.drop_prob = 0.0
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(2, 3, 96, 160)  # stage 1: 960 tokens, splits into query groups
        for model in (ours, ref):
            model.train()
            sum(o.mean() for o in model(x)).backward()
    finally:
        torch.set_num_threads(before)
    expected = dict(ref.named_parameters())
    converted = _grads_in_mmdet_layout(ours)
    assert converted.keys() == expected.keys()
    for name, grad in converted.items():
        torch.testing.assert_close(grad, expected[name].grad, atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize('dtype', [None, torch.bfloat16])
def test_chunked_ffn_equals_one_piece(dtype):
    """Inference runs the FFN in token chunks (bounded hidden memory): same result."""
    from pvt_mm.models.layers import FFN
    torch.manual_seed(0)
    chunked = FFN(32, 256, chunk_tokens=100).eval()
    whole = FFN(32, 256, chunk_tokens=None).eval()
    whole.load_state_dict(chunked.state_dict())
    x = torch.randn(3, 337, 32)  # 1011 tokens: 10 full chunks and a ragged one
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype or torch.bfloat16,
                                         enabled=dtype is not None):
        a, b = chunked(x), whole(x)
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b)  # GEMM blocking may differ by rounding only


@pytest.mark.parametrize('dtype', [None, torch.bfloat16])
def test_fused_training_ffn_matches_autograd(dtype):
    """Training runs the FFN through a function that recomputes GELU in backward: same
    output and gradients as plain autograd, in fp32 and under autocast."""
    from pvt_mm.models.layers import FFN
    torch.manual_seed(0)
    fused = FFN(32, 256).train()
    plain = FFN(32, 256).train()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 77, 32)
    results = []
    for ffn, run in ((fused, fused.forward), (plain, plain._mlp)):
        xi = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = run(xi)
        out.float().square().mean().backward()
        results.append((out, xi.grad, [p.grad for p in ffn.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    assert out_a.dtype == out_b.dtype and gx_a.dtype == gx_b.dtype == torch.float32
    tol = {} if dtype is None else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out_a, out_b, **tol)
    torch.testing.assert_close(gx_a, gx_b, **tol)
    for a, b in zip(gp_a, gp_b, strict=True):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, **tol)


def test_ffn_paths_chunked_without_autograd_whole_with_it():
    """No autograd: token chunks. Autograd: one piece, fused unless dropout is active."""
    from pvt_mm.models.layers import FFN
    ffn = FFN(8, 16, drop=0.5, chunk_tokens=4)
    calls = []
    ffn.fc1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        ffn(torch.randn(20, 8))
    assert calls == [4, 4, 4, 4, 4]
    ffn.train()(torch.randn(20, 8)).sum().backward()  # dropout: plain modules, one piece
    assert calls[5:] == [20]
    ffn.eval()(torch.randn(20, 8)).sum().backward()  # fused function: fc1 not called
    assert calls[6:] == [] and ffn.fc1.weight.grad is not None


def test_official_layout_round_trips():
    """pvt_mm -> official mapping (the benchmark's input to mmdet) is the exact inverse of
    pvt_mm's loader."""
    model = PVT(arch='tiny')
    official = to_official_keys(model.state_dict())
    assert 'block4.1.attn.kv.weight' in official and 'pos_embed1' in official
    back = convert_official_keys(official)
    assert back.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(back[key], value)


def _stressed_tiny():
    """PVT-Tiny whose query projections are scaled so that unscaled attention logits exceed
    the fp16 range (65504): a kernel that multiplied before scaling would overflow."""
    torch.manual_seed(0)
    model = PVT(arch='tiny').eval()
    model.init_weights()
    with torch.no_grad():
        for stage in model.stages:
            for layer in stage.layers:
                layer.attn.q.weight.mul_(3000.0)
                layer.attn.kv.weight.mul_(100.0)
    return model


def _max_unscaled_logit(model, x):
    """Largest |q . k| of the first layer, in fp32 (what a naive fp16 matmul would hold)."""
    captured = {}
    attn = model.stages[0].layers[0].attn
    handle = model.stages[0].layers[0].norm1.register_forward_hook(
        lambda m, i, o: captured.setdefault('x', o))
    with torch.no_grad():
        model(x)
    handle.remove()
    tokens = captured['x']
    q = attn.q(tokens)
    hw = (x.shape[2] // 4, x.shape[3] // 4)
    k = attn.kv(attn.reduce_keys(tokens, hw, 0))[..., :q.shape[-1]]
    return (q @ k.transpose(1, 2)).abs().max().item()


def _autocast(model, x, dtype):
    # torch 2.14 autocasts both bf16 and fp16 on CPU: an error here is a real failure.
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        return model(x)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_outputs_stay_finite_beyond_fp16_logit_range(dtype):
    model = _stressed_tiny()
    x = torch.randn(1, 3, 64, 96)
    assert _max_unscaled_logit(model, x) > 65504  # the stress really is out of fp16 range
    for out in _autocast(model, x, dtype):
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_outputs_match_fp32(dtype):
    torch.manual_seed(0)
    model = PVT(arch='tiny').eval()
    model.init_weights()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
    for a, b in zip(_autocast(model, x, dtype), ref, strict=True):
        cos = torch.nn.functional.cosine_similarity(a.float().flatten(), b.flatten(), dim=0)
        assert cos > 0.99


def test_autocast_training_step_is_finite():
    model = _stressed_tiny().train()
    x = torch.randn(1, 3, 64, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    sum(o.float().mean() for o in outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('training', [False, True])
def test_no_graph_breaks_under_dynamo(training):
    torch._dynamo.reset()
    model = PVT(arch=dict(depths=(1, 1, 1, 1)), with_cls_token=training).train(training)
    explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_sdpa_flops_handle_counts_attention_matmuls():
    """mmengine skips SDPA; the tool's handle adds exactly N * N_k * 2C per layer."""
    model = PVT(arch='tiny').eval()
    with torch.no_grad():
        res = count_complexity(model, (torch.randn(1, 3, 224, 224),))['']
    expected = 0
    for stride, sr, dims, depth in zip((4, 8, 16, 32), (8, 4, 2, 1), (64, 128, 320, 512),
                                       (2, 2, 2, 2)):
        n = (224 // stride) ** 2
        expected += depth * n * (n // sr ** 2) * 2 * dims
    assert res['attention'] == expected
    assert res['flops_with_attention'] - res['flops_mmengine'] == expected
    assert res['params'] == sum(p.numel() for p in model.parameters())


def test_get_flops_runs_on_a_detection_config():
    out = run_tool(['tools/analysis/get_flops.py', 'configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                    '--shape', '64', '64'], timeout=300).stdout
    rows = [ln for ln in out.splitlines() if ln.startswith('| model') or ln.startswith('| backbone')]
    assert len(rows) == 2, out
    for row in rows:
        mmengine, attention, with_attn, params = (float(c) for c in row.strip('| ').split('|')[1:])
        assert mmengine > 0 and attention > 0 and params > 0
        assert with_attn == pytest.approx(mmengine + attention, abs=0.011)  # 2-decimal rounding
    assert '1 multiply-add = 1 FLOP' in out


# One mode keeps the memory children (a fresh process per model and mode) few: v2 (b0, the
# smallest) in training, the path with most to check; v1 against mmdet's PVT is compared
# in-process above (same outputs), and the tool's code is shared by both versions.
@pytest.mark.parametrize('arch, mmdet_model, modes', [
    ('b0', 'PyramidVisionTransformerV2', ['train']),
])
def test_benchmark_backbone_runs_end_to_end(tmp_path, arch, mmdet_model, modes):
    out_json = tmp_path / 'bench.json'
    out = run_tool(['tools/analysis/benchmark_backbone.py', '--arch', arch, '--shape', '64', '64',
                    '--repeat', '1', '--warmup', '0', '--modes', *modes,
                    '--json', out_json], timeout=300).stdout
    assert f'== mmdet {mmdet_model} with the same weights (fp32, max |diff|' in out
    assert ': OK' in out
    assert 'time ours/mmdet' in out and 'mem ours/mmdet' in out
    data = json.loads(out_json.read_text())
    assert [r['mode'] for r in data['results']] == modes
    for row in data['results']:
        # The ratios are of the medians of the recorded calls (1 each here), ours first.
        times = row['times_ms']
        assert all(len(times[m]) == 1 and times[m][0] > 0 for m in times)
        assert row['time_ratio_vs_mmdet'] == pytest.approx(
            statistics.median(times['pvt_mm']) / statistics.median(times['mmdet_pvt']))
        assert row['time_ratio_vs_resnet50'] == pytest.approx(
            statistics.median(times['pvt_mm']) / statistics.median(times['resnet50']))
        assert set(row['peak_mib']) == {'pvt_mm', 'mmdet_pvt', 'resnet50'}
    assert data['machine']['torch'] == torch.__version__
    assert data['mmdet_model'] == mmdet_model
