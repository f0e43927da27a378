"""docker-compose.yml follows the Compose Specification and mounts files that exist.

Validated against the specification's JSON schema because no Docker engine or Compose plugin runs here
(`docker compose config` needs the plugin, not a daemon; run it where you have one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from grafana.generate import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
# The dashboard schemaVersion each pinned Grafana minor writes (Grafana's DASHBOARD_SCHEMA_VERSION).
GRAFANA_SCHEMA_VERSIONS = {"11.5": 40, "11.6": 41, "12.0": 41}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_compose_spec_rejects_a_broken_file() -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = compose()
    broken["services"]["grafana"]["ports"] = {"3000": 3000}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_every_bind_mount_exists_in_the_repository() -> None:
    sources = [
        volume.split(":", 1)[0]
        for service in compose()["services"].values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]
    assert sources, "no bind mounts found"
    for source in sources:
        assert (ROOT / source).exists(), source


def test_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_grafana_password_has_no_default() -> None:
    password = compose()["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?.+\}", password), password
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, re.MULTILINE)


def test_dashboards_match_the_pinned_grafana_version() -> None:
    image = compose()["services"]["grafana"]["image"]
    minor = ".".join(image.rsplit(":", 1)[1].split(".")[:2])
    assert GRAFANA_SCHEMA_VERSIONS[minor] == SCHEMA_VERSION


def test_exporter_profile_has_gpu_and_host_pid() -> None:
    exporter = compose()["services"]["exporter"]
    assert exporter["pid"] == "host"
    devices = exporter["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_dockerfile_entry_points_exist() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for command in {"llmobs-exporter", "llmobs-loadgen", "llmobs-simulator"}:
        assert f"{command} =" in pyproject
    commands = {
        service["command"][0]
        for service in compose()["services"].values()
        if service.get("image", "").startswith("llmobs:")
    }
    assert commands == {"llmobs-exporter", "llmobs-loadgen", "llmobs-simulator"}
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.MULTILINE)
