"""Head-aware pruning on a Hugging Face BERT encoder built from its config class (random init, no download)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import transformers  # a dev dependency (".[dev]"): the base install does not need it

from autocomp.compress.heads import attention_blocks, heads_kept, prune_heads
from autocomp.compress.prune import prune_channels
from autocomp.errors import PlanError
from autocomp.export import export_onnx
from autocomp.runtime import onnx_session


class Encoder(nn.Module):
    """A BERT encoder returning its last hidden state: a tensor, as export needs."""

    def __init__(self, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=100, hidden_size=64, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=128,
            max_position_embeddings=32,
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def inputs(batch: int = 2, seq: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch * 100 + seq)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2 :] = 0
    return torch.randint(0, 100, (batch, seq), generator=generator), mask


@pytest.fixture
def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder().eval()


def test_attention_blocks_are_found_with_their_heads(encoder):
    blocks = attention_blocks(encoder)
    assert list(blocks) == ["bert.encoder.layer.0.attention.self", "bert.encoder.layer.1.attention.self"]
    block = blocks["bert.encoder.layer.0.attention.self"]
    assert block.projections[0] == "bert.encoder.layer.0.attention.self.query"
    assert (block.num_heads, block.head_size) == (4, 16)


def test_pruned_heads_keep_the_model_running_and_exporting(encoder, tmp_path):
    example = inputs()
    pruned = prune_heads(
        encoder, {"bert.encoder.layer.0.attention.self": 0.5, "bert.encoder.layer.1.attention.self": 0.25}, example
    )
    layers = pruned.bert.encoder.layer
    assert [layer.attention.self.num_attention_heads for layer in layers] == [2, 3]
    assert [layer.attention.self.query.out_features for layer in layers] == [32, 48]
    assert [layer.attention.output.dense.in_features for layer in layers] == [32, 48]
    assert [layer.attention.output.dense.out_features for layer in layers] == [64, 64]  # the residual stream stays
    assert encoder.bert.encoder.layer[0].attention.self.num_attention_heads == 4  # the input is untouched
    # other batch sizes and sequence lengths run: no shape is baked in
    assert pruned(*inputs(batch=3, seq=9)).shape == (3, 9, 64)
    path = export_onnx(pruned, example, tmp_path / "heads.onnx", check_batches=[inputs(batch=4)])
    assert [i.name for i in onnx_session(path).get_inputs()] == ["input_ids", "attention_mask"]


class DistilEncoder(nn.Module):
    """DistilBERT's layout: q_lin/k_lin/v_lin/out_lin and n_heads."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.DistilBertConfig(vocab_size=100, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=32)
        self.distilbert = transformers.DistilBertModel(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.distilbert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_distilbert_heads_are_pruned_as_heads_and_export(tmp_path):
    torch.manual_seed(0)
    model = DistilEncoder().eval()
    blocks = attention_blocks(model)
    assert list(blocks) == ["distilbert.transformer.layer.0.attention", "distilbert.transformer.layer.1.attention"]
    assert (blocks["distilbert.transformer.layer.0.attention"].num_heads, blocks["distilbert.transformer.layer.0.attention"].head_size) == (4, 16)
    pruned = prune_heads(model, {"distilbert.transformer.layer.0.attention": 0.5}, inputs())
    attention = pruned.distilbert.transformer.layer[0].attention
    assert (attention.n_heads, attention.q_lin.out_features, attention.out_lin.in_features, attention.out_lin.out_features) == (2, 32, 32, 64)
    assert pruned(*inputs(batch=3, seq=9)).shape == (3, 9, 64)
    path = export_onnx(pruned, inputs(), tmp_path / "distil.onnx", check_batches=[inputs(batch=4)])
    assert [i.name for i in onnx_session(path).get_inputs()] == ["input_ids", "attention_mask"]
    with pytest.raises(PlanError, match=r"prune/distilbert.transformer.layer.0.attention.q_lin: .* projects attention heads"):
        prune_channels(model, {"distilbert.transformer.layer.0.attention.q_lin": 0.5}, inputs())


def test_the_strongest_heads_are_kept(encoder):
    attention = encoder.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        for projection in (attention.query, attention.key, attention.value):
            projection.weight[48:64] *= 20.0  # head 3 becomes by far the largest
    pruned = prune_heads(encoder, {"bert.encoder.layer.0.attention.self": 0.75}, inputs())
    kept = pruned.bert.encoder.layer[0].attention.self
    assert kept.num_attention_heads == 1
    torch.testing.assert_close(kept.query.weight, attention.query.weight[48:64])


def test_ratios_become_whole_heads_and_at_least_one_stays():
    assert [heads_kept(4, r) for r in (0.0, 0.2, 0.25, 0.5, 0.75, 0.95)] == [4, 3, 3, 2, 1, 1]
    assert heads_kept(12, 1 / 3) == 8


def test_a_plan_naming_no_attention_block_or_a_bad_ratio_is_refused(encoder):
    with pytest.raises(PlanError, match="'bert.encoder.layer.0.intermediate.dense' is not a self-attention module"):
        prune_heads(encoder, {"bert.encoder.layer.0.intermediate.dense": 0.5}, inputs())
    with pytest.raises(PlanError, match=r"ratio 1.0 .* outside \[0, 1\)"):
        prune_heads(encoder, {"bert.encoder.layer.0.attention.self": 1.0}, inputs())


class EncoderTask:
    """The BERT encoder as a Task: token ids and a mask in, a logit per sequence out (a tensor)."""

    name = "bert-tiny"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = Encoder().eval()

    def build_model(self) -> nn.Module:
        return self.model

    def example_inputs(self):
        return inputs()

    def train_batches(self):
        for batch in range(3):
            yield inputs(batch=4 + batch), None

    def evaluate(self, predict) -> float:
        return 1.0


SPACE = """
schema_version: 1
heads:
  - layers: ["*.attention.self"]
    ratio: {type: float, low: 0.0, high: 0.75, step: 0.25}
prune:
  - layers: ["*"]
    ratio: {type: float, low: 0.0, high: 0.5, step: 0.25}
"""


def test_a_space_gives_one_heads_parameter_per_attention_module_and_no_channel_ratio_to_its_projections(tmp_path):
    from autocomp.search_space import load_space

    path = tmp_path / "bert.yaml"
    path.write_text(SPACE)
    task = EncoderTask()
    names = set(load_space(str(path)).distributions(task.model, supported_bits=(32,), example_inputs=task.example_inputs()))
    assert {n for n in names if n.startswith("heads/")} == {
        "heads/bert.encoder.layer.0.attention.self", "heads/bert.encoder.layer.1.attention.self"
    }
    pruned = {n for n in names if n.startswith("prune/")}
    assert "prune/bert.encoder.layer.0.intermediate.dense" in pruned  # feed-forward widths are searched
    assert not [n for n in pruned if n.endswith((".query", ".key", ".value"))]


def test_channel_pruning_refuses_head_projections_and_a_narrow_student_keeps_attention_whole(encoder):
    from autocomp.compress.prune import prune_channels, prune_to_width

    with pytest.raises(PlanError, match=r"prune/bert.encoder.layer.0.attention.self.query: .* prune whole heads with heads/bert.encoder.layer.0.attention.self"):
        prune_channels(encoder, {"bert.encoder.layer.0.attention.self.query": 0.5}, inputs())
    student = prune_to_width(encoder, 0.5, inputs())
    assert student.bert.encoder.layer[0].intermediate.dense.out_features == 64
    assert student.bert.encoder.layer[0].attention.self.query.out_features == 64
    assert student(*inputs(batch=3, seq=7)).shape[:2] == (3, 7)


def test_a_plan_with_heads_and_feed_forward_pruning_builds_runs_and_exports(tmp_path):
    from autocomp.compress.distill import DistillConfig
    from autocomp.pipeline import compress_model
    from autocomp.plan import CompressionPlan

    task = EncoderTask()
    plan = CompressionPlan.from_params({
        "heads/bert.encoder.layer.0.attention.self": 0.5, "heads/bert.encoder.layer.1.attention.self": 0.25,
        "prune/bert.encoder.layer.1.intermediate.dense": 0.5, "distill/width": 1.0,
    })
    model = compress_model(task, task.model, plan, finetune=DistillConfig(steps=2))
    assert [layer.attention.self.num_attention_heads for layer in model.bert.encoder.layer] == [2, 3]
    assert model.bert.encoder.layer[1].intermediate.dense.out_features == 64
    export_onnx(model, task.example_inputs(), tmp_path / "plan.onnx", check_batches=[inputs(batch=5)])
    with pytest.raises(PlanError, match="heads/bert.encoder.layer.0.intermediate.dense: .* is not a self-attention module"):
        CompressionPlan.of(heads={"bert.encoder.layer.0.intermediate.dense": 0.5}).validate(task.model)


@pytest.mark.parametrize(
    "device, precisions",
    [("jetson-nano", [32, 32, 16, 16]), ("raspberry-pi-4", [32, 32, "dyn8", "dyn8"])],
)
def test_a_transformer_search_starts_from_safe_uniform_plans(device, precisions):
    """FFN cuts in fp32, then the device's fast precision that keeps an encoder (fp16 on a Nano, dynamic
    int8 on a Pi), unpruned and with the 50% cut; never static int8, never a removed head."""
    from autocomp.profiles import load_profile
    from autocomp.search_space import load_space
    from autocomp.anchors import anchor_plans

    task = EncoderTask()
    profile = load_profile(device)
    distributions = load_space("transformer").distributions(
        task.model, supported_bits=profile.supported_bits, example_inputs=task.example_inputs()
    )
    anchors = anchor_plans(distributions, supported_bits=profile.supported_bits, fast_bits=profile.fast_bits)
    assert len(anchors) == 4
    for anchor, ratio, bits in zip(anchors, (0.25, 0.5, 0.0, 0.5), precisions):
        assert set(anchor) == set(distributions)
        assert {v for k, v in anchor.items() if k.startswith("prune/")} == {ratio}  # feed-forward widths
        assert {v for k, v in anchor.items() if k.startswith("heads/")} == {0.0}  # every head kept
        assert {v for k, v in anchor.items() if k.startswith("bits/")} == {bits}


def test_the_built_in_vit_prunes_by_heads_and_exports(tmp_path):
    from autocomp.search_space import load_space
    from autocomp.tasks import load_task
    from autocomp.tasks.vit import ViTDigits

    task = load_task("digits-vit")
    assert task.name == "digits-vit"
    torch.manual_seed(0)
    model = ViTDigits().eval()  # untrained: the structure is what is tested (training takes about 80 s)
    blocks = attention_blocks(model)
    assert list(blocks) == [f"blocks.{i}.attention" for i in range(4)]
    example = task.example_inputs()
    names = load_space("transformer").distributions(model, supported_bits=(32, 16, 8), example_inputs=example)
    assert {n for n in names if n.startswith("heads/")} == {f"heads/blocks.{i}.attention" for i in range(4)}
    assert {n for n in names if n.startswith("prune/")} == {f"prune/blocks.{i}.fc1" for i in range(4)}
    pruned = prune_heads(model, {"blocks.0.attention": 0.5, "blocks.3.attention": 0.75}, example)
    assert [b.attention.num_attention_heads for b in pruned.blocks] == [2, 4, 4, 1]
    assert [b.proj.in_features for b in pruned.blocks] == [32, 64, 64, 16]
    batch = torch.rand(5, 1, 32, 32)
    export_onnx(pruned, example, tmp_path / "vit.onnx", check_batches=[(batch,)])
