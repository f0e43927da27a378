"""What to send: synthetic prompts of given token lengths, JSONL prompt files (ShareGPT files: sharegpt.py).

Everything is drawn from one `random.Random(seed)`, so a seed reproduces the same requests in the
same order. Lengths are counted in tokens with a tokenizer when one is given (`tokenizers` or
`tiktoken`, both optional); without one, synthetic text is made of common words whose
tokens-per-word ratio is calibrated from the server's `usage` at start (see run_setup.calibrate).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loadgen.errors import WorkloadError

# Short common words: one token each in the BPE vocabularies of most chat models (with the leading space).
_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how "
    "their if will up other about out many then them these so some her would make like him into time "
    "has look two more write go see number no way could people my than first water been call who oil "
    "its now find long down day did get come made may part over new sound take only little work know "
    "place year live me back give most very after thing our just name good sentence man think say "
    "great where help through much before line right too mean old any same tell boy follow came want "
    "show also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move try kind hand picture "
    "again change off play spell air away animal house point page letter mother answer found study "
    "still learn should world high every near add food between own below country plant last school "
    "father keep tree never start city earth eye light thought head under story saw left few while "
    "along might close something seem next hard open example begin life always those both paper "
    "together run book list rain wind song blue fish game king ship girl door road"
)
WORDS = tuple(_WORD_TEXT.split())  # 256 distinct words: one random byte picks one (random_words)


def random_words(rng: random.Random, count: int) -> str:
    """`count` words drawn uniformly from WORDS: one C call for the randomness (`rng.choices` makes
    one Python-level call per word, a visible share of the load generator's CPU per request)."""
    return " ".join(map(WORDS.__getitem__, rng.randbytes(count)))


@dataclass(frozen=True)
class WorkItem:
    messages: tuple[dict, ...]  # the first turn, as chat messages
    max_tokens: int | None
    followups: tuple[str, ...] = ()  # further user turns of a multi-turn conversation
    prompt_tokens: int | None = None  # synthetic: the prompt length drawn (prefix included)
    followup_tokens: tuple[int, ...] = ()  # synthetic: the length drawn for each further turn

    def prompt_text(self, messages: list[dict] | None = None) -> str:
        """The prompt for /v1/completions: the message, or the conversation as `role: text` lines."""
        messages = messages if messages is not None else list(self.messages)
        if len(messages) == 1:
            return str(messages[0].get("content", ""))
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


class Workload(Protocol):
    """What the runner asks of a workload: the next item to send, and what it is, for the report.

    The runner calls `next()` once per conversation it starts (closed loop: each time a user is
    free; open loop: at each arrival), from the event loop, never concurrently, so a workload may
    keep state (a cursor, a random generator) without locks. `next()` must return at once: it runs
    on the dispatch path, where a slow call is dispatch delay for every request behind it. An item
    with `followups` is a conversation: the runner sends its turns one after another, feeding each
    answer back. `describe()` is called once, for the report's `workload` section (JSON-ready).

    Implementations: `Synthetic` (generated prompts) and `FileWorkload` (ShareGPT, JSONL)."""

    def next(self) -> WorkItem: ...

    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class LengthDist:
    """`256`, `uniform:128:512`, `normal:256:64`, or `hist:128=0.5,512=0.3,2048=0.2`."""

    kind: str
    params: tuple[float, ...]
    weights: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text: str | int) -> LengthDist:
        spec = str(text).strip()
        try:
            if spec.replace("fixed:", "", 1).isdigit():
                return cls._checked("fixed", (float(spec.replace("fixed:", "", 1)),))
            kind, _, rest = spec.partition(":")
            if kind in ("uniform", "normal"):
                low, high = (float(x) for x in rest.split(":"))
                return cls._checked(kind, (low, high))
            if kind == "hist":
                pairs = [item.split("=") for item in rest.split(",")]
                return cls._checked(
                    "hist", tuple(float(v) for v, _ in pairs), tuple(float(w) for _, w in pairs)
                )
        except ValueError:
            pass
        raise WorkloadError(
            f"bad length {spec!r}: use N, uniform:MIN:MAX, normal:MEAN:STD or hist:LEN=WEIGHT,LEN=WEIGHT"
        )

    @classmethod
    def _checked(cls, kind: str, params: tuple[float, ...], weights: tuple[float, ...] = ()) -> LengthDist:
        if kind == "uniform" and not 1 <= params[0] <= params[1]:
            raise ValueError
        if kind == "normal" and (params[0] < 1 or params[1] < 0):
            raise ValueError
        if kind in ("fixed", "hist") and (min(params) < 1 or (weights and min(weights) < 0) or
                                          (kind == "hist" and sum(weights) <= 0)):  # fmt: skip
            raise ValueError
        return cls(kind, params, weights)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.params[0])
        if self.kind == "uniform":
            return rng.randint(int(self.params[0]), int(self.params[1]))
        if self.kind == "normal":
            return max(1, round(rng.gauss(self.params[0], self.params[1])))
        return int(rng.choices(self.params, weights=self.weights)[0])

    def mean(self) -> float:
        if self.kind == "fixed":
            return self.params[0]
        if self.kind in ("uniform",):
            return sum(self.params) / 2
        if self.kind == "normal":
            return self.params[0]
        return sum(v * w for v, w in zip(self.params, self.weights, strict=True)) / sum(self.weights)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.params[0]:g}"
        if self.kind == "hist":
            return "hist:" + ",".join(f"{v:g}={w:g}" for v, w in zip(self.params, self.weights, strict=True))
        return f"{self.kind}:{self.params[0]:g}:{self.params[1]:g}"


class Tokenizer:
    """A token counter/trimmer over `tokenizers` (a tokenizer.json) or `tiktoken` (`tiktoken:NAME`)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        if spec.startswith("tiktoken:"):
            try:
                import tiktoken
            except ImportError as exc:
                raise WorkloadError("tokenizer tiktoken:... needs `pip install llmobs[tokenizers]`") from exc
            encoding = tiktoken.get_encoding(spec.split(":", 1)[1])
            self.encode: Callable[[str], list[int]] = encoding.encode_ordinary
            self.decode: Callable[[list[int]], str] = encoding.decode
            return
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as exc:
            raise WorkloadError("--tokenizer needs `pip install llmobs[tokenizers]`") from exc
        path = Path(spec)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise WorkloadError(f"tokenizer file not found: {path}")
        hf = HFTokenizer.from_file(str(path))
        self.encode = lambda text: hf.encode(text, add_special_tokens=False).ids
        self.decode = hf.decode

    def count(self, text: str) -> int:
        return len(self.encode(text))


class TextMaker:
    """Random text of a given number of tokens."""

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer
        self.tokens_per_word = 1.0
        self.template_tokens: float | None = None  # a chat template's tokens around one user message
        self.length_source = "tokenizer" if tokenizer else "assumed 1 token per word"

    def make(self, tokens: int, rng: random.Random) -> str:
        if self.tokenizer is None:
            words = max(1, round(tokens / self.tokens_per_word))
            return random_words(rng, words)
        text = random_words(rng, tokens + 8)
        ids = self.tokenizer.encode(text)
        while len(ids) < tokens:
            text += " " + random_words(rng, tokens - len(ids) + 8)
            ids = self.tokenizer.encode(text)
        return self.tokenizer.decode(ids[:tokens])

    def count(self, text: str) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.count(text)
        return max(1, round(len(text.split()) * self.tokens_per_word))


@dataclass
class Synthetic:
    input_len: LengthDist
    output_len: LengthDist | None
    text: TextMaker
    rng: random.Random
    prefix_groups: int = 0
    prefix_len: int = 0
    turns: int = 1
    system_len: int = 0  # a system prompt shared by every conversation (sessions.system_prompt_tokens)
    _prefixes: list[str] = field(default_factory=list)
    _system: str = ""
    _index: int = 0
    _step: int = 1  # a slice takes every _step-th item of the whole sequence (slicing.py)
    _prefix_seed: float | None = None  # a slice's shared prefixes and system prompt: from the run's seed

    def next(self) -> WorkItem:
        length = self.input_len.sample(self.rng)
        prompt = self.text.make(length, self.rng)
        if self.prefix_groups and self.prefix_len:
            length += self.prefix_len
            if not self._prefixes:  # drawn lazily so that calibration applies to them too
                seed = self.rng.random() if self._prefix_seed is None else self._prefix_seed
                prefix_rng = random.Random(seed)
                self._prefixes = [
                    self.text.make(self.prefix_len, prefix_rng) for _ in range(self.prefix_groups)
                ]
            prompt = self._prefixes[self._index % self.prefix_groups] + "\n\n" + prompt
        self._index += self._step
        max_tokens = self.output_len.sample(self.rng) if self.output_len else None
        lengths: list[int] = []
        followups: list[str] = []
        for _ in range(self.turns - 1):
            lengths.append(self.input_len.sample(self.rng))
            followups.append(self.text.make(lengths[-1], self.rng))
        messages: tuple[dict, ...] = ({"role": "user", "content": prompt},)
        if self.system_len:
            if not self._system:  # made lazily, so that calibration applies to it too
                shared = self.rng.random() if self._prefix_seed is None else f"{self._prefix_seed}:system"
                self._system = self.text.make(self.system_len, random.Random(shared))
            messages = ({"role": "system", "content": self._system}, *messages)
            length += self.system_len
        return WorkItem(messages, max_tokens, tuple(followups), length, tuple(lengths))

    def sliced(self, index: int, count: int) -> Synthetic:
        """Slice `index` of `count` (slicing.py): random prompts of its own (a seed derived from this
        one's), the whole run's shared prefixes and system prompt (their seed drawn from this one's
        state, the same in every slice), and prefix group i for item i of the whole sequence."""
        base, prefix_seed = self.rng.getrandbits(64), self.rng.random()
        return dataclasses.replace(
            self, rng=random.Random(f"{base}:{index}/{count}"), _prefixes=[], _index=index, _step=count,
            _prefix_seed=prefix_seed,
        )  # fmt: skip

    def describe(self) -> dict[str, object]:
        return {
            "kind": "synthetic",
            "input_len": str(self.input_len),
            "output_len": str(self.output_len) if self.output_len else None,
            "length_source": self.text.length_source,
            "tokens_per_word": self.text.tokens_per_word,
            "prefix_groups": self.prefix_groups,
            "prefix_len": self.prefix_len,
            "turns": self.turns,
            "system_prompt_tokens": self.system_len,
        }


@dataclass
class FileWorkload:
    """Items loaded from a file, shuffled once with the seed, then served in a cycle."""

    kind: str
    path: str
    items: list[WorkItem]
    rng: random.Random
    output_len: LengthDist | None = None  # None: the file's own lengths
    _index: int = 0
    _step: int = 1  # a slice serves every _step-th item (slicing.py)

    def __post_init__(self) -> None:
        if not self.items:
            raise WorkloadError(f"{self.path}: no usable prompts")
        self.rng.shuffle(self.items)

    def next(self) -> WorkItem:
        item = self.items[self._index % len(self.items)]
        self._index += self._step
        return item

    def sliced(self, index: int, count: int) -> FileWorkload:
        """Items index, index + count, ... of the sequence (slicing.py): together the slices send
        the file in the order one process would, so no item goes twice before the file is used up."""
        part = copy.copy(self)
        part._index, part._step = index, count
        return part

    def describe(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "path": self.path,
            "prompts": len(self.items),
            "output_len": str(self.output_len) if self.output_len else "from the dataset",
        }


def load_jsonl(path: str, rng: random.Random, output_len: LengthDist | None) -> FileWorkload:
    """JSONL: one object per line with "prompt" (text) or "messages" (chat messages), and
    optionally "max_tokens" (or "output_len")."""
    items = [jsonl_item(obj, where, rng, output_len) for where, obj in jsonl_objects(path)]
    return FileWorkload("jsonl", path, items, rng, output_len)


MAX_LINES = 2_000_000  # lines of a JSONL dataset or trace
MAX_LINE_BYTES = 4 * 1024 * 1024  # bytes of one of its lines


def jsonl_objects(path: str) -> Iterator[tuple[str, dict]]:
    """(`path:line`, object) for each non-blank line of a JSONL file, read line by line within the
    budgets (a 1 GB line costs 4 MiB and a clear error, not the whole line in memory)."""
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 (closed by the with below; an open error is ours to word)
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    with handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
            where = f"{path}:{number}"
            if number > MAX_LINES:
                raise WorkloadError(f"{path}: more than {MAX_LINES} lines")
            if len(raw) > MAX_LINE_BYTES:
                raise WorkloadError(f"{where}: a line longer than {MAX_LINE_BYTES} bytes")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # nested past the recursion limit: not JSON here
                raise WorkloadError(f"{where}: not JSON ({exc})") from exc
            if not isinstance(obj, dict):
                raise WorkloadError(f"{where}: each line must be a JSON object")
            yield where, obj


def jsonl_item(obj: dict, where: str, rng: random.Random, output_len: LengthDist | None) -> WorkItem:
    """One JSONL line's request: "prompt" (text) or "messages" (chat messages), optional "max_tokens"
    (or "output_len"); `output_len`, when given, replaces the line's own length."""
    if isinstance(obj.get("messages"), list) and all(isinstance(m, dict) for m in obj["messages"]):
        messages = tuple(obj["messages"])
    elif isinstance(obj.get("prompt"), str):
        messages = ({"role": "user", "content": obj["prompt"]},)
    else:
        raise WorkloadError(f'{where}: needs "prompt" (string) or "messages" (list of objects)')
    max_tokens = obj.get("max_tokens", obj.get("output_len"))
    if output_len is not None:
        max_tokens = output_len.sample(rng)
    elif max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise WorkloadError(f"{where}: max_tokens must be a positive integer")
    return WorkItem(messages, max_tokens)
