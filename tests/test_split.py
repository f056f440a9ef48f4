"""Edge/cloud split: the cuts come from the exported graph (one tensor crossing, named by the module complete
there), the two files a cut makes pass the checker and compose to the whole model's outputs in onnxruntime,
and link profiles price the transfer from sourced numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from autocomp.errors import ConfigError, PlanError
from autocomp.export import export_onnx
from autocomp.links import load_link, parse_link
from autocomp.runtime import onnx_predictor
from autocomp.split import candidate_cuts, composed, find_cut, split_model
from autocomp.tasks.models import MobileNetDigits, ResNetDigits

INPUTS = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=["resnet", "mobilenet"])
def built(request, tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = (ResNetDigits() if request.param == "resnet" else MobileNetDigits()).eval()
    return model, export_onnx(model, (INPUTS[:1],), tmp_path_factory.mktemp(request.param) / "model.onnx")


@pytest.fixture(scope="module")
def exported(built) -> Path:
    return built[1]


def test_cuts_are_the_module_boundaries_one_tensor_crosses(built):
    model, exported = built
    cuts = candidate_cuts(exported)
    names = [c.name for c in cuts]
    assert len(names) == len(set(names)) and "stem" in names and "pool" in names
    # each is a PyTorch module of the model (or an op outside any, the Flatten before the head)
    modules = dict(model.named_modules())
    assert [n for n in names if n not in modules] == ["Flatten"], names
    assert any(n.startswith(("layer", "blocks.")) for n in names)
    if isinstance(model, ResNetDigits):  # a block's input waits for the sum before its last ReLU: no cut inside it
        assert not any(n.startswith("layer1.0.") for n in names)
    # activations shrink from the stem to the pool: what the link will carry per sample
    sizes = {c.name: c.bytes_sent("fp32") for c in cuts}
    assert sizes["stem"] > sizes["pool"] > 0 and sizes["stem"] == 4 * int(np.prod(find_cut(exported, "stem").shape[1:]))


@pytest.mark.parametrize("wire, close", [("fp32", 1e-5), ("fp16", 2e-2), ("int8", None)])
def test_the_two_halves_compose_to_the_whole_model(exported, tmp_path, wire, close):
    samples = [(INPUTS[i : i + 8].numpy(),) for i in range(0, 64, 8)]
    whole = onnx_predictor(exported)(INPUTS.numpy())
    for cut in [c.name for c in candidate_cuts(exported)][1::4]:  # a spread of cuts, stem to head
        files = split_model(exported, cut, tmp_path / cut, wire=wire, samples=samples)
        for path in (files.edge, files.server):
            onnx.checker.check_model(str(path))
        ours = composed(files)(INPUTS.numpy())
        assert ours.shape == whole.shape
        if close is not None:
            np.testing.assert_allclose(ours, whole, rtol=close, atol=close)
        else:  # uint8 on the wire: each activation within half a step of its value, the logits close
            sent = onnx_predictor(files.edge)(INPUTS.numpy())
            assert sent.dtype == np.uint8
            real = files.mark.scale * (sent.astype(np.float32) - files.mark.zero_point)
            exact = onnx_predictor(split_model(exported, cut, tmp_path / f"{cut}-fp32").edge)(INPUTS.numpy())
            assert np.abs(real - exact).max() <= files.mark.scale / 2 + 1e-6
            assert np.corrcoef(ours.ravel(), whole.ravel())[0, 1] > 0.99
        manifest = json.loads(files.manifest.read_text())
        assert manifest["after"] == cut and manifest["wire"] == wire
        assert manifest["bytes_per_sample"] == find_cut(exported, cut).bytes_sent(wire)
        # the marked whole file computes what the pair does: it is what a search scores
        np.testing.assert_allclose(onnx_predictor(tmp_path / cut / "marked.onnx")(INPUTS.numpy()), ours, rtol=1e-5, atol=1e-5)


def test_a_quantized_file_has_the_cuts_of_its_fp32_file(tmp_path):
    """The bits knob's QDQ file keeps the module names: a study's ``split/after`` holds for every precision."""
    from autocomp.compress.quantize import quantize_onnx
    from autocomp.targets import compressible_layers

    torch.manual_seed(0)
    model = MobileNetDigits().eval()
    fp32 = export_onnx(model, (INPUTS[:1],), tmp_path / "fp32.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", {layer: 8 for layer in compressible_layers(model)},
                         calibration=[(INPUTS[i : i + 1].numpy(),) for i in range(16)])
    assert {c.name for c in candidate_cuts(fp32)} <= {c.name for c in candidate_cuts(int8)}


def test_a_name_that_is_no_cut_lists_the_cuts(exported):
    with pytest.raises(PlanError, match=r"split/after: 'layer9' is not a cut of this model .*; cuts: stem\.0, stem"):
        find_cut(exported, "layer9")


def test_a_two_input_transformer_has_no_cut_inside_its_encoder(tmp_path):
    """Every layer reads the attention mask: two tensors cross anywhere inside, so only the ends remain."""
    from bert_task import Encoder

    torch.manual_seed(0)
    ids, mask = torch.randint(1, 100, (1, 16)), torch.ones(1, 16, dtype=torch.long)
    path = export_onnx(Encoder(hidden=32, heads=4, layers=2, ffn=64).eval(), (ids, mask), tmp_path / "bert.onnx")
    assert [c for c in candidate_cuts(path) if "layer" in c.name] == []


def test_links_price_the_transfer_from_their_sourced_numbers():
    wifi = load_link("wifi-20mbps")
    assert wifi.bandwidth_mbps == 20 and wifi.source.strip()
    # 25,000 bytes = 200,000 bits: 10 ms at 20 Mbit/s, plus the round trip
    assert wifi.transfer_ms(25_000) == pytest.approx(wifi.rtt_ms + 10.0)
    slow, fast = load_link("lte-5mbps"), load_link("ethernet-100mbps")
    assert slow.transfer_ms(25_000) > wifi.transfer_ms(25_000) > fast.transfer_ms(25_000)


@pytest.mark.parametrize("change, message", [
    ({"bandwidth_mbps": -1}, "bandwidth_mbps must be a positive number"),
    ({"source": " "}, "source must be a non-empty string"),
    ({"latency": 3}, "unknown key 'latency'"),
])
def test_a_bad_link_profile_is_one_line_naming_the_key(change, message):
    data = {"schema_version": 1, "name": "x", "description": "d", "bandwidth_mbps": 10, "rtt_ms": 5, "error_pct": 20, "source": "s"}
    with pytest.raises(ConfigError, match=message):
        parse_link({**data, **change})
    with pytest.raises(ConfigError, match="unknown link 'wifi'; known links: ethernet-100mbps, lte-5mbps, wifi-20mbps"):
        load_link("wifi")


def test_the_splits_command_lists_and_prices_the_cuts_per_link(tmp_path):
    """``autocomp splits``: the cuts of a task's model, then priced for a slow and a fast link: on the slow
    one the whole model stays on the device, on a fast one the input goes to the server (the test model's
    input is smaller than every activation but the pooled one, and it runs in half a millisecond on the Nano)."""
    from test_search import cli

    task = f"{Path(__file__).parent / 'search_tasks.py'}:shapes"
    code, out, err = cli("splits", "--task", task)
    assert code == 0, err
    assert "block1_conv1" not in out and "stem" in out
    fast = tmp_path / "gigabit.yaml"  # a link given as a file, as a user's own would be
    fast.write_text("schema_version: 1\nname: gigabit\ndescription: one rack\nbandwidth_mbps: 1000\nrtt_ms: 0.01\n"
                    "error_pct: 20\nsource: 'assumption: a test link'\n")
    # both links priced from one timing of the files: the last two columns, * on each one's fastest way
    code, out, err = cli("splits", "--task", task, "--device", "jetson-nano", "--server", "local", "--link", "lte-5mbps", "--link", str(fast))
    assert code == 0, err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    fastest = [next(row[0] for row in rows if row[column].startswith("*")) for column in (-2, -1)]
    assert fastest == ["device", "server"]
    assert all(row[1].replace(",", "").isdigit() for row in rows)


@pytest.mark.parametrize("args, message", [
    (("--device", "jetson-nano"), "pricing the cuts needs --device, --server and --link together; --device given"),
    (("--wire", "int4"), "--wire 'int4' is not one of fp32, fp16, int8"),
    (("--model", "/no/such/model.onnx"), "--model /no/such/model.onnx does not exist"),
    (("--device", "jetson-nano", "--server", "local", "--link", "dsl"), "unknown link 'dsl'"),
])
def test_splits_refuses_bad_input_in_one_line(args, message):
    from test_search import cli

    code, out, err = cli("splits", *args)
    assert code == 2 and message in err and "Traceback" not in err + out


def test_splits_cuts_a_given_onnx_file(exported):
    """``--model``: any ONNX file, such as an exported trial's ``model.onnx``, without its task."""
    from test_search import cli

    code, out, err = cli("splits", "--model", str(exported))
    assert code == 0, err
    assert all(name in out for name in ("stem", "pool")) and f"cuts of {exported.name}" in out
