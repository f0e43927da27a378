from __future__ import annotations

import pytest

from tests.support.real import in_ci


def pytest_report_header(config: pytest.Config) -> str:
    return f"CI={in_ci()}: missing real components {'fail' if in_ci() else 'skip'}"
