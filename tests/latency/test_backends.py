"""The contract every latency backend keeps (``latency.base.LatencyBackend``), run over ``BACKENDS``:
a one-input CNN and a two-input encoder get finite figures with their source; the file is not changed;
a file that is not a model is one line naming it; the cached backend gives a repeated file its figure.
The ssh backend runs against the real OpenSSH server on 127.0.0.1 (``sshd`` fixture)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autocomp.errors import AutocompError
from autocomp.latency import BACKENDS, get_backend
from autocomp.profiles import load_profile
from onnx_variants import encoder, resnet_precisions


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    return {"cnn": resnet_precisions(folder, width=1.0)["fp32"], "encoder": encoder(folder)}


@pytest.fixture(params=BACKENDS)
def backend_and_profile(request):
    """(backend, profile) for each backend; ``local`` times with the local profile's own settings, cut short."""
    profile = load_profile("local")
    profile = replace(profile, runtime=replace(profile.runtime, warmup=2, runs=10, threads=1))
    if request.param == "ssh":
        sshd = request.getfixturevalue("sshd")
        profile = replace(profile, ssh=sshd.target())
    return request.param, get_backend(request.param, profile=profile), profile


@pytest.mark.parametrize("model", ["cnn", "encoder"])
def test_a_backend_prices_a_file_with_its_source(backend_and_profile, models, model):
    name, backend, profile = backend_and_profile
    path = models[model]
    before = path.read_bytes()
    result = backend.measure(path, profile)
    assert math.isfinite(result.median_ms) and 0 < result.median_ms <= result.p90_ms
    assert result.runs == 0 if name == "estimate" else result.runs >= 1  # an estimate runs nothing and says so
    assert result.source.split(":")[0] == name  # "estimate:local", "local", "ssh:user@127.0.0.1:port"
    assert path.read_bytes() == before  # prices the file, never rewrites it
    again = backend.measure(path, profile)
    if name != "estimate":  # measured figures are cached by the file's bytes: asked again, the same figure
        assert again == result
    else:  # the estimate is a pure function of the file and the profile
        assert again.median_ms == result.median_ms


def test_a_file_that_is_not_a_model_is_one_line(backend_and_profile, tmp_path):
    _, backend, profile = backend_and_profile
    bad = tmp_path / "broken model.onnx"  # a space in the name: quoted on the board too
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(AutocompError) as info:
        backend.measure(bad, profile)
    assert "broken model.onnx" in str(info.value) and "\n" not in str(info.value)
