"""The PVT arch table: one row per preset (v1 and v2) as data, and everything derived from it.

A row carries all that is arch-specific: its version, its fields (paper Table 1 / the
official ``pvt_v2.py``), its official ImageNet-1k weights, its published parameter count,
its training-recipe class and the config families it has configs in. Everything else that
depends on the set of archs reads this table: the backbone classes' presets, the
"use type=PVTv2" hint, the missing-weights hint, the config file names the suite expects,
the tools' choices and the generated docs tables (:mod:`pvt_mm.doc_blocks`).

Adding a variant is one :class:`ArchRow` in :data:`ARCH_TABLE` plus its config files and
metafile entries; the suite (``tests/test_arch_table.py``) names any of those missing.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

# Per-stage fields an arch is made of (one entry per stage), in the order of paper Table 1;
# patch_kernels / patch_paddings make the patch embeddings overlap (PVT v2).
STAGE_FIELDS = ('depths', 'patch_sizes', 'patch_kernels', 'patch_paddings', 'embed_dims',
                'sr_ratios', 'num_heads', 'mlp_ratios')
# Per-arch switches that tell PVT v1 from v2 (data, not code): learned position embeddings,
# a LayerNorm after every stage, the FFN's 3x3 depth-wise conv, linear SRA (v2-li).
VERSION_FIELDS = ('pos_embed', 'stage_norm', 'ffn_dwconv', 'linear_sra')
ARCH_FIELDS = STAGE_FIELDS + VERSION_FIELDS

#: Each version's backbone type (the registered class) and config-file prefix.
BACKBONE_TYPES = {'v1': 'PVT', 'v2': 'PVTv2'}
CONFIG_PREFIXES = {'v1': 'pvt', 'v2': 'pvtv2'}
#: The config of each family a row names in ``families``: ``<family>/<prefix>_<arch>_<suffix>.py``.
FAMILY_SUFFIXES = {'retinanet': 'fpn_1x_coco', 'mask_rcnn': 'fpn_1x_coco',
                   'semfpn': 'fpn_80k_ade20k', 'classification': 'in1k'}
ALL_FAMILIES = tuple(FAMILY_SUFFIXES)
#: Where the downloaded official weights are expected (configs/_base_/pvt.py's paths).
CHECKPOINT_DIR = 'checkpoints'

#: Training-recipe classes (the official runs'): ``None`` the default; ``'deep'`` ImageNet
#: drop-path 0.3 and gradient clipping 1.0; ``'big'`` that, and detectors at 1 image per
#: GPU with the lr divided by 1.4.
RECIPES = (None, 'deep', 'big')

# The one release of the official ImageNet-1k PVT v1 and v2 weights ("v2").
_RELEASE = 'https://github.com/whai362/PVT/releases/download/v2/'
_V1_PAPER = 'PVT v1 paper Table 2'
_V2_README = 'official PVT v2 classification README'

# v1, Table 1: every variant shares the per-stage settings and differs only in depth.
_V1 = dict(
    patch_sizes=(4, 2, 2, 2), patch_kernels=(4, 2, 2, 2), patch_paddings=(0, 0, 0, 0),
    embed_dims=(64, 128, 320, 512), sr_ratios=(8, 4, 2, 1), num_heads=(1, 2, 5, 8),
    mlp_ratios=(8, 8, 4, 4),
    pos_embed=True, stage_norm=False, ffn_dwconv=False, linear_sra=False)
# v2 (the official pvt_v2.py): overlapping patch embeddings, no position embeddings, a norm
# after every stage, a depth-wise conv in the FFN.
_V2 = dict(_V1, patch_kernels=(7, 3, 3, 3), patch_paddings=(3, 1, 1, 1),
           pos_embed=False, stage_norm=True, ffn_dwconv=True)


@dataclass(frozen=True)
class ArchRow:
    """One preset of the arch table.

    Attributes:
        name: The preset name (``arch=`` of the backbone).
        version: ``'v1'`` (:class:`PVT`) or ``'v2'`` (:class:`PVTv2`).
        fields: The full arch: every one of :data:`ARCH_FIELDS`.
        params_m: The published parameter count of the ImageNet-1k classifier (the
            1000-class head included), in millions; ``None`` if none is published.
        params_source: Where ``params_m`` is published.
        gflops: The published GFLOPs of the classifier at 224x224; ``None`` if none is.
        weights_url: The official ImageNet-1k weights; ``None`` where none are released.
        recipe: The training-recipe class (one of :data:`RECIPES`).
        families: The config families with a config for this arch (see
            :data:`FAMILY_SUFFIXES`).
    """

    name: str
    version: str
    fields: Mapping[str, Any]
    params_m: Optional[float] = None
    params_source: str = ''
    gflops: Optional[float] = None
    weights_url: Optional[str] = None
    recipe: Optional[str] = None
    families: Tuple[str, ...] = field(default=ALL_FAMILIES)

    def __post_init__(self) -> None:
        if self.version not in BACKBONE_TYPES:
            raise ValueError(f'arch {self.name!r}: version must be one of '
                             f'{sorted(BACKBONE_TYPES)}, got {self.version!r}')
        missing = set(ARCH_FIELDS) - set(self.fields)
        if missing:
            raise ValueError(f'arch {self.name!r} lacks the field(s) {sorted(missing)}')
        if self.recipe not in RECIPES:
            raise ValueError(f'arch {self.name!r}: recipe must be one of {RECIPES}')
        unknown = set(self.families) - set(FAMILY_SUFFIXES)
        if unknown:
            raise ValueError(f'arch {self.name!r}: unknown config families {sorted(unknown)}')

    @property
    def arch(self) -> Dict[str, Any]:
        """The fields as a fresh dict (what :data:`ARCH_ZOO` gives)."""
        return dict(self.fields)

    @property
    def backbone_type(self) -> str:
        """The registered backbone type that builds this preset."""
        return BACKBONE_TYPES[self.version]

    @property
    def weights_file(self) -> Optional[str]:
        """The file name of the official weights (``None`` where none are released)."""
        return None if self.weights_url is None else self.weights_url.rsplit('/', 1)[-1]

    @property
    def checkpoint_path(self) -> Optional[str]:
        """Where configs expect the official weights (``checkpoints/<file>``)."""
        return None if self.weights_file is None else f'{CHECKPOINT_DIR}/{self.weights_file}'

    @property
    def big(self) -> bool:
        """Trained with the batch-1 detection recipe (the official b4 / b5 runs)."""
        return self.recipe == 'big'

    @property
    def deep(self) -> bool:
        """Trained on ImageNet with drop-path 0.3 and gradient clipping 1.0."""
        return self.recipe in ('deep', 'big')

    @property
    def heavy(self) -> bool:
        """Over 60 M parameters: the suite gives it only its cheap checks (counts, small
        inputs); derived from the published count."""
        return (self.params_m or 0.0) > 60

    def config_file(self, family: str) -> str:
        """This arch's config of ``family``, relative to ``configs/``."""
        return f'{family}/{CONFIG_PREFIXES[self.version]}_{self.name}_{FAMILY_SUFFIXES[family]}.py'

    @property
    def config_files(self) -> Tuple[str, ...]:
        """Every config this arch has (one per family in ``families``), below ``configs/``."""
        return tuple(self.config_file(family) for family in self.families)


def _v1(name: str, params_m: float, gflops: float, recipe: Optional[str] = None,
        **fields) -> ArchRow:
    return ArchRow(name, 'v1', dict(_V1, **fields), params_m, _V1_PAPER, gflops,
                   f'{_RELEASE}pvt_{name}.pth', recipe)


def _v2(name: str, params_m: float, gflops: Optional[float], recipe: Optional[str] = None,
        families: Tuple[str, ...] = ALL_FAMILIES, **fields) -> ArchRow:
    return ArchRow(name, 'v2', dict(_V2, **fields), params_m, _V2_README, gflops,
                   f'{_RELEASE}pvt_v2_{name}.pth', recipe, families)


#: Every preset, both versions, in the order of the papers: name -> row. Tests may add a
#: row at runtime (``monkeypatch.setitem``); everything below reads the table live.
#: Published counts: v1 paper Table 2 (M parameters, GFLOPs at 224x224); v2 the official
#: README's parameters, GFLOPs from the v2 paper's Table 2 as transcribed by Papers with
#: Code (b4's by timm's model card; none found for b2_li).
ARCH_TABLE: Dict[str, ArchRow] = {row.name: row for row in (
    _v1('tiny', 13.2, 1.9, depths=(2, 2, 2, 2)),
    _v1('small', 24.5, 3.8, depths=(3, 4, 6, 3)),
    _v1('medium', 44.2, 6.7, 'deep', depths=(3, 4, 18, 3)),
    _v1('large', 61.4, 9.8, 'deep', depths=(3, 8, 27, 3)),
    _v2('b0', 3.7, 0.6, depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256)),
    _v2('b1', 14.0, 2.1, depths=(2, 2, 2, 2)),
    _v2('b2', 25.4, 4.0, depths=(3, 4, 6, 3)),
    _v2('b3', 45.2, 6.9, 'deep', depths=(3, 4, 18, 3)),
    _v2('b4', 62.6, 10.1, 'big', depths=(3, 8, 27, 3)),
    _v2('b5', 82.0, 11.8, 'big', depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
    # No Semantic FPN config: the official PVTv2-Seg release has no b2_li run.
    _v2('b2_li', 22.6, None, families=('retinanet', 'mask_rcnn', 'classification'),
        depths=(3, 4, 6, 3), linear_sra=True),
)}


def rows(version: Optional[str] = None) -> List[ArchRow]:
    """The rows of the table (of one ``version``, if given), in table order."""
    return [row for row in ARCH_TABLE.values() if version is None or row.version == version]


def names(version: Optional[str] = None) -> Tuple[str, ...]:
    """The preset names (of one ``version``, if given), in table order."""
    return tuple(row.name for row in rows(version))


def arch_row(name: str) -> ArchRow:
    """The row of preset ``name`` (case-insensitive).

    Raises:
        KeyError: no such preset.
    """
    key = name.lower()
    if key not in ARCH_TABLE:
        raise KeyError(f'Unknown PVT arch {name!r}; choose one of {list(ARCH_TABLE)}.')
    return ARCH_TABLE[key]


def zoo(version: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """The presets (of one ``version``, if given) as ``name -> fields``: a backbone
    class's ``arch_zoo``."""
    return {row.name: row.arch for row in rows(version)}


class _ArchZoo(Mapping):
    """:data:`ARCH_ZOO`: a read-only, live view of the table as ``name -> fields``."""

    def __getitem__(self, name: str) -> Dict[str, Any]:
        return ARCH_TABLE[name].arch

    def __iter__(self) -> Iterator[str]:
        return iter(list(ARCH_TABLE))

    def __len__(self) -> int:
        return len(ARCH_TABLE)

    def __repr__(self) -> str:
        return f'ARCH_ZOO({list(ARCH_TABLE)})'


#: Every preset, both versions: name -> full arch (all of :data:`ARCH_FIELDS`).
ARCH_ZOO: Mapping[str, Dict[str, Any]] = _ArchZoo()


def wrong_type_hint(name: str) -> str:
    """The sentence telling which backbone type builds preset ``name`` (empty for a name
    that is no preset), for the error of a class that does not know it."""
    row = ARCH_TABLE.get(name.lower())
    if row is None:
        return ''
    return f' It is a PVT {row.version} arch: use type="{row.backbone_type}".'


def release_hint(path: Union[str, 'os.PathLike']) -> str:
    """Where to get a missing checkpoint file whose name is an official release's: a
    sentence with the release URL (downloaded once into the torch hub cache), else ''."""
    name = os.path.basename(os.fspath(path))
    for row in ARCH_TABLE.values():
        if row.weights_file is not None and row.weights_file == name:
            return (f' It is the official PVT {row.version}-{row.name} release: download it '
                    f'from {row.weights_url}, or point init_cfg.checkpoint at that URL '
                    '(downloaded once into the torch hub cache).')
    return ''


def resolve_arch(arch: Union[str, dict], zoo: Optional[Dict[str, dict]] = None,
                 base: str = 'small') -> Dict[str, Any]:
    """Turn ``arch`` (a preset name or a dict of fields) into a full arch dict.

    A dict may give any of :data:`ARCH_FIELDS`; ``depths`` is required and every field it
    leaves out takes the value of the ``base`` preset (its version's Table: v1's Table 1
    for ``PVT``, v2's for ``PVTv2``), except that a dict giving ``patch_sizes`` without
    ``patch_kernels`` / ``patch_paddings`` gets non-overlapping patches (kernel = patch
    size, no padding). Per-stage fields must have one entry per stage.

    Args:
        arch: A preset name of ``zoo`` or a dict.
        zoo: The presets allowed (default: all of :data:`ARCH_ZOO`).
        base: The preset of ``zoo`` a dict's missing fields come from.
    """
    zoo = dict(ARCH_ZOO) if zoo is None else zoo
    if isinstance(arch, str):
        key = arch.lower()
        if key not in zoo:
            raise KeyError(f'Unknown PVT arch {arch!r}; choose one of {sorted(zoo)} '
                           f'or pass a dict with the fields {ARCH_FIELDS}.{wrong_type_hint(key)}')
        return dict(zoo[key])
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a preset name or a dict, got {type(arch).__name__}')
    unknown = set(arch) - set(ARCH_FIELDS)
    if unknown:
        raise KeyError(f'Unknown PVT arch field(s) {sorted(unknown)}; valid fields are {ARCH_FIELDS}.')
    if 'depths' not in arch:
        raise KeyError(f'A custom PVT arch needs "depths"; the other fields {ARCH_FIELDS[1:]} '
                       f'default to the {base!r} preset.')
    if base not in zoo:
        raise KeyError(f'The base preset {base!r} of a custom PVT arch is not among the presets '
                       f'{sorted(zoo)}; set base_arch to one of them.')
    defaults = dict(zoo[base])  # the caller's presets: a subclass's own zoo, not ARCH_ZOO
    if 'patch_sizes' in arch:
        defaults.update(patch_kernels=tuple(arch['patch_sizes']),
                        patch_paddings=(0,) * len(arch['patch_sizes']))
    num_stages = len(arch['depths'])
    resolved: Dict[str, Any] = {}
    for name in STAGE_FIELDS:
        value = tuple(arch.get(name, defaults[name]))
        if len(value) != num_stages:
            if name not in arch:
                raise ValueError(f'A {num_stages}-stage arch must give "{name}" explicitly '
                                 f'(the {base!r} default has {len(value)} stages).')
            raise ValueError(f'arch field "{name}" has {len(value)} entries but "depths" has '
                             f'{num_stages}; give one entry per stage.')
        resolved[name] = value
    for name in VERSION_FIELDS:
        resolved[name] = bool(arch.get(name, defaults[name]))
    for dims, heads in zip(resolved['embed_dims'], resolved['num_heads']):
        if dims % heads:
            raise ValueError(f'embed_dims {resolved["embed_dims"]} must be divisible by '
                             f'num_heads {resolved["num_heads"]} stage by stage.')
    return resolved


def min_input_side(arch: Dict[str, Any]) -> int:
    """The smallest input side every stage of ``arch`` can process: each patch embedding
    must give at least one cell, and each strided reduction (kernel = stride = R) at
    least R cells to reduce; linear SRA pools to a fixed grid from any size.

    Args:
        arch: A full arch (see :func:`resolve_arch`).
    """
    need = 1  # cells the stage after the current one needs
    stages = zip(arch['patch_sizes'], arch['patch_kernels'], arch['patch_paddings'],
                 arch['sr_ratios'])
    for stride, kernel, padding, sr_ratio in reversed(list(stages)):
        need = max(need, 1 if arch['linear_sra'] else sr_ratio)
        need = max(1, stride * (need - 1) + kernel - 2 * padding)
    return need


__all__ = [
    'ARCH_FIELDS', 'ARCH_TABLE', 'ARCH_ZOO', 'ArchRow', 'BACKBONE_TYPES', 'FAMILY_SUFFIXES',
    'STAGE_FIELDS', 'VERSION_FIELDS', 'arch_row', 'min_input_side', 'names', 'release_hint',
    'resolve_arch', 'rows', 'wrong_type_hint', 'zoo',
]
