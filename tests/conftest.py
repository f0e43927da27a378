from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.real import in_ci
from tests.support.tiny_qwen3 import MODEL_NAME
from tests.support.transformers import TransformersServer, transformers_server
from tests.support.vllm import VllmServer, vllm_server


def pytest_report_header(config: pytest.Config) -> str:
    return f"CI={in_ci()}: missing real components {'fail' if in_ci() else 'skip'}"


@pytest.fixture(scope="session")
def live_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """ONE real vLLM for the whole session (about 2.5 minutes to start): tests read counter deltas.

    LLMOBS_TEST_VLLM_URL=http://127.0.0.1:PORT reuses a server already started with tests.support.vllm's
    configuration (`vllm_argv`), to iterate on a test without the start-up; never set in CI.
    """
    if url := os.environ.get("LLMOBS_TEST_VLLM_URL"):
        yield VllmServer(url=url, model=MODEL_NAME, port=int(url.rsplit(":", 1)[1]), process=None)
        return
    with vllm_server(tmp_path_factory.mktemp("vllm")) as server:
        yield server


@pytest.fixture(scope="session")
def live_transformers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersServer]:
    """ONE real `transformers serve --continuous-batching` for the whole session (20-70 s to start)."""
    with transformers_server(tmp_path_factory.mktemp("transformers")) as server:
        yield server
