"""Each wing's errors meant for people hang from one root, drawn as a tree in its errors.py docstring."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def undrawn_errors(
    package: ModuleType, root: type[Exception], ignore: frozenset[str] = frozenset()
) -> list[str]:
    """The subclasses of `root` defined in `package` (every module imported, __main__ aside) that the tree
    in the docstring of the package's errors module does not draw as a `── Name ` line."""
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    tree = importlib.import_module(package.__name__ + ".errors").__doc__ or ""
    pending, found = [root], set()
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__.split(".")[0] == package.__name__:
                found.add(subclass.__name__)
                pending.append(subclass)
    return sorted(name for name in found - ignore if f"── {name} " not in tree)
