"""`llmobs`: commands over the panel catalog. `llmobs snapshot` draws the dashboards from Prometheus into
one self-contained HTML file (grafana/README.md, "Snapshots without Grafana")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana import catalog
from grafana.errors import GrafanaError
from grafana.snapshot import snapshot
from grafana.snapshot.page import require_plotly
from grafana.snapshot.prometheus import Budget, Prometheus, token_from_env
from grafana.snapshot.resolve import ResolveError, Window, parse_duration, parse_time

EXAMPLES = """examples:
  llmobs snapshot --prometheus http://127.0.0.1:9090 --from now-1h --to now -o snapshot.html
  llmobs snapshot --prometheus http://127.0.0.1:9090 --from 2026-12-05T18:00:00Z --to 2026-12-05T20:00:00Z \\
      --dashboard load-tests --var run=soak-1 -o soak.html

exit status: 0 written; 1 written, but some queries failed or querying stopped early; 2 not written
(bad arguments, Prometheus unreachable, plotly not installed)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmobs", description="llmobs dashboards without Grafana.")
    commands = parser.add_subparsers(dest="command", required=True)
    snap = commands.add_parser(
        "snapshot",
        help="draw the dashboards' panels from Prometheus into one self-contained HTML file",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    snap.add_argument(
        "--prometheus", required=True, metavar="URL", help="base URL; user:password@ is basic auth"
    )
    snap.add_argument("--prometheus-token-env", metavar="VAR", help="send `Authorization: Bearer $VAR`")
    snap.add_argument(
        "--from", dest="start", default="now-1h", metavar="T0", help="now-1h (default), RFC 3339, Unix s"
    )
    snap.add_argument("--to", dest="end", default="now", metavar="T1", help="now (default), RFC 3339, Unix s")
    names = ", ".join(board.name for board in catalog.dashboards())
    snap.add_argument(
        "--dashboard", action="append", metavar="NAME", help=f"{names} (repeatable; default all)"
    )
    snap.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE",
        help="a template variable's value (a regex for query variables; default: all values)",
    )  # fmt: skip
    snap.add_argument(
        "--step", metavar="DUR", help="resolution (default: about 400 points, >= scrape interval)"
    )
    snap.add_argument(
        "--scrape-interval", default="15s", metavar="DUR",
        help="Prometheus's scrape interval, for $__rate_interval (default 15s, as provisioned for Grafana)",
    )  # fmt: skip
    snap.add_argument("--timeout", default="10s", metavar="DUR", help="per query (default 10s)")
    snap.add_argument("--deadline", default="180s", metavar="DUR", help="all queries together (default 180s)")
    snap.add_argument("--max-bytes", type=int, default=Budget.max_bytes, metavar="N", help="per answer")
    snap.add_argument("--max-series", type=int, default=Budget.max_series, metavar="N", help="per panel")
    snap.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.html")
    return parser


def _variables(pairs: list[str]) -> dict[str, str]:
    chosen = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ResolveError(f"--var {pair!r}: use NAME=VALUE")
        chosen[name.strip()] = value
    return chosen


def run_snapshot(args: argparse.Namespace) -> int:
    try:
        boards = [catalog.find(n) for n in args.dashboard] if args.dashboard else list(catalog.dashboards())
        chosen = _variables(args.var)
        known = {v.name for board in boards for v in board.variables}
        unknown = sorted(set(chosen) - known)
        if unknown:
            raise ResolveError(f"no such variable in these dashboards: {', '.join(unknown)}")
        window = Window.choose(
            parse_time(args.start),
            parse_time(args.end),
            parse_duration(args.scrape_interval),
            parse_duration(args.step) if args.step else None,
        )
        budget = Budget(
            parse_duration(args.timeout), parse_duration(args.deadline), args.max_bytes, args.max_series
        )
        if budget.max_bytes < 1 or budget.max_series < 1 or budget.timeout_s <= 0 or budget.deadline_s <= 0:
            raise ResolveError("budgets must be above 0")
        token = token_from_env(args.prometheus_token_env)
        require_plotly()
        with Prometheus(args.prometheus, budget, token) as prom:
            version = prom.check()
            page, outcome = snapshot(prom, boards, window, chosen, version)
    except GrafanaError as exc:
        print(f"llmobs snapshot: {exc}", file=sys.stderr)
        return 2
    text = page.render()
    args.output.write_text(text, encoding="utf-8")
    print(
        f"wrote {args.output} ({len(text.encode()) / 1e6:.1f} MB): {outcome.count('data')} panels with data, "
        f"{outcome.count('empty')} without, {outcome.count('error')} failed, "
        f"{outcome.count('skipped')} not queried",
        file=sys.stderr,
    )
    for key, errors in outcome.errors.items():
        for error in errors:
            print(f"  {key}: {error}", file=sys.stderr)
    if outcome.stopped:
        print(f"  stopped early: {outcome.stopped}", file=sys.stderr)
    return 1 if outcome.errors or outcome.stopped else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_snapshot(args)


if __name__ == "__main__":
    sys.exit(main())
