"""The repository keeps the layout the design promises: each wing visible at the top level."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_layout() -> None:
    for name in ["exporter", "loadgen", "simulator", "grafana", "prometheus", "tests", "bench", ".ci"]:
        assert (ROOT / name).is_dir(), name
    for name in ["pyproject.toml", "README.md", "Makefile", "docker-compose.yml", ".ci/run"]:
        assert (ROOT / name).is_file(), name


def test_depends_on_nvidia_ml_py_not_deprecated_pynvml() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"nvidia-ml-py' in text
    assert '"pynvml' not in text
