"""ShareGPT datasets read as a stream within budgets: the same prompts as reading the file whole, and a
file too large, a conversation too large, nesting too deep or bytes that are not JSON each a clear
WorkloadError, never the whole file (or one hostile value) in memory."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen import sharegpt
from loadgen.errors import WorkloadError
from loadgen.sharegpt import load_sharegpt
from loadgen.workloads import LengthDist, TextMaker

CONVERSATIONS = [
    {"id": "a", "conversations": [
        {"from": "human", "value": "first question"}, {"from": "gpt", "value": "one two three"},
        {"from": "human", "value": "second question"}, {"from": "gpt", "value": "four"},
        {"from": "human", "value": "third"},
    ]},
    {"conversations": [{"from": "gpt", "value": "no human turn"}]},
    {"id": "broken"},
    "not an object",
    {"conversation": [{"from": "user", "value": "other key"}, {"from": "assistant", "value": "x y"}],
     "meta": {"nested": [[1, 2], {"k": None}], "n": 1.5, "t": True}},
    {"conversations": [{"from": ["a list"], "value": "role is no text"}, {"from": "human", "value": ""},
                       7, {"from": "human", "value": {"not": "text"}}, {"from": "human", "value": "ok"},
                       {"from": "gpt", "value": "a b"}]},
    {"conversations": [], "conversation": [{"from": "human", "value": "empty list falls back"},
                                           {"from": "gpt", "value": "z"}]},
    {"conversations": [{"from": "human", "value": "no answer"}]},
]  # fmt: skip


def write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def prompts(path: str, output_len: LengthDist | None = None, turns: int = 1) -> list[tuple]:
    workload = load_sharegpt(path, random.Random(0), output_len, TextMaker(None), turns)
    return sorted((item.messages[0]["content"], item.max_tokens, item.followups) for item in workload.items)


def test_prompts_lengths_and_turns_as_read_from_the_whole_file(tmp_path: Path) -> None:
    path = write(tmp_path / "sg.json", CONVERSATIONS)
    assert prompts(path) == [
        ("empty list falls back", 1, ()),
        ("first question", 3, ()),
        ("ok", 2, ()),
        ("other key", 2, ()),
    ]
    assert prompts(path, turns=3)[1] == ("first question", 3, ("second question", "third"))
    with_lengths = prompts(path, LengthDist.parse("7"))  # --output-len: answers need not be there
    assert ("no answer", 7, ()) in with_lengths and len(with_lengths) == 5


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"conversations": []}', "must be a list of conversations"),
        (b"", r"not valid JSON \(parse error: premature EOF\)$"),
        (b'[{"conversations": [}]', "not valid JSON"),
        (b'[{"conversations": []}] trailing', "not valid JSON"),
        (
            b'[{"conversations": [{"from": "human", "value": "\xff"}]}]',
            r"JSON \(lexical error: invalid bytes in UTF8 string.\)$",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 deep"),
        (b'[{"x": ' + b"[" * 40 + b"]" * 40 + b"}]", "nested more than 32 deep"),
        (b"[]", "no usable prompts"),
    ],
)
def test_hostile_or_broken_files_are_clear_errors(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "sg.json"
    path.write_bytes(content)
    with pytest.raises(WorkloadError, match=fragment):
        load_sharegpt(str(path), random.Random(0), None, TextMaker(None), 1)


def test_budgets_of_file_conversation_and_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as out:
        out.truncate(sharegpt.MAX_FILE_BYTES + 1)  # sparse: nothing is read, the size says it
    with pytest.raises(WorkloadError, match="larger than 2147483648 bytes"):
        load_sharegpt(str(big), random.Random(0), None, TextMaker(None), 1)
    one = {"conversations": [{"from": "human", "value": "x" * 300_000}, {"from": "gpt", "value": "y"}]}
    path = write(tmp_path / "sg.json", [one, one, one])
    monkeypatch.setattr(sharegpt, "MAX_CONVERSATION_BYTES", 100_000)
    with pytest.raises(WorkloadError, match="conversation 1 is larger than 100000 bytes"):
        load_sharegpt(path, random.Random(0), None, TextMaker(None), 1)
    monkeypatch.setattr(sharegpt, "MAX_CONVERSATION_BYTES", 1_000_000)
    monkeypatch.setattr(sharegpt, "MAX_FILE_BYTES", 800_000)  # a stream that grows past its stat
    with pytest.raises(WorkloadError, match="larger than 800000 bytes"):
        load_sharegpt(path, random.Random(0), None, TextMaker(None), 1)
    monkeypatch.setattr(sharegpt, "MAX_FILE_BYTES", 2**31)
    monkeypatch.setattr(sharegpt, "MAX_CONVERSATIONS", 2)
    with pytest.raises(WorkloadError, match="more than 2 conversations"):
        load_sharegpt(path, random.Random(0), None, TextMaker(None), 1)


def test_a_huge_value_costs_its_budget_not_its_size(tmp_path: Path) -> None:
    """One conversation of a 200 MB string: read whole (json.loads) it took more than 400 MB; streamed,
    the budget stops it at 4 MiB. Measured in a process of its own (VmHWM: ru_maxrss would count the
    RSS of this process, which it forks from, too)."""
    path = tmp_path / "huge.json"
    with path.open("w") as out:
        out.write('[{"conversations": [{"from": "human", "value": "')
        for _ in range(200):
            out.write("x" * 1_000_000)
        out.write('"}]}]')
    code = (
        "import random, sys\n"
        "from loadgen.errors import WorkloadError\n"
        "from loadgen.sharegpt import load_sharegpt\n"
        "from loadgen.workloads import TextMaker\n"
        "try:\n"
        "    load_sharegpt(sys.argv[1], random.Random(0), None, TextMaker(None), 1)\n"
        "except WorkloadError as exc:\n"
        "    print(exc)\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    message, peak_kib = done.stdout.strip().splitlines()
    assert "conversation 1 is larger than 4194304 bytes" in message, done.stderr
    assert int(peak_kib) < 100 * 1024, peak_kib  # under 100 MiB; the file is 200 MB
