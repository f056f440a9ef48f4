"""swap_tokens: the token-id variation a text task's augment uses for distillation."""

from __future__ import annotations

import pytest
import torch

from autocomp.tasks.augment import swap_tokens


def test_swap_tokens_takes_each_new_token_from_the_same_position_of_the_batch_and_leaves_padding():
    torch.manual_seed(0)
    ids = torch.randint(1, 100, (32, 16))
    mask = (torch.arange(16)[None, :] < torch.randint(4, 17, (32,))[:, None]).long()
    ids = ids * mask
    out = swap_tokens(ids, mask, rate=0.5)
    assert out.shape == ids.shape and out.dtype == ids.dtype
    assert torch.equal(out[mask == 0], ids[mask == 0])  # padding stays padding
    changed = out != ids
    assert 0.3 < changed[mask == 1].float().mean() < 0.5  # about half swapped (a donor may hold the same token)
    for row, col in changed.nonzero().tolist():  # a swapped token is a real token of that column
        assert out[row, col] != 0 and (ids[:, col] == out[row, col]).any()
    assert torch.equal(swap_tokens(ids, mask, rate=0.0), ids)


def test_swap_tokens_rejects_what_it_cannot_vary():
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\); got \(16,\)"):
        swap_tokens(torch.arange(16))
    with pytest.raises(ValueError, match="rate 1.5 must be in"):
        swap_tokens(torch.ones(2, 3, dtype=torch.long), rate=1.5)
