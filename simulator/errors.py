"""The simulator's errors meant for people: one tree, each caught once where it is shown.

    SimulatorError            a problem the simulator reports with a message for people
    ├── FlagError             a command-line flag that cannot be used (__main__.py): shown, exit status 2
    ├── ProfileError          a profile (shipped name, YAML file or flags over it) that cannot be used
    │                         (profile.py): shown by __main__.py, exit status 2
    ├── FaultConfigError      a fault setting (--faults file or flags) that cannot be used (faults.py):
    │                         shown by __main__.py, exit status 2
    ├── RequestError          a request the OpenAI API refuses (server.py): answered as an OpenAI error
    │                         with its status (server.completion_endpoint)
    └── AdmissionError        a request the engine will not take (engine.py): answered with the status vLLM
                              answers with (server.Simulator.admit)

Every message shows bounded (SimulatorError.__str__): at most MAX_MESSAGE characters however much of an
input it echoes (a megabyte model name in a request, a megabyte value in a profile), its middle cut with
a note of how much. Internal signals that never leave their module are not in this tree:
responses.InjectedDrop (a drop fault: the stream is cut, as a crashed engine cuts it).
"""

from __future__ import annotations

__all__ = ["MAX_MESSAGE", "FlagError", "SimulatorError", "bounded"]

MAX_MESSAGE = 1000  # characters of a message meant for people; its middle is cut past this


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, or past `limit` characters its start and end with a note of how much was cut between."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[len(text) - limit // 3 :]
    return f"{head}...[{len(text) - len(head) - len(tail)} characters cut]...{tail}"


class SimulatorError(Exception):
    """The root: a problem with a message meant for people (no traceback needed)."""

    def __str__(self) -> str:
        return bounded(super().__str__())


class FlagError(SimulatorError, ValueError):
    """A flag's value that cannot be used (an empty --api-key-env variable, a port out of range)."""
