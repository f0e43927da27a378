"""The Kubernetes objects the discovery tests are built on match the published API's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.chart import invalid_objects

FIXTURE_VERSION = "1.36.0"  # the API version the fixtures follow (their README)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kubernetes"


@pytest.mark.real
def test_fixture_pods_match_the_pod_schema() -> None:
    pods = [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]
    assert pods
    assert invalid_objects(pods, FIXTURE_VERSION) == []
    broken = json.loads(json.dumps(pods[0]))
    broken["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    assert invalid_objects([broken], FIXTURE_VERSION)  # the check can fail
