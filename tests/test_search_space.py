import pytest

from autocomp.errors import ConfigError
from autocomp.search_space import list_spaces, load_space, parse_space
from tiny_models import TinyResNet

ALL_BITS = (32, 16, 8)


def test_shipped_spaces_load_and_resolve():
    assert {"default", "prune", "quantize", "distill", "sparsity"} <= set(list_spaces())
    dists = load_space("default").distributions(TinyResNet(), supported_bits=ALL_BITS)
    assert "distill/width" in dists
    # <first> and <last> (input conv and classifier) are never touched by default
    assert not any(name.endswith(("/stem.0", "/fc")) for name in dists)
    assert "prune/block1_conv1" in dists and "bits/block2_short" in dists


def test_first_matching_rule_wins_and_globs_select_layers():
    space = parse_space(
        {
            "schema_version": 1,
            "prune": [
                {"layers": ["block1_*"], "ratio": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25}},
                {"layers": ["*"], "ratio": {"type": "categorical", "choices": [0.0, 0.75]}},
            ],
        },
        name="t",
    )
    dists = space.distributions(TinyResNet(), supported_bits=ALL_BITS)
    assert dists["prune/block1_conv1"].high == 0.5
    assert dists["prune/block2_conv1"].choices == (0.0, 0.75)


def test_a_device_searches_only_the_precisions_it_runs():
    """One space serves every device: int8 is left out where the device has none, dyn8 off onnxruntime."""
    dists = load_space("default").distributions(TinyResNet(), supported_bits=(32, 16))
    bits = [d.choices for name, d in dists.items() if name.startswith("bits/")]
    assert bits and all(choices == (32, 16) for choices in bits)
    space = parse_space({"schema_version": 1, "bits": [{"layers": ["*"], "choices": [32, 8, "dyn8"]}]}, name="t")
    assert {d.choices for d in space.distributions(TinyResNet(), supported_bits=(32, 16, 8)).values()} == {(32, 8)}


def test_a_rule_the_device_cannot_run_at_all_is_rejected():
    space = parse_space({"schema_version": 1, "bits": [{"layers": ["*"], "choices": [8, "dyn8"]}]}, name="t")
    with pytest.raises(ConfigError, match=r"asks for bits 8, dyn8 on \['\*'\], which the device cannot run \(it runs 32, 16\)"):
        space.distributions(TinyResNet(), supported_bits=(32, 16))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"schema_version": 1, "prunes": []}, "unknown key 'prunes'; allowed keys:"),
        ({"prune": []}, "missing required key 'schema_version'"),
        ({"schema_version": 2}, "schema_version 2 is not supported"),
        ({"schema_version": 1, "pipeline": ["quantize", "prune"]}, "pipeline: 'quantize' is not a compression technique autocomp knows; known: distill, prune"),
        ({"schema_version": 1, "pipeline": ["bits", "prune"]}, "'prune' acts on the PyTorch model but comes after 'bits', which acts on the exported ONNX graph"),
        ({"schema_version": 1, "pipeline": ["prune", "prune"]}, "'prune' appears twice"),
        ({"schema_version": 1, "pipeline": ["bits", "finetune"]}, "finetune after 'bits' acts on the exported graph"),
        ({"schema_version": 1, "pipeline": ["distill"], "prune": [{"layers": ["*"], "ratio": {"type": "float", "low": 0, "high": 0.5}}]},
         "'prune' is searched but not in the pipeline ['distill']"),
        ({"schema_version": 1, "bits": [{"layers": ["*"], "choices": [4]}]}, "must be a non-empty list of precisions from 32, 16, 8, dyn8"),
        ({"schema_version": 1, "prune": [{"layers": ["*"], "ratio": {"type": "float", "low": 0, "high": 1.0}}]}, "ratios must lie in [0, 1)"),
        ({"schema_version": 1, "prune": [{"layers": ["*"], "ratio": {"type": "beta"}}]}, "unknown distribution type 'beta'"),
        ({"schema_version": 1, "finetune": {"steps": -3}}, "finetune.steps: -3 must be an integer"),
        ({"schema_version": 1, "distill": {"width": {"type": "float", "low": 0.5, "high": 2.0}}}, "widths must lie in (0, 1]"),
    ],
)
def test_bad_spaces_fail_with_one_clear_line(data, message):
    with pytest.raises(ConfigError) as info:
        parse_space(data, name="bad")
    assert message in str(info.value)


def test_patterns_matching_nothing_are_an_error():
    space = parse_space({"schema_version": 1, "bits": [{"layers": ["encoder.*"], "choices": [8]}]}, name="t")
    with pytest.raises(ConfigError, match=r"patterns \['encoder.\*'\] match no compressible layer"):
        space.distributions(TinyResNet(), supported_bits=ALL_BITS)


def test_unknown_space_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown search space 'nope'; known spaces: default"):
        load_space("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nprune: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_space(str(bad))


def test_coupled_layers_get_one_pruning_decision_and_excluded_streams_none():
    import torch

    model = TinyResNet()
    dists = load_space("prune").distributions(model, supported_bits=ALL_BITS, example_inputs=(torch.zeros(1, 1, 16, 16),))
    prune = sorted(name for name in dists if name.startswith("prune/"))
    # block1_conv2 shares the stem's channels (the stem is excluded); block2_conv2 and
    # block2_short share the second stream: one decision, named after its first layer
    assert prune == ["prune/block1_conv1", "prune/block2_conv1", "prune/block2_conv2"]
