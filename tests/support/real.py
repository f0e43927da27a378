"""Policy for tests that need a real component (Prometheus, llama-server).

Locally a missing component skips the test with a reason; under CI=true it fails, so a CI run can
never pass by silently not testing the real thing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(component: str, hint: str) -> None:
    message = f"real component missing: {component} ({hint})"
    if in_ci():
        pytest.fail(message + " -- CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(name, hint)
    return path
