"""Built-in task: scikit-learn's bundled handwritten digits (no download), upsampled to 32x32.

The 8x8 images are upsampled so that the models do enough work per image for
compression to matter on real hardware (about 1.5 ms per image in fp32 on a
2-core x86 host for the residual CNN). The trained weights are cached per user,
keyed by a hash of the architecture's source and the training recipe, so only
the first run trains. Training is deterministic on CPU: the same torch build on
the same instruction set gives the same weights bit for bit, whatever the
caller's thread count or random state.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import logging
import time
from contextlib import contextmanager
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
from autocomp.tasks.vit import ViTDigits
from autocomp.tasks.base import Batch, Predict

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
ARCHITECTURES = {"resnet": models.ResNetDigits, "mobilenet": models.MobileNetDigits, "vit": ViTDigits}


@dataclass(frozen=True)
class TrainRecipe:
    """How the teacher is trained; every field is part of the cache key.

    ``threads`` is the intra-op thread count used for training, whatever the
    caller's: CPU kernels split their reductions by thread, so the floats, and
    after training the accuracy, depend on it. Fixing it is what makes two
    machines with different core counts train the same weights.
    """

    epochs: int = 7
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TaskError(f"TrainRecipe.epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise TaskError(f"TrainRecipe.batch_size must be at least 1, got {self.batch_size}")
        if self.threads < 1:
            raise TaskError(f"TrainRecipe.threads must be at least 1, got {self.threads}")


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
        # The ViT's students also match the teacher's final hidden states (after the last LayerNorm): with
        # whole blocks removed, the logits alone under-constrain what the remaining blocks must compute
        # (one block of four kept, 480 steps: 96.22 % from logits only, 96.67 % with this term).
        self.distill_features = {"norm": 1.0} if arch == "vit" else {}

    def build_model(self, width: float | None = None) -> nn.Module:
        """The trained model (cached after the first call); with ``width``, a fresh untrained one."""
        if width is not None:
            return ARCHITECTURES[self.arch](width=width)
        path = cache_dir() / "models" / f"digits-{self.arch}-{self.cache_key()}.pt"
        if path.exists():
            # The throwaway initialisation must not advance the caller's generator: a cached
            # load, like a fresh training, leaves the caller's random state as it was.
            with torch.random.fork_rng(devices=[]):
                model = ARCHITECTURES[self.arch]()
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        model = self._train()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache file
        return model.eval()

    def cache_key(self) -> str:
        """Hash of the architecture and training source, the training recipe and the torch version."""
        payload = json.dumps(
            {
                # the module defining this architecture (models.py for the CNNs, vit.py for the ViT)
                "source": inspect.getsource(sys.modules[ARCHITECTURES[self.arch].__module__]),
                "training": inspect.getsource(DigitsTask._train) + inspect.getsource(_deterministic_cpu),
                "recipe": asdict(self.recipe),
                "arch": self.arch,
                "torch": torch.__version__,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (load_data().x_val[:1].clone(),)

    def train_batches(self) -> Iterator[Batch]:
        """One pass over the training split, shuffled by torch's global generator (callers seed it)."""
        yield from _batches(load_data(), batch_size=self.batch_size, generator=None)

    def evaluate(self, predict: Predict) -> float:
        data = load_data()
        return accuracy(predict, data.x_val, data.y_val)

    def _train(self) -> nn.Module:
        """A freshly initialised model trained by the recipe, the same bit for bit on every call."""
        recipe, data = self.recipe, load_data()
        steps_per_epoch = -(-len(data.y_train) // recipe.batch_size)
        started = time.perf_counter()
        with _deterministic_cpu(seed=recipe.seed, threads=recipe.threads):
            model = ARCHITECTURES[self.arch]()
            # The data order has its own generator, so it is the same whatever else draws.
            order_generator = torch.Generator().manual_seed(recipe.seed)
            optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
            )
            for epoch in range(recipe.epochs):
                model.train()
                for (x,), y in _batches(data, batch_size=recipe.batch_size, generator=order_generator):
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                log.info(
                    "training %s: epoch %d/%d (%.0f s)", self.name, epoch + 1, recipe.epochs, time.perf_counter() - started
                )
        return model.eval()


def _batches(data: DigitsData, *, batch_size: int, generator: torch.Generator | None) -> Iterator[Batch]:
    order = torch.randperm(len(data.y_train), generator=generator)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield (data.x_train[idx],), data.y_train[idx]


@contextmanager
def _deterministic_cpu(*, seed: int, threads: int) -> Iterator[None]:
    """Seeded torch generator, deterministic algorithms and ``threads`` intra-op threads, for the block only.

    The caller's generator state, thread count and deterministic-algorithms
    setting are restored afterwards, also when the block raises. Only torch
    draws during training, so numpy's and Python's generators are left alone.
    """
    caller_threads = torch.get_num_threads()
    caller_deterministic = torch.are_deterministic_algorithms_enabled()
    caller_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(True)
            yield
    finally:
        torch.use_deterministic_algorithms(caller_deterministic, warn_only=caller_warn_only)
        torch.set_num_threads(caller_threads)
