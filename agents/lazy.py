"""Package attributes imported on first use (PEP 562), for nightowl's packages.

`agents`, `triggers` and `scheduler.outbox` each name their public attributes and the
module that holds each; importing the package imports none of them, so a CLI command that
only reads runs does not pay for every trigger kind, the event models or the HTTP sinks.
(Here, in `agents`, because it imports nothing else of nightowl's and the others import it.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `homes` maps each name to its module; a name once
    imported is stored in `namespace` (the package's globals), so the next lookup is an
    ordinary one."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    return __getattr__
