"""An independent, deliberately naive model of the official PVT v1 release.

It reproduces the official module layout and parameter names (``patch_embed1``,
``pos_embed1``, ``block1.0.attn.q`` ...), the stage-4 position embedding with its extra
class slot, and the official forward (explicit softmax attention, bilinear position
embedding resize, no norm on dense outputs; LayerNorm eps 1e-6 in the blocks and the
final norm, torch's default in the patch embeddings and the attention's reduction), so
tests can check that pvt_mm, loading the same weights, computes the same features. It is
test scaffolding, not part of pvt_mm.
"""
import torch
import torch.nn.functional as F
from torch import nn


class _Mlp(nn.Module):

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):

    def __init__(self, dim, heads, sr_ratio):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr_ratio
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)  # torch's default eps (1e-5), as the official code

    def forward(self, x, h, w):
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, n, self.heads, d).permute(0, 2, 1, 3)
        src = x
        if self.sr_ratio > 1:
            src = x.permute(0, 2, 1).reshape(b, c, h, w)
            src = self.norm(self.sr(src).reshape(b, c, -1).permute(0, 2, 1))
        kv = self.kv(src).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        attn = ((q @ kv[0].transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):

    def __init__(self, dim, heads, mlp_ratio, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):

    def __init__(self, img_size, patch, cin, dim):
        super().__init__()
        self.grid = img_size // patch
        self.proj = nn.Conv2d(cin, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)  # torch's default eps (1e-5), as the official code

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class OfficialPVT(nn.Module):
    """The official PVT v1 (classification release layout)."""

    def __init__(self, depths=(2, 2, 2, 2), dims=(64, 128, 320, 512), heads=(1, 2, 5, 8),
                 mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1), img_size=224, num_classes=1000):
        super().__init__()
        size = img_size
        for i in range(4):
            patch = 4 if i == 0 else 2
            embed = _PatchEmbed(size, patch, 3 if i == 0 else dims[i - 1], dims[i])
            size //= patch
            num = embed.grid ** 2 + (1 if i == 3 else 0)
            # Official naming: one attribute per stage.
            self.add_module(f'patch_embed{i + 1}', embed)
            self.register_parameter(f'pos_embed{i + 1}', nn.Parameter(torch.randn(1, num, dims[i]) * 0.02))
            self.add_module(f'block{i + 1}', nn.ModuleList(
                _Block(dims[i], heads[i], mlp_ratios[i], sr_ratios[i]) for _ in range(depths[i])))
        self.norm = nn.LayerNorm(dims[3], eps=1e-6)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dims[3]) * 0.02)
        self.head = nn.Linear(dims[3], num_classes)

    @staticmethod
    def _pos(pos, embed, h, w):
        if h * w == pos.shape[1]:
            return pos
        grid = pos.reshape(1, embed.grid, embed.grid, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=(h, w), mode='bilinear').reshape(1, -1, h * w).permute(0, 2, 1)

    def forward_dense(self, x):
        """The official detection backbone: four maps, stage-4 class slot unused."""
        outs = []
        for i in range(1, 5):
            embed = getattr(self, f'patch_embed{i}')
            x, h, w = embed(x)
            pos = getattr(self, f'pos_embed{i}')
            x = x + self._pos(pos[:, 1:] if i == 4 else pos, embed, h, w)
            for blk in getattr(self, f'block{i}'):
                x = blk(x, h, w)
            x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
            outs.append(x)
        return outs

    def forward_cls_features(self, x):
        """The official classifier's pre-logits (normalised class token)."""
        for i in range(1, 5):
            embed = getattr(self, f'patch_embed{i}')
            x, h, w = embed(x)
            pos = getattr(self, f'pos_embed{i}')
            if i == 4:
                x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
                pos = torch.cat((pos[:, :1], self._pos(pos[:, 1:], embed, h, w)), dim=1)
            else:
                pos = self._pos(pos, embed, h, w)
            x = x + pos
            for blk in getattr(self, f'block{i}'):
                x = blk(x, h, w)
            if i < 4:
                x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return self.norm(x)[:, 0]
