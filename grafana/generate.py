"""Dashboards as code: `python -m grafana.generate` writes grafana/dashboards/*.json from the panel catalog.

`--check` exits 1 when the committed JSON is stale (CI runs it through tests/stack/test_grafana.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana.catalog import dashboards
from grafana.render_grafana import SCHEMA_VERSION, dashboard_text

__all__ = ["OUT_DIR", "SCHEMA_VERSION", "main", "render"]

OUT_DIR = Path(__file__).resolve().parent / "dashboards"


def render() -> dict[str, str]:
    """File name -> JSON text for every dashboard in the catalog."""
    return {f"{board.name}.json": dashboard_text(board) for board in dashboards()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"stale dashboards (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
