"""An independent, deliberately naive model of the official PVT v2 release (``pvt_v2.py``).

Official module layout and parameter names (``patch_embed1.proj``, ``block1.0.attn.q`` /
``kv`` / ``sr`` / ``norm``, ``block1.0.mlp.fc1`` / ``dwconv.dwconv`` / ``fc2``, ``norm1`` ...
``norm4``, ``head``) and the official forward: overlapping patch embeddings (7/4/3, then
3/2/1), explicit softmax attention, linear SRA for the ``-li`` variant (pool to 7x7, 1x1
conv, LayerNorm, GELU; a ReLU after ``fc1``), a 3x3 depth-wise conv between ``fc1`` and
GELU, a LayerNorm after each stage; LayerNorm eps 1e-6 in the blocks and stage norms,
torch's default in the patch embeddings and the attention's reduction. Tests load its
weights, saved in the release format, into pvt_mm and compare features. It is test
scaffolding, not part of pvt_mm, and shares no code with it.
"""
import torch
import torch.nn.functional as F
from torch import nn


class _DWConv(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w))
        return x.flatten(2).transpose(1, 2)


class _Mlp(nn.Module):

    def __init__(self, dim, hidden, linear):
        super().__init__()
        self.linear = linear
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        x = self.fc1(x)
        if self.linear:
            x = torch.relu(x)
        return self.fc2(F.gelu(self.dwconv(x, h, w)))


class _Attention(nn.Module):

    def __init__(self, dim, heads, sr_ratio, linear):
        super().__init__()
        self.heads, self.sr_ratio, self.linear = heads, sr_ratio, linear
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        if linear:
            self.sr = nn.Conv2d(dim, dim, 1, 1)
            self.norm = nn.LayerNorm(dim)
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, n, self.heads, d).permute(0, 2, 1, 3)
        src = x
        if self.linear:
            grid = F.adaptive_avg_pool2d(x.permute(0, 2, 1).reshape(b, c, h, w), 7)
            src = F.gelu(self.norm(self.sr(grid).reshape(b, c, -1).permute(0, 2, 1)))
        elif self.sr_ratio > 1:
            grid = x.permute(0, 2, 1).reshape(b, c, h, w)
            src = self.norm(self.sr(grid).reshape(b, c, -1).permute(0, 2, 1))
        kv = self.kv(src).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        attn = ((q @ kv[0].transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):

    def __init__(self, dim, heads, mlp_ratio, sr_ratio, linear):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads, sr_ratio, linear)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), linear)

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class _OverlapPatchEmbed(nn.Module):

    def __init__(self, kernel, stride, cin, dim):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class OfficialPVTv2(nn.Module):
    """The official PVT v2 (classification release layout)."""

    def __init__(self, depths=(2, 2, 2, 2), dims=(32, 64, 160, 256), heads=(1, 2, 5, 8),
                 mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1), linear=False,
                 num_classes=1000):
        super().__init__()
        for i in range(4):
            self.add_module(f'patch_embed{i + 1}', _OverlapPatchEmbed(
                7 if i == 0 else 3, 4 if i == 0 else 2, 3 if i == 0 else dims[i - 1], dims[i]))
            self.add_module(f'block{i + 1}', nn.ModuleList(
                _Block(dims[i], heads[i], mlp_ratios[i], sr_ratios[i], linear)
                for _ in range(depths[i])))
            self.add_module(f'norm{i + 1}', nn.LayerNorm(dims[i], eps=1e-6))
        self.head = nn.Linear(dims[3], num_classes)

    def perturb_norms_(self):
        """Give every LayerNorm a random affine map (default init is 1 / 0), so that a norm
        loaded into the wrong place changes the features."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.normal_(1.0, 0.2)
                    module.bias.normal_(0.0, 0.2)
        return self

    def forward_dense(self, x):
        """The official detection backbone: the four normalised stage maps."""
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f'patch_embed{i}')(x)
            for blk in getattr(self, f'block{i}'):
                x = blk(x, h, w)
            x = getattr(self, f'norm{i}')(x)
            x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
            outs.append(x)
        return outs

    def forward(self, x):
        """The official classifier: mean of the normalised last-stage tokens, then the head."""
        return self.head(self.forward_dense(x)[-1].flatten(2).mean(-1))
