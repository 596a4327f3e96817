"""Public names say where they live: ``sagemaker_async.InferenceFailedError``, as in httpx.

Reprs, tracebacks, pickles and docs then show the path users import from, not the private
module that defines the name.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Mapping
from types import FunctionType

__all__ = ["publish"]


def publish(module: str, names: Iterable[str], namespace: Mapping[str, object]) -> None:
    """Set ``__module__`` to *module* on the classes and functions among *names*.

    Only on those defined in a private module below *module*: constants, type aliases and the
    version string have no ``__module__`` of their own, and a re-exported foreign object keeps
    its own. A class's string annotations are evaluated first, in the module that defines it,
    because ``typing.get_type_hints`` (dataclasses, pydantic, documentation tools) looks names
    up in the module that ``__module__`` names.
    """
    for name in names:
        obj = namespace[name]
        if not isinstance(obj, (type, FunctionType)):
            continue
        if not obj.__module__.startswith(f"{module}."):
            continue
        if isinstance(obj, type) and inspect.get_annotations(obj):
            # A name that only type checkers import fails here as in get_type_hints already.
            with contextlib.suppress(Exception):
                obj.__annotations__ = inspect.get_annotations(obj, eval_str=True)
        obj.__module__ = module
