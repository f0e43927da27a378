"""Bounded, secret-free labels for a process: its name and a shortened command line.

Command lines carry model paths (useful) and sometimes API keys or tokens (never to be published).
`command_label` keeps the program's basename and its first few arguments, drops the value of any option
whose name suggests a secret and any URL userinfo (exporter/redact.py), and cuts the result to a fixed
length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from exporter.redact import redact_arguments

# The pod a process runs in, where the exporter attributes processes to pods (exporter/discovery/).
POD_LABELS = ("namespace", "pod", "container")
# (pid, GPU UUID or None) -> {namespace, pod, container}, as far as known
ProcessLabels = Callable[[int, str | None], Mapping[str, str]]

MAX_COMMAND_CHARS = 120
MAX_ARGS = 8


def command_label(argv: Sequence[str]) -> str:
    if not argv:
        return ""
    shown = redact_arguments([os.path.basename(argv[0]), *argv[1:MAX_ARGS]])
    text = " ".join(shown)
    if len(argv) > MAX_ARGS:
        text += " ..."
    return text if len(text) <= MAX_COMMAND_CHARS else text[: MAX_COMMAND_CHARS - 3] + "..."
