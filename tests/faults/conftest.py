"""Fixtures of the fault matrix: real processes on loopback, shared per module where a case leaves no mark.

- `fault_tmp`: a folder for the module's logs and reports (scan it with checks.assert_no_secret).
- `sim`: one simulator for the module. `exp`: one exporter for the module, scraping `sim` as target `sim`.
- `start`: a function-scoped ExitStack for processes of a case's own (`start(stack.exporter(tmp, ...))`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.faults import stack

T = TypeVar("T")


@pytest.fixture(scope="module")
def fault_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def sim(fault_tmp: Path) -> Iterator[stack.Proc]:
    with stack.simulator(fault_tmp) as proc:
        yield proc


@pytest.fixture(scope="module")
def exp(fault_tmp: Path, sim: stack.Proc) -> Iterator[stack.Proc]:
    with stack.exporter(fault_tmp, "--target", f"sim={sim.url},kind=vllm") as proc:
        yield proc


@pytest.fixture
def start() -> Iterator[Callable[[contextlib.AbstractContextManager[T]], T]]:
    with contextlib.ExitStack() as exits:
        yield exits.enter_context
