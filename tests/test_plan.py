import pytest

from autocomp.errors import PlanError
from autocomp.plan import CompressionPlan, compressible_layers
from tiny_models import TinyResNet


def test_params_round_trip_keeps_every_knob():
    plan = CompressionPlan.of(prune={"block1_conv1": 0.5}, sparsity={"fc": 0.3}, bits={"stem.0": 8, "fc": 16}, distill={"width": 0.75})
    params = plan.to_params()
    assert params == {
        "prune/block1_conv1": 0.5,
        "sparsity/fc": 0.3,
        "bits/stem.0": 8,
        "bits/fc": 16,
        "distill/width": 0.75,
    }
    assert CompressionPlan.from_params(params) == plan
    assert plan["bits"] == {"fc": 16, "stem.0": 8} and plan["heads"] == {}


def test_identity_plan():
    assert CompressionPlan().is_identity
    assert CompressionPlan.of(bits={"fc": 32}, prune={"fc": 0.0}).is_identity
    assert not CompressionPlan.of(bits={"fc": 8}).is_identity


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prune": {"a": 1.0}}, "outside [0, 1)"),
        ({"prune": {"a": -0.1}}, "outside [0, 1)"),
        ({"sparsity": {"a": 1.5}}, "outside [0, 1)"),
        ({"bits": {"a": 4}}, "not supported; use one of 32, 16, 8"),
        ({"distill": {"width": 0.0}}, "outside (0, 1]"),
        ({"distill": {"width": 1.5}}, "outside (0, 1]"),
        ({"quant": {"fc": 8}}, "'quant' is not a compression technique autocomp knows; known: distill, prune, heads"),
    ],
)
def test_bad_values_fail_with_one_clear_line(kwargs, message):
    with pytest.raises(PlanError) as info:
        CompressionPlan.of(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_parameter_name_is_an_error():
    with pytest.raises(PlanError, match="unknown plan parameter 'quant/fc'"):
        CompressionPlan.from_params({"quant/fc": 8})


def test_validate_names_missing_and_non_compressible_layers():
    model = TinyResNet()
    CompressionPlan.of(prune={"block1_conv1": 0.5}, bits={"fc": 8}).validate(model)
    with pytest.raises(PlanError, match="no layer 'block9_conv1'.*compressible layers: stem.0"):
        CompressionPlan.of(prune={"block9_conv1": 0.5}).validate(model)
    with pytest.raises(PlanError, match="is a BatchNorm2d"):
        CompressionPlan.of(bits={"block1_bn1": 8}).validate(model)


def test_compressible_layers_in_model_order():
    assert compressible_layers(TinyResNet())[0] == "stem.0"
    assert compressible_layers(TinyResNet())[-1] == "fc"
