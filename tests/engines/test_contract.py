"""The llm_* families in docs/metrics.md are exactly the ones the engines collector can emit, same types."""

from __future__ import annotations

import re
from pathlib import Path

from exporter.engines.registry import ENGINE_KINDS
from exporter.engines.schema import ERROR_KINDS, FAMILIES, FINISH_REASONS, TARGET_FAMILIES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"


def documented_llm_families() -> dict[str, str]:
    section = DOC.read_text().split("## Exporter: engines, normalized")[1].split("\n## ")[0]
    families: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`llm_"):
            continue
        kind = cells[1].split()[0]
        for name in re.findall(r"`(llm_[a-z0-9_]+)`", cells[0]):
            families[name] = kind
    return families


def test_documented_and_emitted_families_are_the_same() -> None:
    emitted = {name: spec.type for name, spec in {**TARGET_FAMILIES, **FAMILIES}.items()}
    assert documented_llm_families() == emitted


def test_documented_label_values() -> None:
    section = DOC.read_text().split("## Exporter: engines, normalized")[1]
    for kind in ERROR_KINDS:
        assert f"`{kind}`" in section
    for reason in FINISH_REASONS:
        assert f"`{reason}`" in section


def test_documented_engine_kinds_are_the_registry() -> None:
    section = DOC.read_text().split("## Exporter: engines, normalized")[1]
    listed = section.split("also carry `engine_kind`")[1].split(")")[0]
    assert sorted(re.findall(r"`([a-z_]+)`", listed)) == sorted(ENGINE_KINDS)


def test_the_readme_failure_table_lists_every_error_kind() -> None:
    readme = (ROOT / "exporter" / "README.md").read_text()
    table = readme.split("### Failure behaviour")[1].split("| kind | when |")[1].split("\n\n")[0]
    assert sorted(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE)) == sorted(ERROR_KINDS)
