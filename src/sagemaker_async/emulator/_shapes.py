"""A whole request checked against botocore's service model, with the service's wording.

Every member at every depth: required members, types, enums, patterns, lengths and ranges, as
the model states them (read at run time, never copied). The messages follow AWS's form::

    1 validation error detected: Value 'm5.large' at 'productionVariants.1.member.instanceType'
    failed to satisfy constraint: Member must satisfy enum value set: [ml.t2.medium, ...]

A value of the wrong JSON type is a :class:`ShapeTypeError` (the service answers
SerializationException for those), checked before the constraints.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Mapping
from typing import Any

from .._validation import _utf16_units, java_pattern

__all__ = ["ShapeTypeError", "constraint_errors", "validation_message"]


class ShapeTypeError(ValueError):
    """A member's value has the wrong JSON type (a string where a list belongs...)."""


# Java's \p{X} classes that the sagemaker model uses beyond java_pattern's: Unicode general
# categories by their first letter, and POSIX Alnum (ASCII in Java).
_CATEGORY = re.compile(r"\\p\{([LZNPSM]|Alnum)\}")


_CLASSES_OF_SPACES = {
    "[\\S\\s]": "(?s:.)",
    "[\\s\\S]": "(?s:.)",
    "[\\S]": "[^ \\t\\n\\x0b\\f\\r]",
}


@functools.cache
def _category_ranges(letter: str) -> str:
    """A character-class body holding every code point whose category starts with ``letter``."""
    parts: list[str] = []
    start = None
    for code in range(sys.maxunicode + 2):
        inside = code <= sys.maxunicode and unicodedata.category(chr(code))[0] == letter
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            end = code - 1
            parts.append(f"\\U{start:08x}" + (f"-\\U{end:08x}" if end > start else ""))
            start = None
    return "".join(parts)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    """The pattern in Python's dialect; None for the few it cannot say (they go unchecked)."""
    # Java's \s and \S inside a class, in the only forms the model uses: any character, or
    # anything but Java's (ASCII) white space.
    for java, python in _CLASSES_OF_SPACES.items():
        pattern = pattern.replace(java, python)
    out: list[str] = []
    depth = 0  # inside [...]
    i = 0
    while i < len(pattern):
        match = _CATEGORY.match(pattern, i)
        if match:
            name = match.group(1)
            body = "a-zA-Z0-9" if name == "Alnum" else _category_ranges(name)
            out.append(body if depth else f"[{body}]")
            i = match.end()
            continue
        char = pattern[i]
        step = 2 if char == "\\" else 1
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
        out.append(pattern[i : i + step])
        i += step
    try:
        return re.compile(java_pattern("".join(out)))
    except (ValueError, re.error):
        return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_shown(v)}" for k, v in value.items()) + "}"
    return str(value)


def _value(shape: Any, value: Any) -> str:
    if shape.metadata.get("sensitive"):
        return "Value"  # the service does not repeat a sensitive value
    return f"Value '{_shown(value)}'"


def _string_rules(shape: Any, value: str) -> list[str]:
    meta = shape.metadata
    broken = []
    enum = meta.get("enum")
    if enum and value not in enum:
        broken.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    broken += _bounds(shape, _utf16_units(value), "length")
    pattern = meta.get("pattern")
    compiled = _compiled(pattern) if pattern else None
    if compiled is not None and not compiled.fullmatch(value):
        broken.append(f"Member must satisfy regular expression pattern: {pattern}")
    return broken


def _bounds(shape: Any, size: float, what: str) -> list[str]:
    """The model's min and max, on a length (``what="length"``) or a number (``"value"``)."""
    meta = shape.metadata
    broken = []
    if "min" in meta and size < meta["min"]:
        broken.append(f"Member must have {what} greater than or equal to {meta['min']}")
    if "max" in meta and size > meta["max"]:
        broken.append(f"Member must have {what} less than or equal to {meta['max']}")
    return broken


def _type_error(path: str, expected: str, value: Any) -> ShapeTypeError:
    return ShapeTypeError(
        f"Value at '{path}' is a {type(value).__name__}, where the model has a {expected}."
    )


def _walk(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise _type_error(path, "structure (a JSON object)", value)
        prefix = f"{path}." if path else ""
        for name in shape.required_members:
            if value.get(name) is None:
                errors.append(
                    f"Value null at '{prefix}{_lower_first(name)}' failed to satisfy "
                    "constraint: Member must not be null"
                )
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _walk(member, value[name], prefix + _lower_first(name), errors)
        return
    if kind == "list":
        if not isinstance(value, list):
            raise _type_error(path, "list (a JSON array)", value)
        _fail(errors, shape, value, path, _bounds(shape, len(value), "length"))
        for index, item in enumerate(value, start=1):
            if item is not None:
                _walk(shape.member, item, f"{path}.{index}.member", errors)
        return
    if kind == "map":
        if not isinstance(value, dict):
            raise _type_error(path, "map (a JSON object)", value)
        _fail(errors, shape, value, path, _bounds(shape, len(value), "length"))
        for label, part, items in (
            ("Map keys", shape.key, list(value)),
            ("Map value", shape.value, list(value.values())),
        ):
            unmet: list[str] = []
            for item in items:
                if part.type_name != "string":
                    _walk(part, item, path, errors)
                    continue
                if not isinstance(item, str):
                    raise _type_error(path, "map of strings", item)
                unmet += [r for r in _string_rules(part, item) if r not in unmet]
            if unmet:
                _fail(
                    errors,
                    shape,
                    value,
                    path,
                    [f"{label} must satisfy constraint: [{', '.join(unmet)}]"],
                )
        return
    if kind == "string":
        if not isinstance(value, str):
            raise _type_error(path, "string", value)
        rules = _string_rules(shape, value)
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, "whole number", value)
        rules = _bounds(shape, value, "value")
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(path, "number", value)
        rules = _bounds(shape, value, "value")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _type_error(path, "boolean", value)
        rules = []
    else:  # timestamp, blob: the JSON protocol's numbers and strings, not checked further
        rules = []
    _fail(errors, shape, value, path, rules)


def _fail(errors: list[str], shape: Any, value: Any, path: str, rules: list[str]) -> None:
    errors.extend(
        f"{_value(shape, value)} at '{path}' failed to satisfy constraint: {rule}" for rule in rules
    )


def constraint_errors(shape: Any, params: Mapping[str, Any]) -> list[str]:
    """Every constraint of botocore ``shape`` that ``params`` breaks, in AWS's words.

    Raises:
        ShapeTypeError: a value has the wrong JSON type.
    """
    errors: list[str] = []
    _walk(shape, dict(params), "", errors)
    return errors


def validation_message(errors: list[str]) -> str:
    """AWS's ``N validation error(s) detected: ...; ...`` text for :func:`constraint_errors`."""
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(errors)
