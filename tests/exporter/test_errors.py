"""The exporter's errors meant for people have one root, and its tree in exporter/errors.py is complete."""

from __future__ import annotations

import importlib
import pkgutil

import exporter
from exporter import errors
from exporter.config import ConfigError
from exporter.discovery.kubernetes import WatchFailure
from exporter.engines.base import ScrapeError
from exporter.engines.parse import ParseError, TooManySeries
from exporter.errors import ExporterError


def test_every_error_meant_for_people_has_one_root() -> None:
    for error in (ConfigError, ScrapeError, ParseError, TooManySeries, WatchFailure):
        assert issubclass(error, ExporterError), error
    assert issubclass(ConfigError, ValueError) and issubclass(ParseError, ValueError)  # as before the root


def test_the_error_tree_in_the_docstring_names_every_subclass() -> None:
    for module in pkgutil.walk_packages(exporter.__path__, "exporter."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    pending, found = [ExporterError], set()
    while pending:
        for subclass in pending.pop().__subclasses__():
            found.add(subclass.__name__)
            pending.append(subclass)
    internal = {"_LabelTooLong"}  # parse.py's own signal: the series is dropped, never raised past it
    missing = sorted(name for name in found - internal if f"── {name} " not in (errors.__doc__ or ""))
    assert not missing, f"exporter/errors.py's tree lacks {missing}"
