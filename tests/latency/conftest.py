"""Fixtures for the SSH backend tests: a real sshd on loopback (this machine is the board)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sshd import SshdServer, sshd_available


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshdServer:
    reason = sshd_available()
    if reason:
        if os.environ.get("CI"):  # .ci/run installs OpenSSH: there a missing server is a failure
            pytest.fail(f"the SSH tests need a real sshd: {reason}")
        pytest.skip(reason)
    server = SshdServer(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """TinyResNet exported to ONNX (1x1x16x16 input), about 0.1-1 ms per inference here."""
    import torch

    from tiny_models import TinyResNet

    path = tmp_path_factory.mktemp("onnx") / "tiny_resnet.onnx"
    torch.manual_seed(0)
    torch.onnx.export(TinyResNet(width=2.0).eval(), (torch.rand(1, 1, 16, 16),), str(path), dynamo=False)
    return path
