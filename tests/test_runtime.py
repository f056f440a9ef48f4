"""onnxruntime helpers: predictors cast inputs, accuracy is measured on the file, stats count weights once."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from autocomp.errors import ConfigError
from autocomp.export import export_onnx
from autocomp.runtime import calibration_inputs, evaluate_onnx, onnx_predictor, onnx_session, onnx_stats
from autocomp.tasks.base import torch_predictor


@pytest.fixture(scope="module")
def text_file(text_task, tmp_path_factory):
    path = tmp_path_factory.mktemp("runtime") / "text.onnx"
    return export_onnx(text_task.build_model(), text_task.example_inputs(), path)


def test_predictor_casts_inputs_to_the_declared_dtypes(text_task, text_file):
    predict = onnx_predictor(text_file, threads=1)
    ids, mask = text_task.ids[450:].numpy(), text_task.mask[450:].numpy()
    as_int64 = predict(ids, mask)
    as_int32 = predict(ids.astype(np.int32), mask.astype(np.int32))  # would be rejected by a bare session
    np.testing.assert_array_equal(as_int64, as_int32)
    np.testing.assert_allclose(as_int64, torch_predictor(text_task.build_model())(ids, mask), rtol=1e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="takes 2 inputs"):
        predict(ids)


def test_evaluate_onnx_scores_the_file_like_pytorch(text_task, text_file):
    onnx_accuracy = evaluate_onnx(text_task, text_file)
    assert onnx_accuracy == pytest.approx(text_task.evaluate(torch_predictor(text_task.build_model())))
    assert onnx_accuracy > 0.8  # the task is learnt, so the comparison means something


def test_onnx_stats_counts_every_weight_once_and_hashes_the_bytes(text_task, text_file):
    stats = onnx_stats(text_file)
    assert stats.size_bytes == text_file.stat().st_size
    assert stats.sha256 == hashlib.sha256(text_file.read_bytes()).hexdigest()
    # no BatchNorm to fold in this model, so the ONNX weights are exactly the PyTorch parameters
    assert stats.params == sum(p.numel() for p in text_task.build_model().parameters())


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        onnx_session(tmp_path / "nope.onnx")


def test_calibration_inputs_are_deterministic_bounded_and_leave_the_rng_alone(text_task):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = calibration_inputs(text_task, max_samples=40)
    assert torch.equal(torch.rand(1), expected_next)  # caller's random stream untouched
    second = calibration_inputs(text_task, max_samples=40)
    assert sum(len(batch[0]) for batch in first) == 40
    assert all(len(batch) == 2 and batch[0].dtype == np.int64 for batch in first)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ConfigError):
        calibration_inputs(text_task, max_samples=0)
