"""The simulator's errors meant for people have one root, its tree in simulator/errors.py is complete, and
a message shows bounded however much of an input it echoes."""

from __future__ import annotations

import simulator
from simulator.engine import AdmissionError
from simulator.errors import FlagError, SimulatorError
from simulator.faults import FaultConfigError
from simulator.profile import ProfileError
from simulator.server import RequestError
from tests.support.error_tree import undrawn_errors


def test_every_error_meant_for_people_has_one_root() -> None:
    for error in (FlagError, ProfileError, FaultConfigError, RequestError, AdmissionError):
        assert issubclass(error, SimulatorError), error
    for error in (ProfileError, FaultConfigError):
        assert issubclass(error, ValueError), error  # as before the root: older except clauses catch them


def test_the_error_tree_in_the_docstring_names_every_subclass() -> None:
    assert not undrawn_errors(simulator, SimulatorError)


def test_a_message_echoing_a_megabyte_is_cut_in_the_middle_with_a_note() -> None:
    message = str(RequestError(f"The model `{'m' * 1_000_000}` does not exist.", 404, "NotFoundError"))
    assert len(message) < 1100
    assert message.startswith("The model `mmm") and message.endswith("` does not exist.")
    assert "characters cut]" in message
