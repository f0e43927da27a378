"""Request outcomes live in one Literal (loadgen/outcomes.py): every outcome the code sets is one of
them, every failure class is set somewhere, and the docs list exactly them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from loadgen.outcomes import FAILURES, OUTCOMES
from loadgen.timing import RequestRecord

ROOT = Path(__file__).resolve().parents[2]


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _outcome_strings(tree: ast.AST) -> set[str]:
    """String literals that can become an outcome: the first argument of `x.fail(...)`, what is assigned
    to a name or attribute `outcome`, and what a function declared to return an Outcome returns (the
    first item of a returned tuple)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fail":
            if node.args:
                found |= _strings(node.args[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = any(
                (isinstance(t, ast.Name) and t.id == "outcome")
                or (isinstance(t, ast.Attribute) and t.attr == "outcome")
                for t in targets
            )
            if named and node.value is not None:
                found |= _strings(node.value)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "Outcome" in ast.unparse(
            node.returns or ast.Constant(None)
        ):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    value = ret.value.elts[0] if isinstance(ret.value, ast.Tuple) else ret.value
                    found |= _strings(value)
    return found


def test_every_outcome_the_code_sets_is_declared() -> None:
    produced: set[str] = set()
    for path in (ROOT / "loadgen").rglob("*.py"):
        if path.parent.name == "html":  # reads outcomes from the JSONL (its "other" folds rare classes)
            continue
        produced |= _outcome_strings(ast.parse(path.read_text(encoding="utf-8")))
    produced.discard("success")  # a record starts as a success
    assert produced - set(OUTCOMES) == set(), "outcomes set in loadgen/ but not in loadgen/outcomes.py"
    assert set(FAILURES) - produced == set(), "declared failure classes that nothing sets"
    assert RequestRecord("r", "p", 0, True).outcome == "success" == OUTCOMES[0]


def test_the_scan_sees_an_undeclared_outcome() -> None:
    code = "def f(record):\n    outcome = 'a' if x else 'b'\n    record.fail('c', 'why')\n"
    assert _outcome_strings(ast.parse(code)) == {"a", "b", "c"}


def test_docs_list_the_outcomes() -> None:
    metrics = (ROOT / "docs/metrics.md").read_text(encoding="utf-8")
    row = next(line for line in metrics.splitlines() if line.startswith("| `loadgen_requests_total`"))
    assert re.findall(r"`([a-z_0-9]+)`", row.split("`outcome` =", 1)[1]) == list(OUTCOMES)
    readme = (ROOT / "loadgen/README.md").read_text(encoding="utf-8")
    failures = readme.split("## Failures", 1)[1].split("\n\n", 2)[1]
    assert set(re.findall(r"`([a-z_0-9]+)`", failures)) >= set(FAILURES)
