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


# Profile combinations the README and the compose file's header offer. vllm and demo both answer as
# `engine` and are not offered together.
COMBINATIONS = [
    {"gpu"},
    {"gpu", "vllm"},
    {"gpu", "vllm", "loadgen"},
    {"demo"},
    {"demo", "loadgen"},
    {"gpu", "demo"},
    {"gpu", "demo", "loadgen"},
]


def active(services: dict, profiles: set[str]) -> dict:
    return {name: s for name, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])}


def network_names(name: str, service: dict) -> list[str]:
    """What a service answers to on the compose network: its name and its aliases."""
    networks = service.get("networks") or {}
    aliases = [alias for net in networks.values() if net for alias in net.get("aliases", [])]
    return [name, *aliases]


@pytest.mark.parametrize("profiles", COMBINATIONS, ids=lambda p: "+".join(sorted(p)))
def test_no_two_services_answer_to_one_name(profiles: set[str]) -> None:
    names = [n for name, s in active(compose()["services"], profiles).items() for n in network_names(name, s)]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def default(value: str) -> str:
    """`${VAR:-default}` -> default; anything else as it is."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def flag(command: list[str], name: str) -> str:
    return default(command[command.index(name) + 1])


def test_the_demo_profile_alone_loads_the_simulator_past_its_capacity() -> None:
    from simulator.profile import load_profile

    services = active(compose()["services"], {"demo"})
    loadgens = [s for s in services.values() if s.get("command", [""])[0] == "llmobs-loadgen"]
    assert len(loadgens) == 1, "the demo profile needs its own load generator"
    command = loadgens[0]["command"]
    simulator = services["simulator"]
    assert flag(command, "--url") == "http://simulator:8000"
    profile = load_profile(flag(simulator["command"], "--profile"))
    levels = [int(level) for level in flag(command, "--concurrency").split(",")]
    assert min(levels) < profile.scheduler.max_num_seqs < max(levels)  # light load, then queueing
    # KV pressure at the top step: every running sequence at its mean length would not fit
    prompt = int(flag(command, "--input-len")) + int(flag(command, "--prefix-len"))
    low, high = (int(part) for part in flag(command, "--output-len").split(":")[1:])
    assert profile.scheduler.max_num_seqs * (prompt + (low + high) / 2) > profile.kv_capacity_tokens
    # It repeats forever under one run id, and starts once the simulator answers.
    assert loadgens[0]["restart"] == "unless-stopped" and flag(command, "--run-id")
    assert loadgens[0]["depends_on"] == {"simulator": {"condition": "service_healthy"}}
    assert "/health" in " ".join(simulator["healthcheck"]["test"])


def test_prometheus_discovers_every_exporter_and_load_generator_service() -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = compose()["services"]
    for job, command, port in [
        ("llmobs-exporter", "llmobs-exporter", 9840),
        ("llmobs-loadgen", "llmobs-loadgen", 9841),
    ]:
        (dns,) = jobs[job]["dns_sd_configs"]
        names = {name for name, s in services.items() if s.get("command", [""])[0] == command}
        assert set(dns["names"]) == names, job
        assert dns["port"] == port and dns["type"] == "A"
