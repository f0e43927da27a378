"""ShareGPT datasets (`--dataset sharegpt:FILE`): one JSON array of conversations,
`[{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}, ...]`.

The first human turn is the prompt; the first answer's length in tokens is max_tokens unless
--output-len is given; with --turns > 1 the next human turns follow. Conversations without a human turn
(or, without --output-len, without an answer) are skipped, as are entries that are not objects.

The file is read as a stream of parse events (ijson over yajl's C parser), within budgets, and only what
a request needs is kept of each conversation, so a multi-GB or hostile file is a clear WorkloadError,
never the whole file in memory: at most MAX_FILE_BYTES read, MAX_CONVERSATIONS conversations of at most
MAX_CONVERSATION_BYTES each, nested at most MAX_DEPTH deep. Reading it whole with json.loads held the
file several times over (bench/sharegpt_memory.py, bench/RESULTS.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from loadgen.errors import WorkloadError
from loadgen.workloads import MAX_LINE_BYTES, MAX_LINES, FileWorkload, LengthDist, TextMaker, WorkItem

__all__ = ["HUMAN_ROLES", "MAX_FILE_BYTES", "MODEL_ROLES", "load_sharegpt"]

HUMAN_ROLES = {"human", "user"}
MODEL_ROLES = {"gpt", "assistant", "chatgpt", "bard", "model"}
CONVERSATION_KEYS = ("conversations", "conversation")
MAX_FILE_BYTES = 2 * 1024**3
MAX_CONVERSATIONS = MAX_LINES
MAX_CONVERSATION_BYTES = MAX_LINE_BYTES
MAX_DEPTH = 32
READ_BYTES = 64 * 1024
_NOT_TEXT = object()  # a turn's field that is an object or a list


def load_sharegpt(
    path: str, rng: random.Random, output_len: LengthDist | None, text: TextMaker, turns: int
) -> FileWorkload:
    items = []
    for humans, answer in read_conversations(path):
        humans = [human for human in humans if isinstance(human, str) and human]
        if not humans:
            continue
        if output_len is not None:
            max_tokens = output_len.sample(rng)
        elif isinstance(answer, str) and answer:
            max_tokens = text.count(answer)
        else:
            continue
        items.append(WorkItem(({"role": "user", "content": humans[0]},), max_tokens, tuple(humans[1:turns])))
    return FileWorkload("sharegpt", path, items, rng, output_len)


def read_conversations(path: str) -> Iterator[tuple[list[object], object]]:
    """(human turns' values, the first answer's value or None) of each conversation, read within the
    budgets."""
    try:
        import ijson  # a dependency; imported here so that a run without ShareGPT never needs it
    except ImportError:
        raise WorkloadError("ShareGPT datasets need the ijson package (pip install ijson)") from None
    try:
        size = Path(path).stat().st_size
        handle = Path(path).open("rb")  # noqa: SIM115 (closed below; an open error is ours to word)
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        handle.close()
        raise _too_large(path)
    with handle:
        reader = _BudgetedReader(handle, path)
        try:
            yield from _conversations(ijson.basic_parse(reader, use_float=True, buf_size=READ_BYTES), reader)
        except ijson.JSONError as exc:
            raise WorkloadError(f"{path}: not valid JSON ({_problem(exc)})") from None


def _problem(exc: Exception) -> str:
    """yajl's message without the lines that quote the file around the error (`(right here) ------^`)."""
    text = str(exc)
    if text[:2] in ("b'", 'b"'):  # a lexical error comes as the repr of bytes
        text = text[2:].replace("\\n", "\n")
    return text.splitlines()[0].strip() if text.strip() else type(exc).__name__


def _too_large(path: str) -> WorkloadError:
    return WorkloadError(
        f"{path}: larger than {MAX_FILE_BYTES} bytes, the budget of a ShareGPT file (its prompts are kept "
        "in memory): use a part of it, or a jsonl: dataset"
    )


class _BudgetedReader:
    """The file, read at most MAX_FILE_BYTES, and at most MAX_CONVERSATION_BYTES (plus one read) since
    the current conversation began."""

    def __init__(self, handle: IO[bytes], path: str) -> None:
        self._handle = handle
        self.path = path
        self.total = 0
        self.conversation = 0
        self._since = 0

    def begin(self, conversation: int) -> None:
        self.conversation, self._since = conversation, self.total

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(READ_BYTES if size < 0 else min(size, READ_BYTES))
        self.total += len(data)
        if self.total > MAX_FILE_BYTES:
            raise _too_large(self.path)
        if self.conversation and self.total - self._since > MAX_CONVERSATION_BYTES + READ_BYTES:
            raise WorkloadError(
                f"{self.path}: conversation {self.conversation} is larger than {MAX_CONVERSATION_BYTES} bytes"
            )
        return data


Events = Iterator[tuple[str, object]]  # ijson.basic_parse: (event, value)


def _conversations(events: Events, reader: _BudgetedReader) -> Iterator[tuple[list, object]]:
    first = next(events, None)
    if first is None or first[0] != "start_array":
        raise WorkloadError(f"{reader.path}: ShareGPT JSON must be a list of conversations")
    for number, (event, _) in enumerate(events, start=1):  # the list's items (the others consume theirs)
        if event == "end_array":
            break
        if number > MAX_CONVERSATIONS:
            raise WorkloadError(f"{reader.path}: more than {MAX_CONVERSATIONS} conversations")
        reader.begin(number)
        if event == "start_map":
            yield _conversation(events, reader.path)
        else:
            _skip(event, events, 1, reader.path)
    reader.begin(0)
    for _ in events:  # what follows the array: nothing, or ijson raises
        pass


def _conversation(events: Events, path: str) -> tuple[list, object]:
    found: dict[object, list[tuple[object, object]]] = {}
    for event, key in events:
        if event == "end_map":
            break
        event, _ = next(events)
        if key in CONVERSATION_KEYS and event == "start_array":
            found[key] = _turns(events, path)
        else:
            found.pop(key, None)  # a later duplicate key replaces an earlier one, as in json.loads
            _skip(event, events, 3, path)
    turns = next((found[key] for key in CONVERSATION_KEYS if found.get(key)), [])
    humans = [value for role, value in turns if role in HUMAN_ROLES]
    answers = [value for role, value in turns if role in MODEL_ROLES]
    return humans, answers[0] if answers else None


def _turns(events: Events, path: str) -> list[tuple[object, object]]:
    """(from, value) of each turn (an object); anything else in the list is skipped."""
    turns = []
    for event, _ in events:
        if event == "end_array":
            return turns
        if event == "start_map":
            turns.append(_turn(events, path))
        else:
            _skip(event, events, 4, path)
    return turns


def _turn(events: Events, path: str) -> tuple[object, object]:
    fields: dict[object, object] = {}
    for event, key in events:
        if event == "end_map":
            break
        event, value = next(events)
        if event in ("start_map", "start_array"):
            _skip(event, events, 5, path)
            value = _NOT_TEXT
        fields[key] = value
    return fields.get("from"), fields.get("value")


def _skip(event: str, events: Events, depth: int, path: str) -> None:
    """Pass over a value that is not needed (a container to its end), at most MAX_DEPTH deep."""
    if event not in ("start_map", "start_array"):
        return
    level = 1
    for event, _ in events:
        if event in ("start_map", "start_array"):
            level += 1
            if depth + level > MAX_DEPTH:
                raise WorkloadError(f"{path}: nested more than {MAX_DEPTH} deep")
        elif event in ("end_map", "end_array"):
            level -= 1
            if not level:
                return
