"""The arch table drives everything arch-specific: a fake row added at runtime is built,
converted, hinted, benchmarked and exported like a real one; every real row has its configs,
metafile entries and weights path (a missing one is named); the docs' generated tables match
the table."""
from typing import Dict, List, Set

import pytest
import torch
import yaml
from mmengine.config import Config

from pvt_mm import doc_blocks
from pvt_mm.capabilities import ONNX_EXPORT
from pvt_mm.models.backbones import archs

from .conftest import REPO, assert_matches_official, load_tool, run_tool

#: The dict of configs/_base_/pvt.py holding each version's official weights paths.
PRETRAINED_DICTS = {'v1': 'pvt_pretrained', 'v2': 'pvtv2_pretrained'}
#: The families whose configs start from the official ImageNet weights (the classifiers
#: are what makes them, from scratch).
PRETRAINED_FAMILIES = ('retinanet', 'mask_rcnn', 'semfpn')


def _metafile_configs() -> Dict[str, Set[str]]:
    """family -> the configs its metafile lists (``configs/...`` paths)."""
    listed = {}
    for family in archs.ALL_FAMILIES:
        meta = yaml.safe_load((REPO / 'configs' / family / 'metafile.yml').read_text())
        listed[family] = {model['Config'] for model in meta['Models']}
    return listed


def _metafile_params() -> Dict[str, int]:
    """config path -> the Parameters of its metafile entry, over every family."""
    params = {}
    for family in archs.ALL_FAMILIES:
        meta = yaml.safe_load((REPO / 'configs' / family / 'metafile.yml').read_text())
        params.update({m['Config']: m['Metadata']['Parameters'] for m in meta['Models']})
    return params


def row_problems(row: archs.ArchRow) -> List[str]:
    """What a row lacks outside the package, one line each: its weights path in
    configs/_base_/pvt.py, a config per family in ``row.families`` (building this row's
    backbone type and arch, a detector / segmentor loading the row's official weights from
    its configs/_base_/pvt.py path), a metafile entry per config, and a classifier
    whose metafile parameter count is the published one (within 0.05 M)."""
    problems = []
    base = Config.fromfile(str(REPO / 'configs/_base_/pvt.py'), import_custom_modules=False)
    paths = base[PRETRAINED_DICTS[row.version]]
    if row.checkpoint_path is not None and paths.get(row.name) != row.checkpoint_path:
        problems.append(f'configs/_base_/pvt.py: {PRETRAINED_DICTS[row.version]} needs '
                        f'{row.name}={row.checkpoint_path!r} (has {paths.get(row.name)!r})')
    listed, params = _metafile_configs(), _metafile_params()
    for family in row.families:
        config = f'configs/{row.config_file(family)}'
        backbone = None
        if not (REPO / config).is_file():
            problems.append(f'{config}: missing')
        else:
            try:
                backbone = Config.fromfile(str(REPO / config),
                                           import_custom_modules=False).model.backbone
            except Exception as exc:  # a base dict without this row's key: KeyError, ...
                problems.append(f'{config}: does not load ({type(exc).__name__}: {exc})')
        if backbone is not None:
            if (backbone.type, backbone.arch) != (row.backbone_type, row.name):
                problems.append(f'{config}: builds {backbone.type} {backbone.arch!r}, not '
                                f'{row.backbone_type} {row.name!r}')
            loads = (backbone.get('init_cfg') or {}).get('checkpoint')
            if (family in PRETRAINED_FAMILIES and row.checkpoint_path is not None
                    and loads != row.checkpoint_path):
                problems.append(f'{config}: loads {loads!r}, not {row.checkpoint_path!r}')
        if config not in listed[family]:
            problems.append(f'configs/{family}/metafile.yml: no entry for {config}')
        elif (family == 'classification' and row.params_m is not None
              and abs(params[config] / 1e6 - row.params_m) > 0.05):
            problems.append(f'configs/{family}/metafile.yml: {config} has {params[config]} '
                            f'parameters, the published count is {row.params_m} M')
    return problems


# ------------------------------------------------------------------ real rows
@pytest.mark.parametrize('arch', archs.names())
def test_every_row_has_its_configs_metafile_entries_and_weights_path(arch):
    assert row_problems(archs.arch_row(arch)) == []


def test_every_row_is_complete_and_versions_give_the_classes():
    from pvt_mm import ARCH_ZOO, PVT, PVTv2
    for row in archs.rows():
        assert row.params_m is not None and row.params_source, row.name
        assert row.weights_url and row.weights_url.endswith(row.weights_file), row.name
    assert list(ARCH_ZOO) == list(archs.names())
    assert list(PVT.arch_zoo) == list(archs.names('v1'))
    assert list(PVTv2.arch_zoo) == list(archs.names('v2'))
    assert archs.names('v1') + archs.names('v2') == archs.names()


def test_docs_tables_match_the_arch_table():
    """The generated blocks of the README and docs pages are the table's (if not:
    ``python tools/misc/gen_docs.py`` rewrites them)."""
    drifted = doc_blocks.sync(REPO, check=True)
    assert drifted == [], f'{[str(p) for p in drifted]} differ from the code: run python tools/misc/gen_docs.py'
    assert any('<!-- generated:' in p.read_text() for p in doc_blocks.pages(REPO))


def test_gen_docs_check_names_the_drifted_page(tmp_path):
    """``--check`` on a copy whose table was edited by hand: exit 1 naming the page;
    without ``--check`` it rewrites the page back to the table's."""
    (tmp_path / 'docs').mkdir()
    page = tmp_path / 'docs' / 'model_zoo.md'
    original = (REPO / 'docs' / 'model_zoo.md').read_text()
    assert '| b0 | 2, 2, 2, 2 |' in original
    page.write_text(original.replace('| b0 | 2, 2, 2, 2 |', '| b0 | 2, 2, 2, 3 |'))
    result = run_tool(['tools/misc/gen_docs.py', '--check', '--root', tmp_path], check=False)
    assert result.returncode == 1 and 'model_zoo.md: differs from the code' in result.stderr
    run_tool(['tools/misc/gen_docs.py', '--root', tmp_path])
    assert page.read_text() == original


# ------------------------------------------------------------------ a fake row
def test_fake_row_is_built_through_mmdets_registry(fake_arch):
    import pvt_mm  # noqa: F401 (registers PVT / PVTv2 in mmdet)
    from mmdet.registry import MODELS
    from pvt_mm import ARCH_ZOO, PVT, PVTv2
    assert 'b_fake' in ARCH_ZOO and 'b_fake' in PVTv2.arch_zoo and 'b_fake' not in PVT.arch_zoo
    model = MODELS.build(dict(type=fake_arch.backbone_type, arch='b_fake')).eval()
    assert type(model).__name__ == 'PVTv2' and model.out_channels == (16, 32, 80, 128)
    assert [len(stage.layers) for stage in model.stages] == [1, 1, 1, 1]
    assert model.min_input_side == archs.min_input_side(fake_arch.arch) == 29
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 40, 56))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 10, 14), (32, 5, 7), (80, 3, 4), (128, 2, 2)]


def test_fake_row_converts_through_the_official_layout(fake_arch, tmp_path):
    """An independent model of the official code built from the row's fields, saved in
    release format and loaded through init_cfg, gives the official features; ours ->
    official keys (pvt_convert) names exactly the official model's backbone tensors."""
    from pvt_mm import PVTv2
    from pvt_mm.models.backbones.pvt_convert import to_official_keys

    from .official_pvt_v2 import OfficialPVTv2
    f = fake_arch.fields
    torch.manual_seed(0)
    official = OfficialPVTv2(depths=f['depths'], dims=f['embed_dims'], heads=f['num_heads'],
                             mlp_ratios=f['mlp_ratios'], sr_ratios=f['sr_ratios'],
                             linear=f['linear_sra']).perturb_norms_().eval()
    path = tmp_path / fake_arch.weights_file
    torch.save({'model': official.state_dict()}, path)
    ours = PVTv2(arch='b_fake', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    assert_matches_official(ours, official, torch.randn(1, 3, 61, 93))
    back = to_official_keys(ours.state_dict(), stage_norms=f['stage_norm'])
    assert set(back) == {k for k in official.state_dict() if not k.startswith('head.')}


def test_fake_row_is_hinted(fake_arch, tmp_path):
    """The wrong backbone type names the right one; a missing official file names its URL."""
    from pvt_mm import PVT, PVTv2
    with pytest.raises(KeyError, match='It is a PVT v2 arch: use type="PVTv2"'):
        PVT(arch='b_fake')
    model = PVTv2(arch='b_fake', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'checkpoints' / fake_arch.weights_file)))
    with pytest.raises(FileNotFoundError, match=r'(?s)pvt_v2_b_fake\.pth.*does not exist.*'
                       r'PVT v2-b_fake release.*https://example\.invalid/pvt/pvt_v2_b_fake\.pth'):
        model.init_weights()
    # A file that is no release gets no release hint.
    other = PVTv2(arch='b_fake', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'x.pth')))
    with pytest.raises(FileNotFoundError) as info:
        other.init_weights()
    assert 'release' not in str(info.value)


def test_fake_row_is_benchmarked(fake_arch):
    """benchmark_backbone.py's build_models / check_equivalence: mmdet's
    PyramidVisionTransformerV2 with the fake row's weights gives the same maps."""
    bench = load_tool('tools/analysis/benchmark_backbone.py')
    assert bench.mmdet_name('b_fake') == 'PyramidVisionTransformerV2'
    models = bench.build_models('b_fake', 'cpu')
    assert type(models['pvt_mm']).__name__ == 'PVTv2'
    assert bench.check_equivalence(models, 'cpu', size=(64, 80)) < 1e-4


def test_fake_row_has_its_tool_choices_and_is_named_missing_outside_the_package(fake_arch):
    """check_archs offers it; the suite names its missing configs, metafile entries and
    weights path; the docs' generated tables no longer match."""
    problems = row_problems(fake_arch)
    for family in fake_arch.families:
        config = f'configs/{fake_arch.config_file(family)}'
        assert f'{config}: missing' in problems
        assert f'configs/{family}/metafile.yml: no entry for {config}' in problems
    assert any(p.startswith('configs/_base_/pvt.py: pvtv2_pretrained needs b_fake=') for p in problems)
    assert REPO / 'docs' / 'model_zoo.md' in doc_blocks.sync(REPO, check=True)
    assert '| b_fake | `PVTv2` | 1, 1, 1, 1 |' in doc_blocks.presets_table()


@pytest.mark.skipif(not ONNX_EXPORT.available, reason=f'ONNX export unavailable: {ONNX_EXPORT}')
def test_fake_row_is_exported_at_a_tiny_size(fake_arch, tmp_path):
    """tools/deployment/check_archs.py exports the fake row's backbone (its version's
    config, the row's arch) and checks the ONNX file against PyTorch."""
    check = load_tool('tools/deployment/check_archs.py')
    assert check.build_parser().parse_args(['--archs', 'b_fake']).archs == ['b_fake']
    result = check.check_arch('b_fake', [(64, 64), (48, 80)], (64, 64), str(tmp_path))
    assert result['arch'] == 'b_fake' and len(result['checks']) == 2
