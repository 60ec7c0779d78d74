"""Pyramid Vision Transformer v1 (Wang et al., ICCV 2021) and v2 (CVMJ 2022) backbones: one
stage and layer code; the versions differ by arch data only (the rows of :mod:`.archs`)."""
import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn

from ...capabilities import is_exporting
from .. import ops
from ..input_checks import FiniteInputCheck
from ..layers import HW, EncoderLayer, PatchEmbed, TokenRegion
from ..padding import current_valid_sizes, is_padded, padded_valid_sizes, region_mask

#: Valid sizes as the backbone takes them: ``(h, w)`` per image, or a ``(B, 2)`` tensor.
Sizes = Union[Sequence[Sequence[int]], Tensor]
# ARCH_ZOO, ARCH_FIELDS, resolve_arch, min_input_side stay importable from here (re-exported).
from .archs import (ARCH_FIELDS, ARCH_ZOO, STAGE_FIELDS, VERSION_FIELDS,  # noqa: F401
                    min_input_side, release_hint, resolve_arch, zoo)
from .pvt_convert import load_pretrained


class _VersionZoo:
    """A backbone class's ``arch_zoo``: its version's presets, read from the arch table
    each time, so a row added to :data:`~.archs.ARCH_TABLE` is a preset at once."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __get__(self, obj: Any, owner: type) -> Dict[str, Dict[str, Any]]:
        return zoo(self.version)


class PVTStage(nn.Module):
    """One pyramid stage: patch embedding, position embedding (v1), encoder layers,
    optional norm (v2: always; v1: the final norm in classification mode).

    Args:
        in_channels: Channels of the incoming map.
        embed_dims: Channels of this stage.
        depth: Number of encoder layers.
        patch_size: Patch size P of the embedding (the stage's downsampling factor).
        num_heads: Attention heads.
        sr_ratio: Spatial reduction ratio R of the attention.
        mlp_ratio: FFN expansion ratio E.
        pos_grid: Grid size ``(h, w)`` the learned position embedding is stored at; other
            sizes are interpolated bilinearly. ``None``: no position embedding (PVT v2).
        drop_path_rates: Stochastic-depth rate of each layer (``depth`` entries).
        with_cls_token: Prepend a learned class token (classification mode, v1 only).
        with_norm: End with a LayerNorm (v2's stage norm, v1's final norm in
            classification mode).
        qkv_bias: Whether q/kv projections have a bias.
        drop_rate: Dropout after the position embedding, in the FFN and after attention.
        attn_drop_rate: Dropout on attention weights.
        norm_eps: Epsilon of the layers' and the stage's LayerNorms (the patch embedding's
            and the attention reduction's keep torch's default, as the official models).
        with_cp: Trade compute for memory with activation checkpointing of each layer.
        ffn_chunk_tokens: FFN chunking without autograd (see :class:`FFN`).
        patch_kernel: Kernel of the patch embedding conv; ``None`` means ``patch_size``.
        patch_padding: Padding of the patch embedding conv.
        ffn_dwconv: Depth-wise conv in the FFN (PVT v2).
        linear_sra: Linear SRA and the FFN's ReLU (PVT v2-li).
    """

    def __init__(self, in_channels: int, embed_dims: int, depth: int, patch_size: int,
                 num_heads: int, sr_ratio: int, mlp_ratio: float, pos_grid: Optional[HW],
                 drop_path_rates: Sequence[float], with_cls_token: bool = False,
                 with_norm: bool = False, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, norm_eps: float = 1e-6, with_cp: bool = False,
                 ffn_chunk_tokens: ops.FFNChunkSetting = 'auto',
                 patch_kernel: Optional[int] = None, patch_padding: int = 0,
                 ffn_dwconv: bool = False, linear_sra: bool = False) -> None:
        super().__init__()
        if with_cls_token and (pos_grid is None or ffn_dwconv):
            raise ValueError('A class token needs position embeddings and a token-wise FFN '
                             '(PVT v1); PVT v2 classifies from its mean-pooled last-stage tokens, '
                             'so build it with with_cls_token=False.')
        self.pos_grid = None if pos_grid is None else tuple(pos_grid)
        self.num_prefix_tokens = int(with_cls_token)
        self.with_cp = with_cp
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size,
                                      kernel_size=patch_kernel, padding=patch_padding)
        self.pos_embed = None if pos_grid is None else nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + pos_grid[0] * pos_grid[1], embed_dims))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims)) if with_cls_token else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList(
            EncoderLayer(embed_dims, num_heads, mlp_ratio, sr_ratio, qkv_bias=qkv_bias,
                         drop=drop_rate, attn_drop=attn_drop_rate, drop_path=rate,
                         norm_eps=norm_eps, ffn_chunk_tokens=ffn_chunk_tokens,
                         ffn_dwconv=ffn_dwconv, linear_sra=linear_sra)
            for rate in drop_path_rates)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if with_norm else None

    def resized_pos_embed(self, hw: HW) -> Tensor:
        """The position embedding for a ``hw`` grid (class slot first, if any)."""
        if self.pos_embed is None:
            raise ValueError('This stage has no position embedding (PVT v2).')
        # While exporting (ONNX), always interpolate: the shortcut would guard on the grid
        # size and pin the exported graph to it (interpolating to the stored size is exact).
        if not is_exporting() and tuple(hw) == self.pos_grid:
            return self.pos_embed
        prefix = self.pos_embed[:, :self.num_prefix_tokens]
        grid = self.pos_embed[:, self.num_prefix_tokens:]
        grid = grid.reshape(1, *self.pos_grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=hw, mode='bilinear', align_corners=False)
        return torch.cat((prefix, grid.flatten(2).transpose(1, 2)), dim=1)

    def region_pos_embed(self, region: TokenRegion) -> Tensor:
        """``(B, prefix + h*w, C)``: each image's position embedding interpolated to its own
        grid (its valid cells) and placed at its origin, zero beyond -- what the image
        alone adds to its tokens."""
        h, w = region.hw
        if isinstance(region.sizes, Tensor):
            return self._tensor_region_pos_embed(region)
        cells = [(-(-sh // region.stride), -(-sw // region.stride)) for sh, sw in region.sizes]
        padded = {}
        for size in set(cells):  # one interpolation per distinct size, as the image alone
            embed = self.resized_pos_embed(size)
            prefix, grid = embed[:, :self.num_prefix_tokens], embed[:, self.num_prefix_tokens:]
            grid = grid.reshape(1, size[0], size[1], -1)
            grid = F.pad(grid, (0, 0, 0, w - size[1], 0, h - size[0]))
            padded[size] = torch.cat((prefix, grid.flatten(1, 2)), dim=1)
        return torch.cat([padded[size] for size in cells])

    def _tensor_region_pos_embed(self, region: TokenRegion) -> Tensor:
        """:meth:`region_pos_embed` for sizes in a tensor (an exported graph's input): the
        bilinear interpolation (``align_corners=False``, as :func:`F.interpolate`) as two
        products with per-image interpolation matrices."""
        grid = self.pos_embed[:, self.num_prefix_tokens:]
        grid = grid.reshape(1, *self.pos_grid, -1).permute(0, 3, 1, 2)  # (1, C, Hs, Ws)
        rows = _bilinear_matrix(region.cells[:, 0], self.pos_grid[0], region.hw[0], grid)
        cols = _bilinear_matrix(region.cells[:, 1], self.pos_grid[1], region.hw[1], grid)
        grid = rows[:, None] @ grid @ cols[:, None].transpose(-1, -2)  # (B, C, h, w)
        prefix = self.pos_embed[:, :self.num_prefix_tokens].expand(grid.shape[0], -1, -1)
        return torch.cat((prefix, grid.flatten(2).transpose(1, 2)), dim=1)

    def forward(self, x: Tensor, sizes: Optional[Sizes] = None,
                stride: int = 1) -> Tuple[Tensor, HW]:
        """Map an NCHW input to ``(tokens, (h, w))``; tokens are ``(B, prefix + h*w, C)``.

        Args:
            x: The incoming map.
            sizes: Each image's valid size (input pixels) in a padded batch of mixed
                sizes; ``None``: every image fills the batch.
            stride: This stage's stride relative to the input (for ``sizes``).
        """
        x, hw = self.patch_embed(x)
        region = None if sizes is None else TokenRegion(
            sizes, hw, stride, self.num_prefix_tokens, x.device)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if self.pos_embed is not None:
            pos = self.resized_pos_embed(hw) if region is None else self.region_pos_embed(region)
            x = self.pos_drop(x + pos)
        for layer in self.layers:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(layer, x, hw, self.num_prefix_tokens, region,
                                  use_reentrant=False)
            else:
                x = layer(x, hw, self.num_prefix_tokens, region)
        if self.norm is not None:
            x = self.norm(x)
        if region is not None:
            # Zero outside each image: the next patch embedding (v2's overlaps) reads the
            # zeros an image alone is padded with, and necks get clean maps.
            x = region.zero_outside(x)
        return x, hw


def _bilinear_matrix(cells: Tensor, src: int, length: int, like: Tensor) -> Tensor:
    """``(B, length, src)``: row ``o < cells[b]`` interpolates a ``src``-long axis to image
    ``b``'s ``cells[b]`` outputs bilinearly (``align_corners=False``), rows beyond are zero."""
    n = cells.to(like.dtype)[:, None]  # (B, 1)
    out = torch.arange(length, device=like.device, dtype=like.dtype)[None]  # (1, length)
    pos = ((out + 0.5) * (src / n) - 0.5).clamp(min=0)
    low = pos.floor().clamp(max=src - 1)
    high = (low + 1).clamp(max=src - 1)
    frac = pos - low
    taps = torch.arange(src, device=like.device, dtype=like.dtype)
    weights = ((taps == low[..., None]).to(like.dtype) * (1 - frac[..., None])
               + (taps == high[..., None]).to(like.dtype) * frac[..., None])
    return weights * (out < n).to(like.dtype)[..., None]


class PVT(BaseModule):
    """Pyramid Vision Transformer backbone.

    Four stages (strides 4, 8, 16, 32 with the Table 1 patch sizes), each a patch
    embedding, a learned absolute position embedding and Transformer encoder layers with
    spatial-reduction attention. Returns the NCHW maps of the stages in ``out_indices``.
    PVT v2 (:class:`PVTv2`) is this class with v2's arch data (see :data:`ARCH_ZOO`).

    Position embeddings are stored for ``pretrain_img_size`` and interpolated bilinearly to
    the actual feature size, so any input of at least ``32 x 32`` works. Each patch
    embedding floors (like the official model): a side that is not a multiple of the
    stride loses its remainder, e.g. 401x599 gives stage sizes 100x149, 50x74, 25x37, 12x18.
    (v2's overlapping, padded patch embeddings give ``ceil(side / stride)`` instead, and
    need no position embeddings: 31x31 gives 8x8, 4x4, 2x2, 1x1.)

    With ``with_cls_token=True`` (classification, paper section 4.1) the last stage
    prepends a class token and ends with a LayerNorm, and the last output is the normalised
    class token ``(B, C)`` instead of a map; dense prediction leaves it off.

    Pretrained weights come only through ``init_cfg=dict(type='Pretrained',
    checkpoint=PATH)``; official PVT releases, pvt_mm checkpoints and whole
    detector/segmentor/classifier checkpoints are accepted (see :mod:`.pvt_convert`).

    **Batch invariance.** mmdet / mmseg pad a batch to its largest image, and PVT's
    attention is global: without care an image's features depend on its batch mates. Given
    each image's size (``forward(x, img_shapes=...)``, or the sizes set around the forward
    by :func:`pvt_mm.models.padding.batch_valid_sizes`, as pvt_mm's data path does), each
    image's *valid size* is its own size rounded up to 32 (what a batch of one is padded
    to), and the backbone computes in it what the image computes alone: its attention
    masks out the keys of reduction cells in the padding (one fused SDPA call with a
    boolean mask), linear SRA pools its valid region only, v1's position embedding is
    interpolated to its own grid and placed at its origin, and the input and every stage's
    output are zeroed outside it (v2's overlapping patch embeddings and depth-wise convs
    then read the zeros an image alone is padded with). Outside the valid region the maps
    are zero. Without sizes, or when no image is smaller than the batch, nothing of this
    runs: the forward is the plain one, bit for bit.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'medium'``, ``'large'`` or a dict of fields
            (:data:`ARCH_FIELDS`) over Table 1; ``depths`` is required in a dict.
        in_channels: Channels of the input image.
        pretrain_img_size: Image size the position embeddings are stored for.
        out_indices: Stages whose outputs are returned (0-based, ascending).
        qkv_bias: Whether q/kv projections have a bias.
        drop_rate: Dropout after position embeddings, in FFNs and after attention.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Maximum stochastic-depth rate, reached linearly at the last layer.
        norm_eps: Epsilon of the encoder layers' and stage norms' LayerNorms (1e-6 as in
            the official models). The patch embeddings' and the attention reductions'
            LayerNorms keep torch's default 1e-5, as the official models do.
        with_cls_token: Classification mode (class token + final norm in the last stage);
            v1 only.
        frozen_stages: Stages to freeze (parameters fixed, eval mode kept through
            ``train()``); -1 freezes nothing, ``k`` freezes stages ``0 .. k-1``.
        with_cp: Activation checkpointing (saves memory, costs a second forward).
        ffn_chunk_tokens: FFN chunking without autograd (inference). ``'auto'`` runs CPU
            FFNs over 4096 tokens at a time, which bounds the largest activation
            (PVT-Small at 800x1333: peak 309 -> 97 MiB on CPU) at no cost in speed, and GPU
            FFNs in one piece (chunks starve GPU matmuls); an int chunks on every device
            (lowest memory); ``None`` never chunks. See :mod:`pvt_mm.models.ops`.
        batch_invariant: Compute each image of a padded batch of mixed sizes as if it were
            alone, padded only to its own size (see *Batch invariance* above); ``False``
            runs every image over the whole padded batch, the behaviour before it (for
            exact reproduction of padded-batch training).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` loads
            weights, ``None`` initialises from scratch.
    """

    #: The presets this class builds: the arch table's v1 rows (a subclass may set a dict).
    arch_zoo: Dict[str, Dict[str, Any]] = _VersionZoo('v1')
    #: The preset a custom arch dict's missing fields come from.
    base_arch = 'small'

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 norm_eps: float = 1e-6,
                 with_cls_token: bool = False,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 ffn_chunk_tokens: ops.FFNChunkSetting = 'auto',
                 batch_invariant: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.batch_invariant = batch_invariant
        self.arch = resolve_arch(arch, type(self).arch_zoo, type(self).base_arch)
        self.num_stages = len(self.arch['depths'])
        self.in_channels = in_channels
        self.with_cls_token = with_cls_token

        out_indices = tuple(out_indices)
        if (not out_indices or list(out_indices) != sorted(set(out_indices))
                or not all(0 <= i < self.num_stages for i in out_indices)):
            raise ValueError(f'out_indices {out_indices} must be ascending, unique stage indices '
                             f'in [0, {self.num_stages - 1}].')
        self.out_indices = out_indices
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range; use -1 (train all) '
                             f'up to {self.num_stages} (freeze all).')
        self.frozen_stages = frozen_stages
        self._finite_input = FiniteInputCheck(
            'PVT input contains NaN or Inf values; check the image files and the data '
            'preprocessor (mean/std) before the backbone.')

        img_h, img_w = (pretrain_img_size, pretrain_img_size) if isinstance(
            pretrain_img_size, int) else pretrain_img_size
        self.strides = tuple(math.prod(self.arch['patch_sizes'][:i + 1]) for i in range(self.num_stages))
        self.embed_dims = self.arch['embed_dims']
        # Metadata for necks and configs.
        self.out_channels = tuple(self.embed_dims[i] for i in out_indices)
        self.out_strides = tuple(self.strides[i] for i in out_indices)
        self.min_input_side = min_input_side(self.arch)

        depths = self.arch['depths']
        drop_path_rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stage_rates = [drop_path_rates[sum(depths[:i]):sum(depths[:i + 1])]
                       for i in range(self.num_stages)]
        last = self.num_stages - 1
        self.stages = nn.ModuleList(
            PVTStage(
                in_channels=in_channels if i == 0 else self.embed_dims[i - 1],
                embed_dims=self.embed_dims[i],
                depth=depths[i],
                patch_size=self.arch['patch_sizes'][i],
                num_heads=self.arch['num_heads'][i],
                sr_ratio=self.arch['sr_ratios'][i],
                mlp_ratio=self.arch['mlp_ratios'][i],
                pos_grid=((img_h // self.strides[i], img_w // self.strides[i])
                          if self.arch['pos_embed'] else None),
                drop_path_rates=stage_rates[i],
                with_cls_token=with_cls_token and i == last,
                with_norm=self.arch['stage_norm'] or (with_cls_token and i == last),
                qkv_bias=qkv_bias,
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
                norm_eps=norm_eps,
                with_cp=with_cp,
                ffn_chunk_tokens=ffn_chunk_tokens,
                patch_kernel=self.arch['patch_kernels'][i],
                patch_padding=self.arch['patch_paddings'][i],
                ffn_dwconv=self.arch['ffn_dwconv'],
                linear_sra=self.arch['linear_sra']) for i in range(self.num_stages))
        self._freeze_stages()

    # ----------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """Load ``init_cfg``'s pretrained checkpoint, or initialise from scratch."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            path = self.init_cfg['checkpoint']
            try:
                load_pretrained(self, path, map_location=self.init_cfg.get('map_location', 'cpu'))
            except FileNotFoundError as exc:
                # The reader knows no model; the arch table knows where official files live.
                hint = release_hint(path)
                if not hint:
                    raise
                raise FileNotFoundError(f'{exc}{hint}') from exc
            self._is_init = True
            return
        if self.init_cfg is not None:
            super().init_weights()
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                # Depth-wise convs: each output channel sees in_channels / groups inputs.
                fan_out = (module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                           // module.groups)
                nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for stage in self.stages:
            if stage.pos_embed is not None:
                trunc_normal_(stage.pos_embed, std=0.02)
            if stage.cls_token is not None:
                trunc_normal_(stage.cls_token, std=0.02)
        self._is_init = True

    # ----------------------------------------------------------------- training mode
    def _freeze_stages(self) -> None:
        for stage in self.stages[:max(self.frozen_stages, 0)]:
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'PVT':
        super().train(mode)
        self._freeze_stages()  # frozen stages stay in eval mode (dropout off)
        return self

    # ----------------------------------------------------------------- forward
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f'PVT expects an NCHW batch, got a tensor of shape {tuple(x.shape)}.')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'PVT was built for {self.in_channels} input channels but got '
                             f'{x.shape[1]} (shape {tuple(x.shape)}); convert the image or set '
                             'in_channels.')
        if not x.is_floating_point():
            raise ValueError(f'PVT expects a floating-point image, got {x.dtype}; normalise it '
                             '(e.g. with a data preprocessor) first.')
        if x.shape[0] == 0:
            raise ValueError(f'PVT got an empty batch (shape {tuple(x.shape)}); check that the '
                             'dataloader yields at least one image.')
        min_side = self.min_input_side
        if x.shape[2] < min_side or x.shape[3] < min_side:
            raise ValueError(f'Input of {x.shape[2]}x{x.shape[3]} is too small: this PVT needs at '
                             f'least {min_side}x{min_side} pixels (one cell in the last stage, one '
                             'reduction window in every attention). Resize or pad the image.')
        # One reduction over the input (cheap next to the network); on CUDA read back
        # without a host sync, see input_checks.FiniteInputCheck.
        self._finite_input(x)

    def valid_sizes(self, x: Tensor, img_shapes: Optional[Sizes] = None) -> Optional[Sizes]:
        """Each image's valid size in the padded batch ``x``, or ``None`` for the plain path.

        From ``img_shapes`` if given, else from :func:`~pvt_mm.models.padding.current_valid_sizes`;
        ``None`` when neither gives sizes, when ``batch_invariant`` is off, or when no image
        is smaller than the batch. A tensor (an exported graph's input) is always used:
        telling whether it pads would read it back to the host.
        """
        if not self.batch_invariant:
            return None
        shapes = current_valid_sizes() if img_shapes is None else img_shapes
        if shapes is None:
            return None
        # A tensor's batch is checked by the ops that use it: comparing it here would pin
        # a traced graph's batch to the example's.
        if not isinstance(shapes, Tensor) and len(shapes) != x.shape[0]:
            raise ValueError(f'Got {len(shapes)} image sizes for a batch of {x.shape[0]} images; '
                             'give one (h, w) per image.')
        sizes = padded_valid_sizes(shapes, x.shape[2:])
        if isinstance(sizes, Tensor) or is_padded(sizes, x.shape[2:]):
            return sizes
        return None

    def forward(self, x: Tensor, img_shapes: Optional[Sizes] = None) -> Tuple[Tensor, ...]:
        """Return the maps of ``out_indices`` (last one is the class token in cls mode).

        Args:
            x: The padded batch ``(B, C, H, W)``.
            img_shapes: Each image's ``(h, w)`` before padding (mmdet's ``img_shape``), as
                a list or a ``(B, 2)`` integer tensor; ``None`` reads the sizes set around
                the forward (see *Batch invariance*), if any.
        """
        self._check_input(x)
        sizes = self.valid_sizes(x, img_shapes)
        if sizes is not None:  # the zeros a conv pads an image alone with (any pad value)
            x = torch.where(region_mask(sizes, x.shape[2:], 1, x.device), x, 0.0)
        outs = []
        for i, stage in enumerate(self.stages):
            tokens, (h, w) = stage(x, sizes, self.strides[i])
            if stage.cls_token is not None:
                cls_token, tokens = tokens[:, 0], tokens[:, 1:]
            x = tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)
            if i in self.out_indices:
                outs.append(cls_token if stage.cls_token is not None else x.contiguous())
        return tuple(outs)


class PVTv2(PVT):
    """PVT v2 (Wang et al., CVMJ 2022): :class:`PVT` built from v2's arch data.

    Overlapping patch embeddings (kernel 7 / stride 4 / padding 3, then 3 / 2 / 1), no
    position embeddings, a LayerNorm after every stage, a 3x3 depth-wise conv in every FFN
    and, for ``'b2_li'``, linear SRA (pool to 7x7, 1x1 conv, LayerNorm, GELU) with a ReLU
    after ``fc1``. Same stage and layer code as v1: only :data:`ARCH_ZOO` differs. Any
    input of at least 29x29 works (``'b2_li'``: any size); maps are
    ``ceil(side / stride)`` wide, e.g. 112x137 gives 28x35, 14x18, 7x9, 4x5. Official
    ``pvt_v2_b*.pth`` weights load through ``init_cfg`` like v1's.

    Args:
        arch: ``'b0'`` ... ``'b5'``, ``'b2_li'`` or a dict of fields (:data:`ARCH_FIELDS`)
            over v2's b1-b5 table; ``depths`` is required in a dict.
        **kwargs: The other arguments of :class:`PVT` (``with_cls_token`` must stay
            ``False``: v2 classifies from mean-pooled tokens).
    """

    arch_zoo: Dict[str, Dict[str, Any]] = _VersionZoo('v2')
    base_arch = 'b2'

    def __init__(self, arch: Union[str, dict] = 'b2', **kwargs) -> None:
        super().__init__(arch=arch, **kwargs)
