"""Render, lint and validate the chart with Helm's own engine; run by the chart-tools interpreter.

This script runs in the cached virtual environment of `make chart-tools` (helm-python-sdk embeds Helm v4's
Go SDK, kubernetes-validate carries the Kubernetes API's JSON schemas), not in the project's .venv, so it
imports nothing from the project. Input on stdin, JSON:
    {"chart": DIR, "release": NAME, "namespace": NS, "kube_versions": ["1.25.0", ...],
     "cases": {CASE: VALUES, ...}, "objects": [OBJECT, ...]}
Output on stdout, JSON, per case: {"manifests": {template: text}, "error": str | null, "lint": report,
"invalid": ["<kind>/<name> (k8s <version>): <message>", ...]}. Objects of kinds the Kubernetes schemas do
not know (the Prometheus Operator's) are left to the caller, which holds their CRDs. The "objects" (test
fixtures) are validated the same way, into "objects_invalid".
"""

from __future__ import annotations

import json
import sys

import helm_python
import kubernetes_validate
import yaml


def validate(documents: list[dict], versions: list[str]) -> list[str]:
    problems = []
    for document in documents:
        if document.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            continue
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        for version in versions:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{name} (k8s {version}): {exc.message}")
    return problems


def run_case(request: dict, values: dict) -> dict:
    chart = helm_python.Chart.load(request["chart"])
    lint = helm_python.lint(request["chart"], values, strict=True, namespace=request["namespace"])
    try:
        manifests = chart.render(values, name=request["release"], namespace=request["namespace"])
    except helm_python.HelmError as exc:
        return {"manifests": {}, "error": str(exc), "lint": lint, "invalid": []}
    documents = [
        document
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]
    return {
        "manifests": manifests,
        "error": None,
        "lint": lint,
        "invalid": validate(documents, request["kube_versions"]),
    }


def main() -> int:
    request = json.load(sys.stdin)
    results = {case: run_case(request, values) for case, values in request["cases"].items()}
    objects = validate(request.get("objects", []), request.get("object_versions", request["kube_versions"]))
    json.dump(
        {"helm": helm_python.helm_sdk_version(), "cases": results, "objects_invalid": objects}, sys.stdout
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
