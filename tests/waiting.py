"""Polling for the tests that drive real processes and servers."""

from __future__ import annotations

import time


def wait_for(condition, *, timeout_s: float, what: str):
    """``condition()``'s first truthy value, polled every 0.2 s; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
