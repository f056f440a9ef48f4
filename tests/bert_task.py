"""A BERT-style sentence encoder as a Task file (loaded by the CLI as 'tests/bert_task.py:make_task').

Built from ``transformers``' config classes (random init, no download) and trained for a few
seconds so its heads differ; the metric is the mean cosine between the model's pooled embedding
and the original model's, on inputs none of the training batches hold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """BERT returning a mean-pooled sentence embedding (a tensor, as export needs)."""

    def __init__(self, *, hidden: int = 64, heads: int = 4, layers: int = 2, ffn: int = 128) -> None:
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


class SentenceEncoderTask:
    name = "bert-encoder"

    def __init__(self) -> None:
        self.train_ids, self.train_mask = sentences(256, seed=1)
        self.val_ids, self.val_mask = sentences(128, seed=2)
        self._model: nn.Module | None = None
        self._reference: np.ndarray | None = None

    def build_model(self) -> nn.Module:
        if self._model is None:
            torch.manual_seed(0)
            model = Encoder()
            # a few steps of a contrastive-free objective so the weights have structure: make the
            # embedding predict the bag of tokens (cheap, deterministic)
            head = nn.Linear(64, 100)
            optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
            bags = torch.zeros(len(self.train_ids), 100).scatter_(1, self.train_ids, 1.0)
            for step in range(40):
                idx = torch.arange(step * 32, step * 32 + 32) % len(self.train_ids)
                loss = F.binary_cross_entropy_with_logits(head(model(self.train_ids[idx], self.train_mask[idx])), bags[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            self._model = model.eval()
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
