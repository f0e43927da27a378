"""The chart rendered by Helm's own engine, for the tests: cases of values, rendered once per session.

Helm runs in the cached chart-tools environment that `make chart-tools` builds (helm-python-sdk and
kubernetes-validate, pinned in the Makefile); without it the tests skip, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.real import missing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "llmobs"
RELEASE, NAMESPACE = "obs", "monitoring"
# The chart's kubeVersion floor and the newest API the pinned kubernetes-validate knows.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
HELM_SDK_VERSION, KUBERNETES_VALIDATE_VERSION = "0.2.2", "1.37.0"  # as the Makefile pins them


def chart_tools_python() -> Path:
    explicit = os.environ.get("LLMOBS_CHART_TOOLS")
    cache = Path(os.environ.get("LLMOBS_CACHE") or ROOT / ".cache")
    home = (
        Path(explicit)
        if explicit
        else cache / (f"chart-tools-helm{HELM_SDK_VERSION}-kv{KUBERNETES_VALIDATE_VERSION}")
    )
    python = home / "bin" / "python"
    if not python.exists():
        missing("helm-python-sdk", f"`make chart-tools` builds {home}")
    return python


@dataclass(frozen=True)
class Rendered:
    """One case: its objects (kind, name) -> object, and what Helm's lint and the schemas said."""

    manifests: dict[str, str]
    error: str | None
    lint: dict[str, Any]
    invalid: list[str]

    @property
    def objects(self) -> list[dict]:
        return [
            document
            for path, text in sorted(self.manifests.items())
            if not path.endswith("NOTES.txt")
            for document in yaml.safe_load_all(text)
            if document
        ]

    def get(self, kind: str, name_suffix: str = "") -> dict:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"{len(found)} {kind} objects named *{name_suffix}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)


def render(cases: dict[str, dict]) -> dict[str, Rendered]:
    results = _run_tool({"cases": cases})["cases"]
    return {case: Rendered(**result) for case, result in results.items()}


def invalid_objects(objects: list[dict], kube_version: str) -> list[str]:
    """What one Kubernetes version's API schemas (strict) say about these objects: [] when all are valid."""
    request = {"cases": {}, "objects": objects, "object_versions": [kube_version]}
    return _run_tool(request)["objects_invalid"]


def _run_tool(request: dict[str, Any]) -> dict[str, Any]:
    request = {
        "chart": str(CHART),
        "release": RELEASE,
        "namespace": NAMESPACE,
        "kube_versions": list(KUBE_VERSIONS),
        **request,
    }
    tool = Path(__file__).with_name("helm_tool.py")
    done = subprocess.run(
        [str(chart_tools_python()), str(tool)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise AssertionError(f"helm_tool.py failed with status {done.returncode}")
    return json.loads(done.stdout)
