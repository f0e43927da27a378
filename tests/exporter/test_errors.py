"""The exporter's errors meant for people have one root, and its tree in exporter/errors.py is complete."""

from __future__ import annotations

import exporter
from exporter.config import ConfigError
from exporter.discovery.kubernetes import WatchFailure
from exporter.engines.base import ScrapeError
from exporter.engines.parse import ParseError, TooManySeries
from exporter.errors import ExporterError
from tests.support.error_tree import undrawn_errors


def test_every_error_meant_for_people_has_one_root() -> None:
    for error in (ConfigError, ScrapeError, ParseError, TooManySeries, WatchFailure):
        assert issubclass(error, ExporterError), error
    assert issubclass(ConfigError, ValueError) and issubclass(ParseError, ValueError)  # as before the root


def test_the_error_tree_in_the_docstring_names_every_subclass() -> None:
    internal = frozenset({"_LabelTooLong"})  # parse.py's signal: the series is dropped, never raised past it
    assert not undrawn_errors(exporter, ExporterError, internal)
