"""Built-in vision transformer for the digits data: multi-head self-attention over 4x4 patches.

Its attention modules follow the Hugging Face BERT/ViT layout (``query``, ``key``,
``value`` Linear children with ``num_attention_heads`` and ``attention_head_size``),
so head pruning (``autocomp.compress.heads``) treats it like a pretrained encoder:
it is the built-in transformer the search is exercised on without downloads.
"""

from __future__ import annotations

import torch
from torch import nn

from autocomp.tasks.models import scaled_channels


class SelfAttention(nn.Module):
    """Multi-head self-attention; the reshape into heads infers the head count, so pruned heads just work."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = dim // heads
        self.all_head_size = dim
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens = x.shape[0], x.shape[1]
        shape = (batch, tokens, -1, self.attention_head_size)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        weights = (q @ k.transpose(-2, -1) * self.attention_head_size**-0.5).softmax(dim=-1)
        return (weights @ v).transpose(1, 2).reshape(batch, tokens, -1)


class Block(nn.Module):
    """Pre-norm transformer block: attention, then a GELU feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.proj(self.attention(self.norm1(x)))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViTDigits(nn.Module):
    """A small ViT for 1x32x32 digits: 64 patches of 4x4, 64-wide, 4 blocks of 4 heads, mean-pooled head.

    ``width`` scales the feed-forward widths (a fresh student keeps the attention layout).
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 10, dim: int = 64, heads: int = 4, depth: int = 4) -> None:
        super().__init__()
        self.patches = nn.Conv2d(1, dim, 4, stride=4)
        self.position = nn.Parameter(torch.zeros(1, 64, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, scaled_channels(128, width)) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2) + self.position
        return self.fc(self.norm(self.blocks(tokens)).mean(dim=1))
