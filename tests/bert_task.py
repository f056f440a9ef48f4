"""A BERT-style sentence encoder as a Task file (loaded by the CLI as 'tests/bert_task.py:make_task').

Built from ``transformers``' config classes (random init, no download) at the size of the encoder
in issue 16 (hidden 256, 8 heads of 32, 4 layers, feed-forward 1024, 16 tokens), then pretrained
for 300 steps to predict the bag of tokens of fresh random sentences from its pooled embedding, so
that the embedding carries the input (after 40 steps it had collapsed to a near-constant vector
whose cosine to anything was 1.0) and pruning hurts: whole heads cut by half without fine-tuning
score cosine 0.91. The weights are cached in the temp dir, keyed by the recipe, so the search and
export processes of one test run train it once. The metric is the mean cosine between the model's
pooled embedding and the original's on 128 sentences that none of the 256 distillation
sentences hold. Its ``augment`` varies those 256 by swapping tokens between them (``swap_tokens``):
without it, a student with half the blocks removed matched the teacher on the 256 (cosine 1.000)
and scored 0.970 on the held-out ones.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autocomp.tasks.augment import swap_tokens


class Encoder(nn.Module):
    """BERT returning a mean-pooled sentence embedding (a tensor, as export needs)."""

    def __init__(self, *, hidden: int = 256, heads: int = 8, layers: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        import transformers

        config = transformers.BertConfig(
            vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=ffn, max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def sentences(count: int, *, seed: int, seq: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (count, seq), generator=generator)
    lengths = torch.randint(6, seq + 1, (count,), generator=generator)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


PRETRAIN_STEPS, PRETRAIN_LR = 300, 2e-4


def _pretrained() -> Encoder:
    """The encoder after its bag-of-tokens pretraining (deterministic; cached in the temp dir)."""
    import transformers

    recipe = f"{PRETRAIN_STEPS}-{PRETRAIN_LR}-{torch.__version__}-{transformers.__version__}".encode() + Path(__file__).read_bytes()
    cache = Path(tempfile.gettempdir()) / f"autocomp-test-bert-{hashlib.sha256(recipe).hexdigest()[:16]}.pt"
    torch.manual_seed(0)
    model = Encoder()
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model
    head = nn.Linear(model.bert.config.hidden_size, 100)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=PRETRAIN_LR)
    for step in range(PRETRAIN_STEPS):
        ids, mask = sentences(32, seed=1000 + step)  # fresh sentences: it learns the task, not 256 examples
        bags = torch.zeros(len(ids), 100).scatter_(1, ids, 1.0)
        loss = F.binary_cross_entropy_with_logits(head(model(ids, mask)), bags)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), partial)
    partial.replace(cache)  # atomic: a parallel process never reads half a file
    return model


class SentenceEncoderTask:
    name = "bert-encoder"

    def __init__(self) -> None:
        self.train_ids, self.train_mask = sentences(256, seed=1)
        self.val_ids, self.val_mask = sentences(128, seed=2)
        self._model: nn.Module | None = None
        self._reference: np.ndarray | None = None

    def build_model(self) -> nn.Module:
        if self._model is None:
            self._model = _pretrained().eval()
            with torch.no_grad():
                self._reference = self._model(self.val_ids, self.val_mask).numpy()
        return self._model

    def example_inputs(self):
        return (self.train_ids[:2].clone(), self.train_mask[:2].clone())

    def train_batches(self):
        order = torch.randperm(len(self.train_ids))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            yield (self.train_ids[idx], self.train_mask[idx]), None

    def augment(self, inputs):
        # 256 sentences alone let a student match the teacher on them and miss on new ones
        ids, mask = inputs
        return swap_tokens(ids, mask, rate=0.3), mask

    def distill_loss(self, student_out, teacher_out, labels):
        return F.mse_loss(student_out, teacher_out)

    def evaluate(self, predict) -> float:
        self.build_model()
        got = np.asarray(predict(self.val_ids.numpy(), self.val_mask.numpy()), dtype=np.float64)
        ref = self._reference.astype(np.float64)
        cosine = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        return float(cosine.mean())


def make_task():
    return SentenceEncoderTask()
