"""Pretrained weights: official-format equivalence, every supported wrapper, and clear
errors for every checkpoint that does not fit."""
import logging
import os

import pytest
import torch

from pvt_mm import PVT
from pvt_mm.checkpoint import CheckpointError, read_checkpoint, url_cache_path
from pvt_mm.models.backbones.pvt_convert import (convert_official_keys, load_pretrained,
                                                  to_official_keys)

from .conftest import cached_files, run_tool
from .official_pvt import OfficialPVT

TINY = dict(depths=(2, 2, 2, 2))
SMALL = dict(depths=(3, 4, 6, 3))


@pytest.fixture(scope='module')
def official_tiny():
    torch.manual_seed(0)
    return OfficialPVT(**TINY).eval()


@pytest.fixture(scope='module')
def official_tiny_file(official_tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'pvt_tiny_official.pth'
    torch.save({'model': official_tiny.state_dict()}, path)  # the release wraps under 'model'
    return path


def _loaded(path, **kwargs):
    model = PVT(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('size', [(224, 224), (256, 320), (401, 599)])
@pytest.mark.compat
def test_official_weights_reproduce_official_features(official_tiny, official_tiny_file, size):
    model = _loaded(official_tiny_file, arch='tiny')
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, ref = model(x), official_tiny.forward_dense(x)
    assert len(ours) == 4
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_official_weights_in_classification_mode(official_tiny, official_tiny_file):
    model = _loaded(official_tiny_file, arch='tiny', with_cls_token=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], official_tiny.forward_cls_features(x),
                                   atol=2e-5, rtol=1e-4)
        logits = official_tiny.head(model(x)[-1])
    assert logits.shape == (2, 1000)


def test_position_embeddings_resized_to_pretrain_img_size(official_tiny, official_tiny_file):
    model = _loaded(official_tiny_file, arch='tiny', pretrain_img_size=512)
    assert model.stages[0].pos_embed.shape == (1, 128 * 128, 64)
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        for a, b in zip(model(x), official_tiny.forward_dense(x), strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_leftovers_are_logged_once(official_tiny_file):
    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        leftovers = load_pretrained(PVT(arch='tiny'), str(official_tiny_file))
    finally:
        logger.removeHandler(handler)
    assert sorted(leftovers) == ['head.bias', 'head.weight', 'stages.3.cls_token',
                                 'stages.3.norm.bias', 'stages.3.norm.weight']
    ignored = [r.getMessage() for r in records if 'Ignored' in r.getMessage()]
    assert len(ignored) == 1 and 'head.weight' in ignored[0]
    assert any('Loaded PVT' in r.getMessage() for r in records)


def test_conversion_is_pure_and_idempotent(official_tiny):
    original = dict(official_tiny.state_dict())
    keys_before = list(original)
    once = convert_official_keys(original)
    assert list(original) == keys_before  # input untouched
    assert convert_official_keys(once) == once
    assert 'stages.0.layers.1.attn.sr.weight' in once and 'block1.1.attn.sr.weight' not in once
    assert 'stages.3.pos_embed' in once and 'head.weight' in once
    assert set(once) - {'head.weight', 'head.bias'} <= set(PVT('tiny', with_cls_token=True).state_dict())


def test_official_names_round_trip_in_classification_mode(official_tiny):
    """pvt_mm -> official names give exactly the release's keys (head aside), and back."""
    model = PVT(arch='tiny', with_cls_token=True)
    official = to_official_keys(model.state_dict())
    assert set(official) == set(official_tiny.state_dict()) - {'head.weight', 'head.bias'}
    assert list(convert_official_keys(official)) == list(model.state_dict())
    with pytest.raises(KeyError, match='not a PVT backbone key'):
        to_official_keys({'neck.conv.weight': torch.zeros(1)})


def test_pvt_mm_checkpoint_and_full_model_checkpoint(tmp_path, official_tiny_file):
    source = _loaded(official_tiny_file, arch='tiny')
    own = tmp_path / 'own.pth'
    torch.save({'state_dict': source.state_dict(), 'meta': {'epoch': 3}}, own)
    full = tmp_path / 'detector.pth'
    torch.save({'state_dict': {**{f'backbone.{k}': v for k, v in source.state_dict().items()},
                               'neck.lateral.weight': torch.zeros(1)}}, full)
    ddp = tmp_path / 'ddp.pth'
    torch.save({f'module.{k}': v for k, v in source.state_dict().items()}, ddp)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = source(x)
        for path in (own, full, ddp):
            for a, b in zip(_loaded(path, arch='tiny')(x), expected, strict=True):
                torch.testing.assert_close(a, b)


def test_classification_checkpoint_loads_as_dense_backbone(tmp_path, official_tiny_file):
    classifier = _loaded(official_tiny_file, arch='tiny', with_cls_token=True)
    path = tmp_path / 'classifier.pth'
    head = {'head.fc.weight': torch.zeros(1000, 512), 'head.fc.bias': torch.zeros(1000)}
    torch.save({'state_dict': {**{f'backbone.{k}': v for k, v in classifier.state_dict().items()},
                               **head}}, path)
    dense = _loaded(path, arch='tiny')
    torch.testing.assert_close(dense.stages[3].pos_embed, classifier.stages[3].pos_embed[:, 1:])


@pytest.mark.compat
def test_bad_input_checkpoint_of_another_variant_names_the_keys(tmp_path, official_tiny_file):
    with pytest.raises(CheckpointError, match=r'(?s)PVT-small.*PVT-tiny.*missing backbone keys.*stages\.0\.layers\.2'):
        _loaded(official_tiny_file, arch='small')
    torch.manual_seed(0)
    small = tmp_path / 'small.pth'
    torch.save({'model': OfficialPVT(**SMALL).state_dict()}, small)
    with pytest.raises(CheckpointError, match=r'(?s)unexpected keys.*stages\.0\.layers\.2'):
        _loaded(small, arch='tiny')


def test_bad_input_shape_mismatch_is_an_error(tmp_path):
    torch.manual_seed(0)
    other = OfficialPVT(depths=(2, 2, 2, 2), dims=(32, 64, 160, 256), heads=(1, 2, 5, 8))
    path = tmp_path / 'narrow.pth'
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match=r'shape mismatches \(\d+\):.*checkpoint \(64, 32\) vs model \(128, 64\)'):
        _loaded(path, arch='tiny')


def test_bad_input_missing_truncated_empty_and_foreign_files(tmp_path, official_tiny_file):
    with pytest.raises(FileNotFoundError, match='does not exist.*from scratch'):
        _loaded(tmp_path / 'nope.pth', arch='tiny')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty'):
        _loaded(empty, arch='tiny')
    truncated = tmp_path / 'truncated.pth'
    data = official_tiny_file.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated'):
        _loaded(truncated, arch='tiny')
    text = tmp_path / 'notes.pth'
    text.write_text('these are not weights\n')
    with pytest.raises(CheckpointError, match='not a PyTorch checkpoint'):
        _loaded(text, arch='tiny')
    foreign = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(CheckpointError, match='holds no PVT weights'):
        _loaded(foreign, arch='tiny')


class _Payload:
    """Unpickling this runs code: the kind of checkpoint that must be refused."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.mark.compat
def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'stages.0.pos_embed': torch.zeros(1)}, 'x': _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match='Refused to load'):
        _loaded(path, arch='tiny')
    assert not marker.exists()
    with open(path, 'rb') as f:  # sanity: the file really is armed
        assert b'system' in f.read()


def test_safetensors_input(tmp_path, official_tiny):
    import safetensors.torch as safetensors  # installed with the tests extra
    path = tmp_path / 'tiny.safetensors'
    safetensors.save_file({k: v.contiguous() for k, v in official_tiny.state_dict().items()}, str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(_loaded(path, arch='tiny')(x), official_tiny.forward_dense(x), strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.compat
def test_mmengine_training_checkpoint_reads_with_weights_only(tmp_path, official_tiny_file):
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('pvt_mm_test')
    hub.update_scalar('train/loss', np.float64(1.5))
    path = tmp_path / 'epoch_1.pth'
    model = _loaded(official_tiny_file, arch='tiny')
    torch.save({'meta': {'epoch': 1, 'seed': np.int64(3)}, 'message_hub': hub.state_dict(),
                'state_dict': {f'backbone.{k}': v for k, v in model.state_dict().items()}}, path)
    assert 'message_hub' in read_checkpoint(str(path))
    _loaded(path, arch='tiny')


@pytest.mark.compat
def test_converter_tool(tmp_path, official_tiny, official_tiny_file):
    out = tmp_path / 'converted.pth'
    run_tool(['tools/model_converters/pvt_official_to_mm.py', official_tiny_file, out])
    state = torch.load(out, weights_only=True)['state_dict']
    assert 'stages.1.layers.0.attn.kv.weight' in state
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(_loaded(out, arch='tiny')(x), official_tiny.forward_dense(x), strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


# ------------------------------------------------------------ weights named by URL
def test_url_in_init_cfg_downloads_once_into_the_hub_cache(official_tiny, official_tiny_file,
                                                           checkpoint_server, torch_home):
    """``init_cfg=dict(type='Pretrained', checkpoint='https://...')``, as mmdet's and the
    official configs write it, built and initialised through mmengine's registry."""
    from mmengine.registry import MODELS
    import pvt_mm  # noqa: F401  (registers PVT)
    name = 'pvt_tiny_official.pth'
    (checkpoint_server.root / name).write_bytes(official_tiny_file.read_bytes())
    url = checkpoint_server.url + name
    x = torch.randn(1, 3, 96, 128)
    for _ in range(2):  # the second build reads the cache
        model = MODELS.build(dict(type='pvt_mm.PVT', arch='tiny',
                                  init_cfg=dict(type='Pretrained', checkpoint=url)))
        model.init_weights()
        with torch.no_grad():
            for a, b in zip(model.eval()(x), official_tiny.forward_dense(x), strict=True):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    assert checkpoint_server.requests == ['/' + name]
    assert cached_files(torch_home) == [url_cache_path(url)]
    with open(url_cache_path(url), 'rb') as f:
        assert f.read() == official_tiny_file.read_bytes()


def test_url_checkpoint_goes_through_the_strict_report(checkpoint_server, torch_home):
    """A downloaded file is read and checked exactly as a local one (weights_only, strict)."""
    torch.save({'model': PVT(arch='small').state_dict()}, checkpoint_server.root / 'small.pth')
    model = PVT(arch='tiny', init_cfg=dict(type='Pretrained',
                                           checkpoint=checkpoint_server.url + 'small.pth'))
    with pytest.raises(CheckpointError, match='missing|unexpected|mismatch'):
        model.init_weights()


def test_failed_download_names_url_and_cache_and_leaves_no_partial_file(
        official_tiny_file, checkpoint_server, torch_home):
    """Cut short with the size announced, cut short with no ``Content-Length`` (only the
    archive's missing index tells), absent, or not a checkpoint at all: refused, and nothing
    but the (empty) lock file is left in the cache."""
    (checkpoint_server.root / 'w.pth').write_bytes(official_tiny_file.read_bytes())
    (checkpoint_server.root / 'page.pth').write_text('<html>Sign in to download</html>')
    cache = torch_home / 'hub' / 'checkpoints'
    for url in ('truncated/w.pth', 'cut/w.pth', 'missing.pth', 'page.pth'):
        url = checkpoint_server.url + url
        model = PVT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=url))
        with pytest.raises(CheckpointError) as info:
            model.init_weights()
        message = str(info.value)
        assert url in message and str(cache) in message, message
        assert cached_files(torch_home) == []


def test_test_tool_refuses_a_failed_download_clearly(checkpoint_server, torch_home):
    """``tools/test.py CONFIG https://...`` (evaluated in test_main_job) with a download cut
    short: one clear error, no traceback, nothing left in the cache."""
    torch.save({'state_dict': {}}, checkpoint_server.root / 'det.pth')
    url = checkpoint_server.url + 'truncated/det.pth'
    failed = run_tool(['tools/test.py', 'configs/retinanet/pvt_tiny_fpn_shapes.py', url],
                      env={'TORCH_HOME': str(torch_home)}, check=False)
    assert failed.returncode != 0 and 'Cannot download checkpoint' in failed.stderr
    assert url in failed.stderr and 'Traceback' not in failed.stderr
    assert cached_files(torch_home) == []


def test_distinct_urls_with_one_file_name_never_share_a_cache_file(checkpoint_server, torch_home):
    """Two zoos publishing ``model.pth``: each URL reads its own file."""
    for zoo, value in (('a', 1.0), ('b', 2.0)):
        (checkpoint_server.root / zoo).mkdir()
        torch.save({'w': torch.full((2, ), value)}, checkpoint_server.root / zoo / 'model.pth')
    for _ in range(2):  # the second round reads the cache
        for zoo, value in (('a', 1.0), ('b', 2.0)):
            ckpt = read_checkpoint(f'{checkpoint_server.url}{zoo}/model.pth')
            assert ckpt['w'].tolist() == [value, value]
    assert sorted(checkpoint_server.requests) == ['/a/model.pth', '/b/model.pth']
    assert len(cached_files(torch_home)) == 2


def test_hash_in_the_file_name_is_checked(checkpoint_server, torch_home):
    """torch hub's ``<name>-<sha256 prefix>.pth``: a file whose hash differs from its name's
    is refused before it enters the cache; the right one is read."""
    import hashlib
    torch.save({'w': torch.ones(3)}, checkpoint_server.root / 'w.pth')
    digest = hashlib.sha256((checkpoint_server.root / 'w.pth').read_bytes()).hexdigest()
    wrong = '0' * 8 if not digest.startswith('0' * 8) else 'f' * 8
    for prefix in (wrong, digest[:8]):
        (checkpoint_server.root / f'w-{prefix}.pth').write_bytes(
            (checkpoint_server.root / 'w.pth').read_bytes())
    with pytest.raises(CheckpointError, match=f"begins with '{wrong}'"):
        read_checkpoint(f'{checkpoint_server.url}w-{wrong}.pth')
    assert cached_files(torch_home) == []
    assert read_checkpoint(f'{checkpoint_server.url}w-{digest[:8]}.pth')['w'].tolist() == [1, 1, 1]


def test_mmengine_reads_every_checkpoint_through_the_safe_read(tmp_path, checkpoint_server,
                                                               torch_home):
    """mmengine's own loading (``load_checkpoint``: resume, load_from, pytorch2onnx, the
    inferencers) goes through :func:`read_checkpoint` once pvt_mm is imported: a crafted pickle
    is refused locally and by URL (mmengine's http loader used ``weights_only=False``), and a
    good URL is downloaded once into pvt_mm's cache."""
    import pvt_mm  # noqa: F401  (installs the loaders, as custom_imports does)
    from mmengine.runner import load_checkpoint
    marker = tmp_path / 'payload_ran'
    torch.save({'state_dict': {}, 'x': _Payload(marker)}, checkpoint_server.root / 'evil.pth')
    model = torch.nn.Linear(2, 2)
    for source in (str(checkpoint_server.root / 'evil.pth'), checkpoint_server.url + 'evil.pth'):
        with pytest.raises(CheckpointError, match='Refused to load'):
            load_checkpoint(model, source, map_location='cpu')
    assert not marker.exists()
    good = torch.nn.Linear(2, 2)
    torch.save({'state_dict': good.state_dict()}, checkpoint_server.root / 'good.pth')
    for _ in range(2):
        load_checkpoint(model, checkpoint_server.url + 'good.pth', map_location='cpu', strict=True)
        torch.testing.assert_close(model.weight, good.weight, rtol=0, atol=0)
    assert checkpoint_server.requests.count('/good.pth') == 1
    assert url_cache_path(checkpoint_server.url + 'good.pth') in cached_files(torch_home)


def test_converter_failure_leaves_no_file(tmp_path, official_tiny_file, monkeypatch):
    """A conversion that fails while writing leaves neither ``dst`` nor a temporary file."""
    from pvt_mm.models.backbones import pvt_convert

    def failing_save(obj, path):
        with open(path, 'wb') as f:
            f.write(b'partial')
        raise OSError('No space left on device')

    monkeypatch.setattr(pvt_convert.torch, 'save', failing_save)
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(OSError, match='No space'):
        pvt_convert.convert_checkpoint_file(str(official_tiny_file), str(out / 'tiny_mm.pth'))
    assert list(out.iterdir()) == []
