"""pvt_mm.models.ops and its kernels: every device strategy equals the plain computation, and the choice of
strategy is a function of (device, dtype, shape). Tests marked ``cuda`` run the same checks
on a GPU (skipped, with the reason, where there is none)."""
import math

import pytest
import torch
import torch.nn.functional as F

from pvt_mm import PVT
from pvt_mm.models import input_checks, kernels, ops
from pvt_mm.models.layers import FFN, SpatialReductionAttention

CPU, CUDA = torch.device('cpu'), torch.device('cuda')


def _reference_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v written out in float64: independent of SDPA, which the
    grouped path calls."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def _attention_case(groups, device, dtype):
    torch.manual_seed(0)
    b, n, m, heads, d = 2, 203, 37, 2, 16  # 203 queries: most group counts need padding
    q, k, v = (torch.randn(b, s, heads, d, device=device, dtype=dtype, requires_grad=True)
               for s in (n, m, m))
    results = []
    for fn in (lambda: kernels.grouped_attention(q, k, v, groups),
               lambda: _reference_attention(q, k, v)):
        out = fn()
        grads = torch.autograd.grad(out.double().square().sum(), (q, k, v))
        results.append((out.to(dtype), *grads))
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    for a, b_ in zip(*results, strict=True):
        assert a.shape == b_.shape and a.dtype == b_.dtype
        torch.testing.assert_close(a, b_, **tol)


@pytest.mark.parametrize('groups', [1, 2, 4, 7, 32])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_grouped_attention_equals_plain_attention(groups, dtype):
    """Outputs and q/k/v gradients equal the written-out formula's, also when the queries
    must be padded to the groups."""
    _attention_case(groups, CPU, dtype)


@pytest.mark.parametrize('groups', [2, 3, 16])  # 3 and 16 pad the 140 queries
def test_attention_layer_same_for_any_group_count(monkeypatch, groups):
    """The layer's forward and every parameter gradient do not depend on the chosen plan."""
    torch.manual_seed(0)
    layer = SpatialReductionAttention(32, 2, sr_ratio=2)
    x = torch.randn(2, 1 + 10 * 14, 32, requires_grad=True)  # a class token + a 10x14 grid
    results = []
    for choice in (1, groups):
        monkeypatch.setattr(ops, 'attention_query_groups', lambda *a, g=choice, **k: g)
        layer.zero_grad()
        x.grad = None
        out = layer(x, (10, 14), num_prefix_tokens=1)
        out.square().mean().backward()
        results.append((out, x.grad, [p.grad.clone() for p in layer.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(gx_a, gx_b)
    for a, b in zip(gp_a, gp_b, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------- choices
def _balanced(items: int, threads: int) -> bool:
    """Every thread busy with at least two work items, the busiest at most 10 % above the
    mean."""
    busiest = -(-items // threads)
    return items >= 2 * threads and busiest * threads <= 1.1 * items


def _rule_cpu_groups(heads: int, queries: int, threads: int) -> int:
    """The CPU rule, stated directly: the fewest power-of-two groups (at most
    ``MAX_QUERY_GROUPS``) that balance the threads, among those that split the queries
    evenly; if none does, the most that split them evenly."""
    splits = [g for g in (2 ** i for i in range(7))
              if g <= ops.MAX_QUERY_GROUPS and queries % g == 0]
    return next((g for g in splits if _balanced(heads * g, threads)), splits[-1])


def _rule_cuda_groups(heads: int, queries: int, keys: int, sms: int) -> int:
    """The CUDA rule, stated directly: the fewest power-of-two groups whose backward blocks
    (heads x groups x 128-key blocks) fill every SM twice, capped where a group would get
    fewer than ``CUDA_MIN_GROUP_QUERIES`` queries or at ``MAX_QUERY_GROUPS``."""
    key_blocks = math.ceil(keys / 128)
    allowed = [g for g in (2 ** i for i in range(7)) if g <= ops.MAX_QUERY_GROUPS
               and (g == 1 or queries // g >= ops.CUDA_MIN_GROUP_QUERIES)]
    return next((g for g in allowed if heads * g * key_blocks >= 2 * sms), allowed[-1])


@pytest.mark.parametrize('threads', [1, 2, 3, 8, 16, 64])
@pytest.mark.parametrize('heads, queries', [
    (1, 66600), (2, 16650), (5, 4150), (8, 1025), (5, 4096), (1, 4096), (3, 3 * 2 ** 10),
    (1, 7)])  # PVT-Small 800x1333 stages 1-4, 512x512, odd sizes
def test_cpu_query_groups_balance_threads(threads, heads, queries):
    groups = ops.cpu_query_groups(heads, queries, threads)
    assert groups == _rule_cpu_groups(heads, queries, threads)
    assert queries % groups == 0  # no padding copy on CPU
    if groups > 1:  # fewer groups would not balance
        assert not _balanced(heads * groups // 2, threads)


def test_cpu_query_group_rule_examples():
    """The rule by hand: 2 threads, 1 head: 4 groups give 4 items, 2 per thread; 16
    threads, 5 heads: 8 groups give 40 items, 3 on the busiest (48 > 1.1 x 40), 16 groups
    80 items, 5 on each."""
    assert ops.cpu_query_groups(1, 66600, 2) == 4
    assert ops.cpu_query_groups(5, 4096, 16) == 16
    assert ops.cpu_query_groups(8, 1025, 2) == 1  # 8 items on 2 threads; 1025 is odd anyway


@pytest.mark.parametrize('sms', [66, 108, 132])
@pytest.mark.parametrize('heads, queries, keys', [
    (1, 66600, 1025), (2, 16650, 1025), (5, 4150, 1025), (8, 1025, 1025), (8, 66600, 1025),
    (32, 4096, 256), (1, 200, 1025), (1, 10 ** 6, 64), (1, 300, 64)])
def test_cuda_query_groups_fill_the_sms(heads, queries, keys, sms):
    groups = ops.cuda_query_groups(heads, queries, keys, sms)
    assert groups == _rule_cuda_groups(heads, queries, keys, sms)


def test_cuda_query_group_rule_examples():
    """By hand: PVT-Small 800x1333, batch 1, stage 1 on 132 SMs: 1 head x 9 key blocks
    needs 264 / 9 -> 32 groups; batch 8 needs 264 / 72 -> 4; 200 queries cannot split."""
    assert ops.cuda_query_groups(1, 66600, 1025, 132) == 32
    assert ops.cuda_query_groups(8, 66600, 1025, 132) == 4
    assert ops.cuda_query_groups(1, 200, 1025, 132) == 1
    assert ops.cuda_query_groups(1, 10 ** 6, 64, 132) == ops.MAX_QUERY_GROUPS


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_attention_plan_depends_on_device_and_shape(monkeypatch, dtype):
    monkeypatch.setattr(ops, 'cpu_threads', lambda: 2)
    monkeypatch.setattr(ops, 'cuda_sm_count', lambda index: 132)
    plan = ops.attention_query_groups
    # Inference is never split: the forward kernels parallelise over query blocks.
    assert plan(CPU, dtype, 1, 1, 66600, 1025, needs_grad=False) == 1
    assert plan(CUDA, dtype, 1, 1, 66600, 1025, needs_grad=False) == 1
    # Training: threads on CPU, SMs on CUDA; batch x heads is what runs in parallel.
    assert plan(CPU, dtype, 1, 1, 66600, 1025, needs_grad=True) == _rule_cpu_groups(1, 66600, 2)
    assert plan(CPU, dtype, 2, 5, 4150, 1025, needs_grad=True) == _rule_cpu_groups(10, 4150, 2)
    assert plan(torch.device('cuda', 0), dtype, 1, 1, 66600, 1025, needs_grad=True) == \
        _rule_cuda_groups(1, 66600, 1025, 132)
    assert plan(torch.device('cuda', 0), dtype, 8, 1, 66600, 1025, needs_grad=True) == \
        _rule_cuda_groups(8, 66600, 1025, 132)
    assert plan(torch.device('meta'), dtype, 1, 1, 66600, 1025, needs_grad=True) == 1


@pytest.mark.parametrize('device, tokens, needs_grad, setting, chunk', [
    (CPU, 66600, False, 'auto', ops.AUTO_FFN_CHUNK_TOKENS),  # CPU inference: chunks pay
    (CPU, 4096, False, 'auto', None),                        # fits in one chunk
    (CPU, 66600, True, 'auto', None),                        # training: never
    (CPU, 66600, False, None, None),                         # user: one piece
    (CPU, 66600, False, 1000, 1000),                         # user: this size
    (CUDA, 66600, False, 'auto', None),                      # GPU: chunks starve matmuls
    (CUDA, 66600, False, 1000, 1000),                        # GPU, user asks for low memory
    (CUDA, 66600, True, 1000, None)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_ffn_chunk_plan(device, tokens, needs_grad, setting, chunk, dtype):
    assert ops.ffn_chunk_tokens(device, dtype, tokens, needs_grad, setting) == chunk


@pytest.mark.parametrize('bad', [0, -3, 2.5, True, 'fast'])
def test_bad_ffn_chunk_setting_names_the_argument(bad):
    with pytest.raises(ValueError, match="ffn_chunk_tokens.*'auto'"):
        FFN(8, 16, chunk_tokens=bad)


def test_token_chunks_equal_one_piece():
    torch.manual_seed(0)
    ffn = FFN(16, 64, chunk_tokens=None).eval()
    x = torch.randn(3, 101, 16)
    with torch.no_grad():
        torch.testing.assert_close(kernels.run_token_chunks(ffn._mlp, x, 50), ffn._mlp(x))


def test_cpu_input_check_raises_at_once():
    model = PVT(arch=dict(depths=(1, 1, 1, 1))).eval()
    x = torch.randn(1, 3, 64, 64)
    x[0, 0, 3, 3] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        model(x)


# ----------------------------------------------------------------------- on a GPU
cuda = pytest.mark.cuda


@cuda
@pytest.mark.parametrize('groups', [1, 7, 32])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_grouped_attention_equals_plain_attention(groups, dtype):
    _attention_case(groups, CUDA, dtype)


@cuda
def test_cuda_forward_never_synchronises_the_host():
    """Inference and a training forward of PVT on CUDA, with torch's sync detector set to
    raise: the input check and the plans must not read anything back."""
    model = PVT(arch='tiny').cuda()
    x = torch.randn(2, 3, 224, 288, device='cuda')
    model(x)  # first call: lazy initialisation (cuBLAS handles, SM count) may sync
    torch.cuda.set_sync_debug_mode('error')
    try:
        with torch.no_grad():
            model.eval()(x)
        outs = model.train()(x)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    sum(o.float().mean() for o in outs).backward()


@cuda
def test_cuda_input_check_reports_a_nan_batch_without_sync():
    """With torch's sync detector set to raise, a non-finite batch is still reported within
    ``max_pending`` further calls: the flag is read back from pinned memory, never by a
    synchronising read (which would raise RuntimeError here, not the ValueError)."""
    model = PVT(arch=dict(depths=(1, 1, 1, 1))).cuda().eval()
    bad = torch.randn(1, 3, 64, 64, device='cuda')
    bad[0, 0, 3, 3] = float('inf')
    good = torch.randn(1, 3, 64, 64, device='cuda')
    with torch.no_grad():
        model(good)  # first call: lazy initialisation (cuBLAS handles, SM count) may sync
    torch.cuda.set_sync_debug_mode('error')
    try:
        with torch.no_grad(), pytest.raises(ValueError, match='NaN or Inf'):
            model(bad)
            for _ in range(model._finite_input.max_pending):
                model(good)
    finally:
        torch.cuda.set_sync_debug_mode('default')


def _nan_image(device) -> torch.Tensor:
    image = torch.randn(3, 64, 64, device=device)
    image[0, 3, 3] = float('nan')
    return image


def _test_run(images, work_dir):
    """``Runner.test`` of a PVT on ``images`` (one per batch), with ``FiniteInputHook`` as
    ``tools/train.py`` / ``tools/test.py`` add it: the path a real evaluation takes."""
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from torch.utils.data import DataLoader

    from pvt_mm.hooks import FiniteInputHook

    class Probe(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = PVT(arch=dict(depths=(1, 1, 1, 1)))

        def forward(self, inputs, data_samples=None, mode='tensor'):
            self.backbone(inputs)
            return [dict() for _ in inputs]

    class Count(BaseMetric):
        def process(self, data_batch, data_samples) -> None:
            self.results.append(len(data_samples))

        def compute_metrics(self, results) -> dict:
            return dict(images=sum(results))

    loader = DataLoader([image.cpu() for image in images], batch_size=1,
                        collate_fn=lambda batch: dict(inputs=torch.stack(batch)))
    # The Runner makes its scope the current default one; put the previous one back after,
    # so later registry builds in this process (mmdet's, say) are not sent to mmengine's.
    with DefaultScope.overwrite_default_scope('mmengine'):
        runner = Runner(model=Probe(), work_dir=str(work_dir), test_dataloader=loader,
                        test_cfg=dict(), test_evaluator=[Count()],
                        custom_hooks=[FiniteInputHook()], default_hooks=dict(checkpoint=None))
        return runner.test()


def test_input_check_hook_runs_in_a_test_run(tmp_path):
    """The harness of the CUDA test below, on this host's device (on CPU a NaN batch raises
    at once, on a GPU at the latest when the hook reads the checks after the test)."""
    good = torch.randn(3, 64, 64)
    assert _test_run([good, good], tmp_path / 'ok') == dict(images=2)
    with pytest.raises(ValueError, match='NaN or Inf'):
        _test_run([good, _nan_image('cpu')], tmp_path / 'nan')


@cuda
def test_cuda_input_check_names_the_batch_it_read():
    """The flag read at a call is an earlier call's: the batch of the call that raises is
    queued after the poll, so the error names the offending call, not "this one"."""
    model = PVT(arch=dict(depths=(1, 1, 1, 1))).cuda().eval()
    good = torch.randn(1, 3, 64, 64, device='cuda')
    with torch.no_grad():
        model(good)                        # call 1
        model(_nan_image('cuda')[None])    # call 2: queued, not read by this call
        torch.cuda.synchronize()           # both flags are in host memory now
        with pytest.raises(ValueError, match=r'input of call 2 of the 2 checked so far'):
            model(good)                    # call 3 reads them before queueing its own
    assert model._finite_input.pending == 0


@cuda
def test_cuda_input_check_pending_at_the_end_of_a_run_is_read(tmp_path):
    """A NaN batch last in a run is still in flight when the loop ends: FiniteInputHook
    reads it after the test epoch instead of letting it go unread."""
    model = PVT(arch=dict(depths=(1, 1, 1, 1))).cuda().eval()
    good = torch.randn(1, 3, 64, 64, device='cuda')
    with torch.no_grad():
        model(good)
        model(_nan_image('cuda')[None])
    assert model._finite_input.pending >= 1  # nothing read it: the last call queued it
    with pytest.raises(ValueError, match=r'input of call 2 of the 2 checked so far'):
        input_checks.finish_input_checks(model)
    assert input_checks.finish_input_checks(model) == 0  # nothing left in flight
    good = torch.randn(3, 64, 64)
    with pytest.raises(ValueError, match=r'detected asynchronously on the GPU: the offending '
                                         r'batch is the input of call 3 of the 3'):
        _test_run([good, good, _nan_image('cpu')], tmp_path)


@cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast_training_step_matches_fp32(dtype):
    torch.manual_seed(0)
    model = PVT(arch='tiny').cuda().train()
    model.init_weights()
    for m in model.modules():
        if hasattr(m, 'drop_prob'):
            m.drop_prob = 0.0
    x = torch.randn(2, 3, 256, 320, device='cuda')
    grads = []
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast('cuda', dtype=dtype, enabled=amp):
            outs = model(x)
        sum(o.float().mean() for o in outs).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.isfinite(grads[1]).all()
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


@cuda
def test_cuda_fp32_focal_loss_matches_the_formula_where_mmcv_fp16_does_not():
    """On CUDA mmdet's FocalLoss runs mmcv's CUDA kernel; FocalLossFP32 feeds it fp32."""
    from mmdet.models.losses import FocalLoss

    from pvt_mm.models.losses import FocalLossFP32
    logits, target = _focal_case('cuda')
    _check_against_reference(FocalLossFP32(), logits, target)
    assert not torch.isfinite(FocalLoss()(logits, target))  # the upstream fp16 failure


# ----------------------------------------------------------------------- precision (CPU)
def _reference_focal_loss(logits, target, gamma=2.0, alpha=0.25):
    """Lin et al.'s sigmoid focal loss written out in float64, mean over every logit
    (mmdet's ``reduction='mean'``); ``target == num_classes`` is background."""
    x = logits.detach().double().cpu().requires_grad_()
    t = F.one_hot(target.cpu(), x.shape[1] + 1)[:, :-1].double()
    p = x.sigmoid()
    ce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ((alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * ce).mean()
    loss.backward()
    return loss.detach(), x.grad


def _focal_case(device):
    torch.manual_seed(0)
    logits = (torch.randn(6, 80) * 8).half()  # fp16 logits far into the tails
    logits[0, :3] = torch.tensor([-20.0, 9.0, 30.0])  # where mmcv's fp16 kernel gives NaN
    target = torch.tensor([69, 59, 1, 58, 80, 80])  # 80 = background
    return logits.to(device), target.to(device)


def _check_against_reference(loss, logits, target):
    pred = logits.clone().requires_grad_()
    out = loss(pred, target)
    out.backward()
    ref, ref_grad = _reference_focal_loss(logits, target)
    assert out.dtype == torch.float32 and pred.grad.dtype == torch.float16
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-6, rtol=1e-5)
    # The gradient comes back in fp16 (per-logit values of ~1e-4: fp16's step there).
    torch.testing.assert_close(pred.grad.double().cpu(), ref_grad, atol=1e-6, rtol=2e-3)


def test_fp32_focal_loss_matches_the_formula():
    """Registered in mmdet; on an fp16 prediction it computes (and returns) the focal loss in
    fp32 and sends the gradient back in fp16, like any autocast op."""
    from mmdet.registry import MODELS
    loss = MODELS.build(dict(type='FocalLossFP32', gamma=2.0, alpha=0.25, loss_weight=1.0))
    _check_against_reference(loss, *_focal_case('cpu'))


def test_retinanet_configs_use_the_fp32_focal_loss():
    from mmengine.config import Config
    for path in ('configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                 'configs/retinanet/pvt_small_fpn_1x_coco.py',
                 'configs/retinanet/pvt_tiny_fpn_shapes.py'):
        loss = Config.fromfile(path).model.bbox_head.loss_cls
        assert loss.type == 'FocalLossFP32' and loss.gamma == 2.0 and loss.alpha == 0.25, path


@pytest.mark.parametrize('config, dtype, error', [
    ('configs/mask_rcnn/pvt_tiny_fpn_1x_coco.py', 'bfloat16', 'RoIAlign.*no bf16 kernel.*--amp'),
    ('configs/retinanet/pvt_tiny_fpn_1x_coco.py', 'int8', "'int8' is not a mixed-precision"),
    ('configs/retinanet/pvt_tiny_fpn_1x_coco.py', 'bf16',
     None if torch.cuda.is_available() else '--amp needs a CUDA GPU')])
def test_mixed_precision_config(config, dtype, error):
    from mmengine.config import Config

    from pvt_mm.runner_options import use_mixed_precision
    cfg = Config.fromfile(config)
    if error:
        with pytest.raises(ValueError, match=error):
            use_mixed_precision(cfg, dtype)
        return
    use_mixed_precision(cfg, dtype)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
