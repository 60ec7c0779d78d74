"""The training recipe of every full-size config, value by value, with the official file each
value comes from: the table that ``test_recipes.py`` checks the loaded configs against.

Sources are files of the official releases, read from GitHub:

- ``PVT@v2:`` whai362/PVT, branch v2 (detection, segmentation and classification of v1 and
  v2; branch v1 holds the same v1 files, older mmdet syntax);
- ``PVTv2-Seg:`` whai362/PVTv2-Seg (Semantic FPN with PVT v2);
- ``paper`` the PVT v1 paper (arXiv 2102.12122) where no official config exists.

Each value is :class:`Official` (equal to the official run) or :class:`Kept` (pvt_mm differs
on purpose; ``why`` says what the official run does and why). The keys are those of
``test_recipes.recipe_of``; pipelines list only their resize / crop / flip steps.
"""
from typing import Any, Dict, NamedTuple

from pvt_mm.models.backbones import archs

# The arch table's v2 rows; each row's recipe class ('deep', 'big') and config families say
# which recipe and which configs it has.
V2_ARCHS = archs.names('v2')


class Official(NamedTuple):
    """A value equal to the official run's."""

    value: Any
    source: str


class Kept(NamedTuple):
    """A value that differs from the official run's on purpose."""

    value: Any
    source: str
    why: str


Recipe = Dict[str, Any]
DET = 'PVT@v2:detection/configs/'
DET_BB = 'PVT@v2:detection/pvt.py'
CLS = 'PVT@v2:classification/'

# ---- COCO detection: RetinaNet / Mask R-CNN 1x, 800 px (mmdet's 1x schedule, AdamW) --------
_COCO_800 = {
    'train': Official([['Resize', [1333, 800], True], ['RandomFlip', 0.5]],
                      DET + '_base_/datasets/coco_detection.py'),
    'test': Official([['Resize', [1333, 800], True]], DET + '_base_/datasets/coco_detection.py'),
    'pad': Official(32, DET + '_base_/datasets/coco_detection.py (Pad size_divisor=32)'),
    'sampler': Official(['DefaultSampler', 'AspectRatioBatchSampler'],
                        "mmdet 2's GroupSampler: batches grouped by aspect ratio"),
    'paramwise': Official(None, DET + 'retinanet_pvt_t_fpn_1x_coco.py (optimizer: no paramwise)'),
    'clip_grad': Official(None, DET + 'retinanet_pvt_t_fpn_1x_coco.py (grad_clip=None)'),
    'amp': Official(False, DET + 'retinanet_pvt_t_fpn_1x_coco.py (EpochBasedRunner, fp32)'),
}
_SCHEDULE_1X = {
    'length': Official(['epochs', 12], DET + '_base_/schedules/schedule_1x.py'),
    'schedule': Official([['LinearLR', 0.001, 0, 500, 'iter'], ['MultiStepLR', [8, 11], 0.1]],
                         DET + '_base_/schedules/schedule_1x.py (warm-up 500 iters from x0.001)'),
}
_SCHEDULE_3X = {
    'length': Official(['epochs', 36], DET + 'mask_rcnn_pvt_v2_b2_fpn_3x_mstrain.py'),
    'schedule': Official([['LinearLR', 0.001, 0, 500, 'iter'], ['MultiStepLR', [27, 33], 0.1]],
                         DET + 'mask_rcnn_pvt_v2_b2_fpn_3x_mstrain.py (step=[27, 33])'),
    'train': Official([['RandomResize', [[1333, 640], [1333, 800]], None, True],
                       ['RandomFlip', 0.5]],
                      'paper Tables 3/4 ("MS": shorter side random in [640, 800]); no '
                      'official v1 3x config'),
}


def _det(lr: float, per_gpu: int, drop_path: Official, source: str) -> Recipe:
    """One COCO detector's recipe: the 1x / 800 px base with its optimizer, batch, drop-path."""
    return {**_COCO_800, **_SCHEDULE_1X,
            'optimizer': Official(['AdamW', lr, 1e-4], source),
            'batch': Official([per_gpu, per_gpu * 8],
                              f'{source} (samples_per_gpu={per_gpu}; 8 GPUs, '
                              'PVT@v2:detection/README.md)'),
            'drop_path': drop_path}


_V1_NAMES = {'tiny': 't', 'small': 's', 'medium': 'm', 'large': 'l'}


def _v1_drop_path(arch: str) -> Official:
    """The official v1 detection backbones: stochastic depth for tiny / small only."""
    if arch in ('tiny', 'small'):
        return Official(0.1, f'{DET_BB} (pvt_{arch}: drop_path_rate=0.1)')
    return Official(0.0, f'{DET_BB} (pvt_{arch}: drop_path_rate left at its default 0)')


RECIPES: Dict[str, Recipe] = {}

for _arch, _s in _V1_NAMES.items():
    _src = f'{DET}retinanet_pvt_{_s}_fpn_1x_coco.py'
    RECIPES[f'retinanet/pvt_{_arch}_fpn_1x_coco.py'] = _det(1e-4, 2, _v1_drop_path(_arch), _src)
    _src = f'{DET}mask_rcnn_pvt_{_s}_fpn_1x_coco.py'
    _large = _arch == 'large'
    RECIPES[f'mask_rcnn/pvt_{_arch}_fpn_1x_coco.py'] = _det(
        2e-4 / 1.4 if _large else 2e-4, 1 if _large else 2, _v1_drop_path(_arch), _src)
    # 3x + multi-scale (paper Table 3): no official config; the 1x recipe on the 3x schedule.
    _src = f'{DET}retinanet_pvt_{_s}_fpn_1x_coco.py (lr; no official 3x v1 config)'
    RECIPES[f'retinanet/pvt_{_arch}_fpn_3x_mstrain_coco.py'] = {
        **_det(1e-4, 2, _v1_drop_path(_arch), _src),
        **_SCHEDULE_3X,
        # The official PVT-L RetinaNet 1x ran in fp16; there is no official 3x run to follow.
        'amp': Official(False, 'no official 3x v1 config (the 1x RetinaNet runs: fp32 but PVT-L)')}

RECIPES['retinanet/pvt_large_fpn_1x_coco.py']['amp'] = Official(
    True, DET + 'retinanet_pvt_l_fpn_1x_coco.py (EpochBasedRunnerAmp, use_fp16=True: apex O1)')
RECIPES['mask_rcnn/pvt_small_fpn_3x_mstrain_coco.py'] = {
    **_det(2e-4, 2, _v1_drop_path('small'),
           DET + 'mask_rcnn_pvt_s_fpn_1x_coco.py (lr; no official 3x v1 config)'),
    **_SCHEDULE_3X}
RECIPES['retinanet/pvt_small_fpn_1x_coco_640.py'] = {
    **RECIPES['retinanet/pvt_small_fpn_1x_coco.py'],
    'train': Official([['Resize', [1066, 640], True], ['RandomFlip', 0.5]],
                      DET + 'retinanet_pvt_s_fpn_1x_coco_640.py'),
    'test': Official([['Resize', [1066, 640], True]], DET + 'retinanet_pvt_s_fpn_1x_coco_640.py'),
}

for _arch in V2_ARCHS:
    _big = archs.arch_row(_arch).big  # the batch-1 recipe: 1 image per GPU, lr / 1.4
    for _family, _lr in (('retinanet', 1e-4), ('mask_rcnn', 2e-4)):
        _src = f'{DET}{_family}_pvt_v2_{_arch}_fpn_1x_coco.py'
        RECIPES[f'{_family}/pvtv2_{_arch}_fpn_1x_coco.py'] = _det(
            _lr / 1.4 if _big else _lr, 1 if _big else 2,
            Official(0.1, f'PVT@v2:detection/pvt_v2.py (pvt_v2_{_arch}: drop_path_rate=0.1)'), _src)

RECIPES['examples/faster_rcnn_pvt_small_fpn_1x_coco.py'] = {
    key: Official(value.value, 'no official Faster R-CNN run: the RetinaNet PVT-S recipe '
                  f'(paper section 5.1), from {value.source}')
    for key, value in RECIPES['retinanet/pvt_small_fpn_1x_coco.py'].items()}

# ---- DETR + PVT-Small, 50 epochs --------------------------------------------------------------
_DETR = DET + 'detr_pvt_s_8x2_50ep_coco.py'
RECIPES['detr/pvt_small_detr_50e_coco.py'] = {
    'optimizer': Official(['AdamW', 1e-4, 1e-4], _DETR),
    'paramwise': Official({'custom_keys': {'backbone': {'lr_mult': 0.1, 'decay_mult': 1.0}}},
                          _DETR),
    'clip_grad': Official(0.1, _DETR + ' (grad_clip max_norm=0.1)'),
    'amp': Official(False, _DETR + ' (EpochBasedRunner, fp32)'),
    'length': Official(['epochs', 50], _DETR),
    'schedule': Official([['MultiStepLR', [33], 0.1]], _DETR + ' (step=[33], no warm-up)'),
    'batch': Official([2, 16], _DETR + ' (8x2)'),
    'drop_path': Official(0.1, DET_BB + ' (pvt_small_f4: drop_path_rate=0.1)'),
    'train': Official([['RandomChoiceResize', [[1333, s] for s in range(640, 801, 32)], True],
                       ['RandomFlip', 0.5]], _DETR + ' (6 scales, multiscale_mode=value)'),
    'test': Official([['Resize', [1333, 800], True]], _DETR),
    'pad': Official(32, _DETR + ' (Pad size_divisor=32, train and test)'),
    'sampler': _COCO_800['sampler'],
}

# ---- Semantic FPN, ADE20K ----------------------------------------------------------------------
_SEG_WHY = ("the paper's schedule (section 5.3: 4 GPUs x 4 = batch 16, lr 1e-4, 80k iterations); "
            'the official run is the same number of images at 8 GPUs x 4 = batch 32, lr 2e-4, '
            "40k iterations (its comment: 'we use 8 gpu instead of 4 in mmsegmentation, so lr*2 "
            "and max_iters/2'); the semfpn/pvtv2_b0 config gives the --cfg-options for it")


def _seg(source: str, backbone_source: str) -> Recipe:
    ade = 'PVT@v2:segmentation/configs/_base_/datasets/ade20k.py'
    return {
        'optimizer': Kept(['AdamW', 1e-4, 1e-4], source, _SEG_WHY),
        'paramwise': Official(None, source),
        'clip_grad': Official(None, source + ' (optimizer_config=dict())'),
        'amp': Official(False, source),
        'length': Kept(['iters', 80000], source, _SEG_WHY),
        'schedule': Kept([['PolyLR', 0.9, 0.0, 0, 80000, 'iter']], source, _SEG_WHY),
        'batch': Kept([4, 16], ade + ' (samples_per_gpu=4)', _SEG_WHY),
        'drop_path': Official(0.1, backbone_source),
        'train': Official([['RandomResize', [2048, 512], [0.5, 2.0], True],
                           ['RandomCrop', [512, 512], 0.75], ['RandomFlip', 0.5]], ade),
        'test': Official([['Resize', [2048, 512], True], ['ResizeToMultiple', 32]],
                         ade + ' (AlignResize size_divisor=32)'),
        'pad': Official([512, 512], ade + ' (Pad size=crop_size)'),
        'sampler': Official(['InfiniteSampler', None], ade + ' (iteration-based runner)'),
    }


for _arch, _s in _V1_NAMES.items():
    RECIPES[f'semfpn/pvt_{_arch}_fpn_80k_ade20k.py'] = _seg(
        f'PVT@v2:segmentation/configs/sem_fpn/PVT/fpn_pvt_{_s}_ade20k_40k.py',
        f'PVT@v2:segmentation/pvt.py (pvt_{_arch}: drop_path_rate=0.1)')
for _arch in V2_ARCHS:
    if 'semfpn' in archs.arch_row(_arch).families:  # b2_li: no published mIoU, no config
        RECIPES[f'semfpn/pvtv2_{_arch}_fpn_80k_ade20k.py'] = _seg(
            f'PVTv2-Seg:configs/sem_fpn/PVTv2/fpn_pvtv2_{_arch}_ade20k_40k.py',
            f'PVTv2-Seg:pvtv2.py (pvt_v2_{_arch}: drop_path_rate=0.1)')

# ---- ImageNet-1k classification (DeiT's recipe in the official main.py) --------------------------
_MAIN = CLS + 'main.py'
_SCHED_WHY = ("timm's scheduler in the official run steps once per epoch (warm-up from 1e-6 over "
              'epochs 0-5, cosine over epochs 0-300 to 1e-5); here the warm-up steps per '
              'iteration and the cosine runs over epochs 5-300: the same end points, smoother')


def _cls(arch_file: str, drop_path: float, clip: Any, v1: bool) -> Recipe:
    source = f'{CLS}configs/{arch_file}'
    model = CLS + ('pvt.py' if v1 else 'pvt_v2.py')
    return {
        'optimizer': Official(['AdamW', 5e-4 * 1024 / 512, 0.05],
                              _MAIN + ' (--lr 5e-4 x total batch / 512, --weight-decay 0.05)'),
        'paramwise': Official({'norm_decay_mult': 0.0, 'bias_decay_mult': 0.0,
                               'custom_keys': {'.cls_token': {'decay_mult': 0.0}}},
                              "timm create_optimizer: no decay on 1-D parameters and on "
                              f'{model} no_weight_decay() (v1: cls_token only)'),
        'clip_grad': Official(clip, source + f' (clip_grad={clip})'),
        'amp': Official(True, CLS + 'engine.py (torch.cuda.amp.autocast; main.py NativeScaler)'),
        'length': Official(['epochs', 300], _MAIN + ' (--epochs 300)'),
        'schedule': Kept([['LinearLR', 0.001, 0, 5, 'epoch per iter'],
                          ['CosineAnnealingLR', 5, 300, 1e-5, 'epoch']],
                         _MAIN + ' (--sched cosine --warmup-epochs 5 --warmup-lr 1e-6 '
                         '--min-lr 1e-5)', _SCHED_WHY),
        'batch': Official([128, 1024], _MAIN + ' (--batch-size 128; 8 GPUs, '
                          'classification/README.md)'),
        'drop_path': Official(drop_path, source + f' (drop_path={drop_path})'),
        'train': Official([['RandomResizedCrop', 224], ['RandomFlip', 0.5]],
                          CLS + 'datasets.py (timm create_transform, --input-size 224)'),
        'test': Official([['ResizeEdge', 256, 'short'], ['CenterCrop', 224]],
                         CLS + 'datasets.py (Resize int(256 / 224 * 224), CenterCrop 224)'),
        'pad': Official(None, 'fixed 224x224 input'),
        'sampler': Official(['RepeatAugSampler', None],
                            _MAIN + ' (--repeated-aug on by default: samplers.RASampler)'),
    }


for _arch in archs.names('v1'):
    _deep = archs.arch_row(_arch).deep
    RECIPES[f'classification/pvt_{_arch}_in1k.py'] = _cls(
        f'pvt/pvt_{_arch}.py', 0.3 if _deep else 0.1, 1.0 if _deep else None, v1=True)
for _arch in V2_ARCHS:
    _deep = archs.arch_row(_arch).deep
    RECIPES[f'classification/pvtv2_{_arch}_in1k.py'] = _cls(
        f'pvt_v2/pvt_v2_{_arch}.py', 0.3 if _deep else 0.1, 1.0 if _deep else None, v1=False)


def deviations(config: str) -> Dict[str, Kept]:
    """The values of ``config`` kept different from the official run, by key."""
    return {key: value for key, value in RECIPES[config].items() if isinstance(value, Kept)}
