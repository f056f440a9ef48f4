"""A Hugging Face BERT encoder searched end to end with the shipped transformer space (heads and feed-forward widths)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
import yaml
from optuna.trial import TrialState

import transformers  # noqa: F401  (a dev dependency; the encoder below is built from its config classes)
from autocomp.study import default_storage, load_existing_study
from test_search import cli

TASK = f"{Path(__file__).parent / 'bert_task.py'}:make_task"


def test_space_auto_takes_the_transformer_space_for_a_model_with_attention():
    from autocomp.setup import auto_space
    from bert_task import Encoder
    from tiny_models import TinyResNet

    assert auto_space(Encoder(hidden=64, heads=4, layers=1, ffn=128))[0] == "transformer"
    assert auto_space(TinyResNet())[0] == "default"


def test_a_bert_encoder_is_searched_with_whole_heads_and_exported(tmp_path):
    # the shipped transformer space, sampled at random after its anchors (no proposals: their pass is
    # tested in test_allocate.py) so that every precision is drawn, with a short final fine-tune and no
    # screen (every sampled plan runs in full; the screen is tested in test_fidelity.py)
    # (and 120 steps a trial: the test checks that plans run, not how far they recover)
    spec = yaml.safe_load((Path(__file__).parent.parent / "search_spaces" / "transformer.yaml").read_text())
    spec["proposals"] = 0
    spec["finetune"].update(steps=120, final_steps=40, screen={"after_steps": 0})
    space = tmp_path / "transformer.yaml"
    space.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    args = ["search", "--device", "local", "--task", TASK, "--space", str(space), "--trials", "6",
            "--sampler", "random", "--seed", "2", "--out", str(out), "--study-name", "bert"]  # fmt: skip
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    study = load_existing_study(default_storage(out), "bert")
    trials = study.trials
    # no sampled plan breaks the model: every trial completes (no reshape error from a pruned q/k/v)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, [t.user_attrs.get("fail_reason") for t in trials]
    assert not [n for t in trials for n in t.params if n.startswith("prune/") and n.endswith((".query", ".key", ".value"))]
    headed = [t for t in trials if any(v > 0 for n, v in t.params.items() if n.startswith("heads/"))]
    assert headed
    for trial in headed:
        for name, ratio in trial.params.items():
            if name.startswith("heads/"):
                block = name[len("heads/"):]
                rows = {r["layer"]: r for r in trial.user_attrs["layers"]}
                if rows[f"{block}.query"]["removed_block"]:  # depth pruning took the whole block: its heads are moot
                    assert rows[f"{block}.query"]["channels"] is None and block.startswith(rows[f"{block}.query"]["removed_block"] + ".")
                    continue
                kept_heads = rows[f"{block}.query"]["channels"] // 32  # 8 heads of 32
                assert kept_heads == max(1, round(8 * (1 - ratio))), (name, ratio, kept_heads)
                assert (rows[f"{block}.query"]["heads"], rows[f"{block}.query"]["baseline_heads"]) == (kept_heads, 8)
    # every precision the space offers went through quantization, evaluation and pricing
    used = {v for t in trials for n, v in t.params.items() if n.startswith("bits/")}
    assert used == {32, 16, 8, "dyn8"}, used
    dynamic = [t for t in trials if all(v == "dyn8" for n, v in t.params.items() if n.startswith("bits/"))]
    assert dynamic, "the dyn8 anchor is queued for a transformer on an onnxruntime device"
    # the report speaks of heads: a column in the chosen plan's layer table and a line on why
    page = (out / "report.html").read_text()
    assert study.user_attrs["chosen_trial"] is not None
    assert study.user_attrs["final"]["trial"] == study.user_attrs["chosen_trial"] and study.user_attrs["final"]["steps"] == 40
    assert '<th class="num" scope="col">heads</th>' in page
    assert "attention pruned as whole heads:" in page
    assert "int8-dyn" in page
    # dynamic int8 keeps the unpruned encoder's embedding (cosine to the original on unseen sentences)
    assert dynamic[0].values[0] >= 0.99, dynamic[0].values
    for trial, where in ((headed[0], "headed"), (dynamic[0], "dynamic")):
        code, _, stderr = cli("export", "--study", str(out), "--out", str(tmp_path / where), "--trial", str(trial.number))
        assert code == 0, stderr
        metrics = json.loads((tmp_path / where / "metrics.json").read_text())
        assert metrics["model"]["pt2_accuracy"] == metrics["model"]["torch_accuracy"]
        program = torch.export.load(tmp_path / where / "model.pt2").module()
        # any batch size; the sequence length is the example's (only the batch axis is dynamic in exports so far)
        ids, mask = torch.randint(1, 100, (3, 16)), torch.ones(3, 16, dtype=torch.long)
        assert program(ids, mask).shape == (3, 256)
    exported = onnx.load(str(tmp_path / "dynamic" / "model.onnx"))
    onnx.checker.check_model(exported)
    assert any(node.op_type == "MatMulInteger" for node in exported.graph.node)


def test_distill_features_read_a_hugging_face_modules_hidden_state(caplog):
    """``bert.encoder`` returns a ModelOutput, not a tensor: its first tensor (the last hidden state) is the feature."""
    from autocomp.compress.distill import DistillConfig, distill
    from bert_task import Encoder, SentenceEncoderTask

    torch.manual_seed(0)
    teacher = Encoder(hidden=64, heads=4, layers=1, ffn=128)
    student = Encoder(hidden=64, heads=4, layers=1, ffn=128)  # another init: its hidden states differ

    def first_loss(features):
        task = SentenceEncoderTask()
        task.distill_features = features
        losses = []
        distill(student, teacher, task, config=DistillConfig(steps=1), on_step=lambda step, loss, model: losses.append(loss))
        return losses[0]

    with caplog.at_level("WARNING"):
        plain, with_hidden = first_loss({}), first_loss({"bert.encoder": 1.0})
    assert "left out" not in caplog.text
    assert with_hidden > plain + 1e-4  # the hidden-state MSE was added to the same batch's loss
