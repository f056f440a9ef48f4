"""Depth pruning: whole blocks of a transformer's stack go, the rest keep their paths, and the model still runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocomp.compress.depth import block_influence, block_stacks, blocks_kept, removed_blocks, remove_blocks
from autocomp.errors import PlanError
from autocomp.export import export_onnx
from autocomp.plan import CompressionPlan
from autocomp.runtime import onnx_session
from autocomp.tasks.vit import ViTDigits
from test_heads import Encoder, inputs as bert_inputs  # the same small BERT encoder, from its config class


def vit_inputs(batch: int = 4) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 1, 32, 32, generator=torch.Generator().manual_seed(batch)),)


def silence(block: nn.Module) -> None:
    """Make a pre-norm ViT block the identity: both residual branches end in a zeroed projection."""
    for linear in (block.proj, block.fc2):
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)


def test_stacks_are_found_in_a_vit_and_a_bert_encoder():
    assert block_stacks(ViTDigits()) == {"blocks": 4}
    assert block_stacks(Encoder(layers=3)) == {"bert.encoder.layer": 3}
    assert block_stacks(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))) == {}  # no attention: not a stack
    assert [blocks_kept(4, r) for r in (0.0, 0.25, 0.5, 0.75, 0.99)] == [4, 3, 2, 1, 1]


def test_the_block_that_changes_its_input_least_goes_first():
    torch.manual_seed(0)
    model = ViTDigits().eval()
    silence(model.blocks[2])
    influence = block_influence(model, "blocks", [vit_inputs()])
    assert influence["blocks.2"] == pytest.approx(0.0, abs=1e-6)
    assert min(v for k, v in influence.items() if k != "blocks.2") > 1e-3
    assert removed_blocks(model, {"blocks": 0.25}, [vit_inputs()]) == ["blocks.2"]
    # removing an identity block changes nothing, and the input model is left as it was
    before = model(*vit_inputs())
    pruned = remove_blocks(model, ["blocks.2"])
    assert len(model.blocks) == 4 and len(pruned.blocks) == 3
    torch.testing.assert_close(pruned(*vit_inputs()), before)


def test_kept_blocks_keep_their_paths_so_a_plan_still_names_them(tmp_path):
    torch.manual_seed(0)
    model = ViTDigits().eval()
    pruned = remove_blocks(model, ["blocks.0", "blocks.2"])
    names = {name for name, _ in pruned.named_modules()}
    assert {"blocks.1.fc1", "blocks.3.attention.query"} <= names and not any(n.startswith(("blocks.0", "blocks.2")) for n in names)
    assert isinstance(pruned.blocks, nn.Sequential) and pruned.blocks[1] is pruned.blocks._modules["3"]
    path = export_onnx(pruned, vit_inputs(1), tmp_path / "vit.onnx", check_batches=[vit_inputs(5)])
    out = onnx_session(path).run(None, {"x": vit_inputs(3)[0].numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), pruned(*vit_inputs(3)), rtol=1e-3, atol=1e-4)


def test_a_bert_layer_goes_and_the_encoder_runs_with_its_mask_and_exports(tmp_path):
    torch.manual_seed(0)
    encoder = Encoder(layers=3).eval()
    chosen = removed_blocks(encoder, {"bert.encoder.layer": 0.34}, [bert_inputs()])
    assert len(chosen) == 1 and chosen[0].startswith("bert.encoder.layer.")
    pruned = remove_blocks(encoder, chosen)
    layers = pruned.bert.encoder.layer
    assert len(layers) == 2 and len(encoder.bert.encoder.layer) == 3
    assert [name for name, _ in layers.named_children()] == [n for n in ("0", "1", "2") if f"bert.encoder.layer.{n}" not in chosen]
    assert layers[-1] is list(layers.children())[-1]  # positional indexing still works on the remaining blocks
    path = export_onnx(pruned, bert_inputs(), tmp_path / "bert.onnx", check_batches=[bert_inputs(3, 16)])
    ids, mask = bert_inputs(3, 16)
    out = onnx_session(path).run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), pruned(ids, mask), rtol=1e-3, atol=1e-4)
    # what `autocomp export` writes beside the ONNX file: a torch.export program of the same model
    program = torch.export.export(pruned, bert_inputs(), dynamic_shapes=({0: torch.export.Dim.AUTO}, {0: torch.export.Dim.AUTO}))
    torch.testing.assert_close(program.module()(ids, mask), pruned(ids, mask))


def test_a_plan_naming_something_that_is_not_a_stack_is_refused():
    model = ViTDigits()
    with pytest.raises(PlanError, match=r"depth/blocks\.0: 'blocks\.0' is not a stack of attention blocks of the model; stacks: blocks"):
        CompressionPlan.of(depth={"blocks.0": 0.5}).validate(model)
    with pytest.raises(PlanError, match=r"outside \[0, 1\)"):
        CompressionPlan.of(depth={"blocks": 1.0})
    plan = CompressionPlan.of(depth={"blocks": 0.5}, heads={"blocks.3.attention": 0.25})
    assert CompressionPlan.from_params(plan.to_params()) == plan and not plan.is_identity


class TinyViTTask:
    """A 3-block ViT on random images, scored by agreement with its own original predictions."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = ViTDigits(dim=32, heads=2, depth=3).eval()
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randn(160, 1, 32, 32, generator=generator)
        with torch.no_grad():
            self.labels = self.model(self.images).argmax(1)

    def build_model(self) -> nn.Module:
        return self.model

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.images[:1].clone(),)

    def train_batches(self):
        for start in range(0, 96, 32):
            yield (self.images[start : start + 32],), self.labels[start : start + 32]

    def evaluate(self, predict) -> float:
        held_out = self.images[96:].numpy()
        return float((predict(held_out).argmax(1) == self.labels[96:].numpy()).mean())


def test_a_plan_with_depth_heads_widths_and_precisions_builds_a_file_that_runs(tmp_path):
    import onnx

    from autocomp.compress.distill import DistillConfig
    from autocomp.knobs.depth import DEPTH_SAMPLES
    from autocomp.pipeline import build_artifact, compress_model, score_artifact
    from autocomp.profiles import load_profile
    from autocomp.runtime import training_samples

    task = TinyViTTask()
    teacher = task.build_model()
    expected = removed_blocks(teacher, {"blocks": 0.34}, training_samples(task, max_samples=DEPTH_SAMPLES))
    assert len(expected) == 1
    linears = [name for name, m in teacher.named_modules() if isinstance(m, nn.Linear) and name.startswith("blocks.")]
    plan = CompressionPlan.of(
        depth={"blocks": 0.34},
        heads={f"blocks.{i}.attention": 0.5 for i in range(3)},  # one of them is in the block that goes: moot
        prune={f"blocks.{i}.fc1": 0.5 for i in range(3)},
        bits={name: "dyn8" for name in linears},
    )
    model = compress_model(task, teacher, plan, finetune=DistillConfig(steps=4), round_to=8)
    kept = [f"blocks.{name}" for name, _ in model.blocks.named_children()]
    assert expected[0] not in kept and len(kept) == 2 and len(teacher.blocks) == 3
    for block in kept:
        module = dict(model.named_modules())[block]
        assert module.attention.num_attention_heads == 1 and module.fc1.out_features == 64
    # the structure is rebuilt the same way without fine-tuning (how an exported trial is rebuilt)
    rebuilt = compress_model(task, teacher, plan, finetune=DistillConfig(steps=0), round_to=8)
    assert [name for name, _ in rebuilt.blocks.named_children()] == [name for name, _ in model.blocks.named_children()]
    artifact = build_artifact(task, model, plan, tmp_path, recipe=load_profile("local").int8_recipe, calibration_samples=32)
    graph = onnx.load(str(artifact.onnx_path))
    onnx.checker.check_model(graph)
    # every Linear of the two kept blocks runs as dynamic int8 (q, k, v, proj, fc1, fc2); the removed block's are gone
    assert sum(node.op_type == "MatMulInteger" for node in graph.graph.node) == 6 * 2
    accuracy, torch_accuracy = score_artifact(task, model, artifact, what="the depth-pruned ViT")
    assert 0.0 <= accuracy <= 1.0 and abs(accuracy - torch_accuracy) <= 0.1
