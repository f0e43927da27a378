"""The image the Dockerfile builds holds every package its commands import.

No Docker engine runs here, so the image's files are rebuilt the way its build makes them: the
Dockerfile's COPY lines are followed into a temporary directory, installed there with pip as its RUN
line does (without dependencies: this environment has them), and every module of our packages is
imported from that install in a fresh interpreter. A module that resolves anywhere else (the checkout,
through the editable install) is one the image would not have: `llmobs-loadgen` once failed at start
in the image with "No module named 'grafana'", since its HTML report imports the dashboard catalog.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
OURS = tuple(pattern.rstrip("*") for pattern in SETUPTOOLS["packages"]["find"]["include"])  # "exporter*"...

PROBE = """
import importlib, pkgutil, sys
site, ours = sys.argv[1], sys.argv[2:]
for top in ours:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        importlib.import_module(info.name)
for module in list(sys.modules.values()):
    where = getattr(module, "__file__", None) or site
    if module.__name__.split(".")[0] in ours and not where.startswith(site):
        print(f"{module.__name__} from {where}")
"""


def copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY line."""
    found = []
    for line in dockerfile.splitlines():
        if match := re.match(r"COPY\s+(.+)", line.strip()):
            *sources, destination = match.group(1).split()
            found.append((sources, destination))
    return found


def image_tree(destination: Path) -> Path:
    """The build context's files as the Dockerfile's COPY lines place them under WORKDIR /src."""
    for sources, target in copies((ROOT / "Dockerfile").read_text()):
        for source in sources:
            path = ROOT / source
            into = destination / target / source if target.endswith("/") else destination / target
            if path.is_dir():
                shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
    return destination


def test_the_dockerfile_copies_are_read() -> None:
    found = copies("FROM x\nCOPY pyproject.toml README.md ./\nCOPY exporter exporter\n")
    assert found == [(["pyproject.toml", "README.md"], "./"), (["exporter"], "exporter")]


def test_every_module_of_ours_imports_from_the_image_alone(tmp_path: Path) -> None:
    source, site = image_tree(tmp_path / "src"), tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--no-compile", "--disable-pip-version-check", "--target", str(site), str(source)]  # fmt: skip
    built = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert {path.name for path in (site / "bin").iterdir()} >= {"llmobs-exporter", "llmobs-loadgen"}

    only_the_image = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", PROBE, str(site), *OURS], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path, env=only_the_image)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout == "", f"modules the image does not hold:\n{probe.stdout}"
