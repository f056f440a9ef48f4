"""Built-in task: scikit-learn's bundled handwritten digits (no download), upsampled to 32x32.

The 8x8 images are upsampled so that the models do enough work per image for
compression to matter on real hardware (about 1.5 ms per image in fp32 on a
2-core x86 host for the residual CNN). The trained weights are cached per user,
keyed by a hash of the architecture's source and the training recipe, so only
the first run trains.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autocomp.errors import TaskError
from autocomp.paths import cache_dir
from autocomp.tasks import models
from autocomp.tasks.base import Batch, Predict

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
ARCHITECTURES = {"resnet": models.ResNetDigits, "mobilenet": models.MobileNetDigits}


@dataclass(frozen=True)
class TrainRecipe:
    epochs: int = 7
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class DigitsData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@lru_cache(maxsize=1)
def load_data() -> DigitsData:
    """The fixed stratified 75/25 split of the digits data, as float tensors in [0, 1], 1x32x32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=digits.target, random_state=0
    )
    return DigitsData(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx])


def accuracy(predict: Predict, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``predict`` over (x, y), in [0, 1]."""
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = predict(x[start : start + batch_size].numpy())
        correct += int((np.asarray(logits).argmax(axis=1) == y[start : start + batch_size].numpy()).sum())
    return correct / len(y)


class DigitsTask:
    """Classify scikit-learn's digits with a residual CNN (``resnet``) or a MobileNet-style net."""

    def __init__(self, *, arch: str = "resnet", recipe: TrainRecipe = TrainRecipe(), batch_size: int = 64) -> None:
        if arch not in ARCHITECTURES:
            raise TaskError(f"unknown digits architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        self.arch = arch
        self.name = "digits" if arch == "resnet" else f"digits-{arch}"
        self.recipe = recipe
        self.batch_size = batch_size

    def build_model(self, width: float | None = None) -> nn.Module:
        """The trained model (cached after the first call); with ``width``, a fresh untrained one."""
        if width is not None:
            return ARCHITECTURES[self.arch](width=width)
        path = cache_dir() / "models" / f"digits-{self.arch}-{self.cache_key()}.pt"
        model = ARCHITECTURES[self.arch]()
        if path.exists():
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        self._train(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache file
        return model.eval()

    def cache_key(self) -> str:
        """Hash of the architecture source, the training recipe and the torch version."""
        payload = json.dumps(
            {"source": inspect.getsource(models), "recipe": asdict(self.recipe), "arch": self.arch, "torch": torch.__version__},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (load_data().x_val[:1].clone(),)

    def train_batches(self) -> Iterator[Batch]:
        """One shuffled pass over the training split."""
        data = load_data()
        order = torch.randperm(len(data.y_train))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield (data.x_train[idx],), data.y_train[idx]

    def evaluate(self, predict: Predict) -> float:
        data = load_data()
        return accuracy(predict, data.x_val, data.y_val)

    def _train(self, model: nn.Module) -> None:
        recipe, data = self.recipe, load_data()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(recipe.seed)
        steps_per_epoch = -(-len(data.y_train) // recipe.batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
        )
        started = time.perf_counter()
        for epoch in range(recipe.epochs):
            model.train()
            for (x,), y in self.train_batches():
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            log.info("training %s: epoch %d/%d (%.0f s)", self.name, epoch + 1, recipe.epochs, time.perf_counter() - started)
        torch.random.set_rng_state(generator_state)
        model.eval()
