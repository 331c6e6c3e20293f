"""Small ViT and Swin-style models for 8x8 images, and the scikit-learn digits data.

The attention modules reproduce timm's layouts attribute for attribute (``Attention``: ``qkv``,
``num_heads``, ``head_dim``, ``scale``, ``q_norm``, ``k_norm``, ``attn_drop``, ``proj``,
``proj_drop``; ``WindowAttention``: ``relative_position_bias_table``,
``relative_position_index`` and ``forward(x, mask=None)`` with a 0/-100 shifted-window mask), so
:func:`qflash.patch` is exercised on them exactly as on timm models. The training script
(``scripts/train_digits.py``), the accuracy study (``analysis/accuracy.py``) and the tests share
these definitions. Head dims are 16, as the kernel supports.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Held-out split of the digits study: stratified, 25 % of the 1797 images, fixed seed.
TEST_FRACTION = 0.25
SPLIT_SEED = 0


class Attention(nn.Module):
    """timm's ViT ``Attention`` layout (float, SDPA)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x, attn_mask=None):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """(Wh*Ww, Wh*Ww) index into a ((2Wh-1)(2Ww-1), H) table: one entry per relative offset."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2), offsets in [-(W-1), W-1]
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


class WindowAttention(nn.Module):
    """timm's Swin ``WindowAttention`` layout (float): relative-position bias plus an optional
    (num_windows, N, N) additive mask; ``x`` is (num_windows * B, N, C), batch-major."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = (window_size, window_size)
        self.window_area = window_size * window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size, window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask[:, None]).unsqueeze(0).expand(B_ // nw, -1, -1, -1, -1).reshape(B_, -1, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, C)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, learned positions, pre-norm blocks, linear head on the class token."""

    def __init__(self, img_size: int = 8, patch_size: int = 2, in_chans: int = 1, num_classes: int = 10,
                 embed_dim: int = 64, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (img_size // patch_size) ** 2 + 1, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def window_partition(x, ws: int):
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows of one image consecutive (batch-major)."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(w, ws: int, H: int, W: int):
    C = w.shape[-1]
    x = w.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def shift_mask(H: int, W: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask, -100 between tokens that the cyclic shift brought from different regions."""
    label = torch.zeros(1, H, W, 1)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for n, (hs, wsl) in enumerate((h, w) for h in cuts for w in cuts):
        label[:, hs, wsl, :] = n
    lw = window_partition(label, ws).squeeze(-1)  # (nW, N)
    return torch.where(lw[:, :, None] != lw[:, None, :], -100.0, 0.0)


class SwinBlock(nn.Module):
    """Swin block: (shifted) window attention and an MLP on an (H, W) token grid."""

    def __init__(self, dim: int, num_heads: int, resolution: int, window_size: int, shift: int, mlp_ratio: float):
        super().__init__()
        if resolution <= window_size:  # one window covers the grid: shifting would change nothing
            window_size, shift = resolution, 0
        self.resolution, self.window_size, self.shift = resolution, window_size, shift
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, num_heads, window_size)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", shift_mask(resolution, resolution, window_size, shift) if shift else None,
                             persistent=False)

    def forward(self, x):  # x: (B, H, W, C)
        B, H, W, C = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window_size), mask=self.attn_mask),
                           self.window_size, H, W)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens -> one token of twice the width."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class TinySwin(nn.Module):
    """Convolutional stem to an 8x8 grid, stages of (regular, shifted) window blocks with patch
    merging between them, mean pooling and a linear head."""

    def __init__(self, img_size: int = 8, in_chans: int = 1, num_classes: int = 10, embed_dim: int = 32,
                 depths=(2, 2), num_heads=(2, 4), window_size: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.stem_norm = nn.LayerNorm(embed_dim)
        stages, dim, res = [], embed_dim, img_size
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            if i:
                stages.append(PatchMerging(dim))
                dim, res = 2 * dim, res // 2
            stages += [SwinBlock(dim, heads, res, window_size, (window_size // 2) * (j % 2), mlp_ratio)
                       for j in range(depth)]
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1))
        return self.head(self.norm(self.stages(x)).mean(dim=(1, 2)))


ARCHS = {"vit": TinyViT, "swin": TinySwin}


def build(arch: str, **config) -> nn.Module:
    """A tiny model by name ('vit' or 'swin') and constructor keywords."""
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: use one of {sorted(ARCHS)}")
    return ARCHS[arch](**config)


def load(path) -> tuple[nn.Module, dict]:
    """A float model from a checkpoint written by ``scripts/train_digits.py`` (eval mode), and its metadata."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build(ckpt["arch"], **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


def digits():
    """scikit-learn's bundled 8x8 digits (offline), split into ``(x_train, y_train, x_test, y_test)``.

    Images are float32 (N, 1, 8, 8) in [-1, 1] (pixel values 0..16); labels int64.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the digits data needs scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(data.target, dtype=torch.int64)
    i_tr, i_te = train_test_split(torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                  stratify=y.numpy())
    return x[i_tr], y[i_tr], x[i_te], y[i_te]
