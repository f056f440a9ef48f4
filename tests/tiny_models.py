"""Small models and tasks the tests build themselves (no downloads, seconds to train)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TinyResNet(nn.Module):
    """Stem, two residual blocks (one with a strided 1x1 shortcut), linear head; 1x16x16 input."""

    def __init__(self, *, width: float = 1.0, num_classes: int = 4) -> None:
        super().__init__()
        c1, c2 = max(8, int(16 * width) // 8 * 8), max(8, int(32 * width) // 8 * 8)
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.block1_conv1 = nn.Conv2d(c1, c1, 3, padding=1, bias=False)
        self.block1_bn1 = nn.BatchNorm2d(c1)
        self.block1_conv2 = nn.Conv2d(c1, c1, 3, padding=1, bias=False)
        self.block1_bn2 = nn.BatchNorm2d(c1)
        self.block2_conv1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.block2_bn1 = nn.BatchNorm2d(c2)
        self.block2_conv2 = nn.Conv2d(c2, c2, 3, padding=1, bias=False)
        self.block2_bn2 = nn.BatchNorm2d(c2)
        self.block2_short = nn.Conv2d(c1, c2, 1, stride=2, bias=False)
        self.fc = nn.Linear(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = F.relu(self.block1_bn1(self.block1_conv1(x)))
        x = F.relu(x + self.block1_bn2(self.block1_conv2(y)))
        y = F.relu(self.block2_bn1(self.block2_conv1(x)))
        x = F.relu(self.block2_short(x) + self.block2_bn2(self.block2_conv2(y)))
        return self.fc(x.mean(dim=(2, 3)))


class TinyEncoder(nn.Module):
    """A one-layer transformer encoder over token ids with an attention mask (two inputs)."""

    def __init__(self, *, vocab: int = 32, dim: int = 32, ffn: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn1 = nn.Linear(dim, ffn)
        self.ffn2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.scale = dim**-0.5

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        keep = mask.to(h.dtype)
        scores = self.q(h) @ self.k(h).transpose(1, 2) * self.scale
        scores = scores + (1.0 - keep[:, None, :]) * -1e4
        h = self.norm1(h + self.o(scores.softmax(-1) @ self.v(h)))
        h = self.norm2(h + self.ffn2(F.relu(self.ffn1(h))))
        pooled = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)


def _fit(model: nn.Module, batches, *, epochs: int) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for inputs, labels in batches():
            loss = F.cross_entropy(model(*inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


class ShapesTask:
    """Four classes of 16x16 images: a bright quadrant marks the class (learnable in seconds)."""

    name = "shapes"

    def __init__(self, *, seed: int = 0, train_epochs: int = 6) -> None:
        gen = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 4, (512,), generator=gen)
        images = torch.rand(512, 1, 16, 16, generator=gen) * 0.3
        for i, label in enumerate(labels.tolist()):
            r, c = divmod(label, 2)
            images[i, 0, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 0.7
        self.x_train, self.y_train = images[:384], labels[:384]
        self.x_val, self.y_val = images[384:], labels[384:]
        self.train_epochs = train_epochs
        self._trained: nn.Module | None = None

    def build_model(self, width: float | None = None) -> nn.Module:
        if width is not None:
            return TinyResNet(width=width)
        if self._trained is None:
            torch.manual_seed(0)
            self._trained = _fit(TinyResNet(), self.train_batches, epochs=self.train_epochs)
        return self._trained

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.x_val[:1].clone(),)

    def train_batches(self) -> Iterator:
        order = torch.randperm(len(self.y_train))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            yield (self.x_train[idx],), self.y_train[idx]

    def evaluate(self, predict) -> float:
        logits = predict(self.x_val.numpy())
        return float((np.asarray(logits).argmax(1) == self.y_val.numpy()).mean())


class TextTask:
    """Two-input task: does token 7 occur among the unmasked tokens? (ids + attention mask)."""

    name = "text"

    def __init__(self, *, seed: int = 0, seq_len: int = 12) -> None:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, 32, (600, seq_len), generator=gen)
        ids[ids == 7] = 8
        lengths = torch.randint(4, seq_len + 1, (600,), generator=gen)
        mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
        labels = torch.randint(0, 2, (600,), generator=gen)
        for i in range(600):
            if labels[i]:
                ids[i, int(torch.randint(0, int(lengths[i]), (1,), generator=gen))] = 7
            # tokens under the mask are noise, sometimes a decoy 7 that must be ignored
            if int(lengths[i]) < seq_len and i % 3 == 0:
                ids[i, -1] = 7
        self.ids, self.mask, self.labels = ids, mask, labels
        self._trained: nn.Module | None = None

    def build_model(self) -> nn.Module:
        if self._trained is None:
            torch.manual_seed(0)
            self._trained = _fit(TinyEncoder(), self.train_batches, epochs=8)
        return self._trained

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.ids[:2].clone(), self.mask[:2].clone())

    def train_batches(self) -> Iterator:
        order = torch.randperm(450)
        for start in range(0, 450, 32):
            idx = order[start : start + 32]
            yield (self.ids[idx], self.mask[idx]), self.labels[idx]

    def evaluate(self, predict) -> float:
        logits = predict(self.ids[450:].numpy(), self.mask[450:].numpy())
        return float((np.asarray(logits).argmax(1) == self.labels[450:].numpy()).mean())
