"""The client accepts exactly what botocore's service model accepts, apart from the
documented deviations (``_validation.DEVIATIONS``); property-based, with hypothesis."""

from __future__ import annotations

import re
from typing import Any

import botocore.session
import pytest
from botocore.model import StructureShape
from hypothesis import given, settings
from hypothesis import strategies as st

from sagemaker_async import ValidationError
from sagemaker_async._validation import DEVIATIONS, java_pattern, validate_field

MODEL = botocore.session.get_session().get_service_model("sagemaker-runtime")
_INPUT = MODEL.operation_model("InvokeEndpointAsync").input_shape
assert _INPUT is not None
SHAPE: StructureShape = _INPUT
STRINGS = sorted(n for n, m in SHAPE.members.items() if m.type_name == "string")

# Characters that sit on the rules' edges, mixed into random text.
EDGES = [
    *"aZ09-_.!*'()/:s3htp \t",
    "\r", "\n", "\x00", "\x0b", "\x7f", "\x85", "\xa0", "\u2028", "é", "\U0001f600", "\ud800",
]  # fmt: skip
TEXT = st.text(alphabet=st.one_of(st.sampled_from(EDGES), st.characters()), max_size=40)
LONG = st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "é", "\U0001f600"]), st.integers(0, 1100)
)
PREFIXED = st.builds(
    lambda p, t: p + t, st.sampled_from(["s3://b/", "https://h/", ""]), st.one_of(TEXT, LONG)
)


def utf16(value: str) -> int:
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def model_accepts(field: str, value: str) -> bool:
    """The model's rule (lengths in UTF-16 units, the Java pattern) applied to ``value``."""
    meta = SHAPE.members[field].metadata
    if utf16(value) < meta.get("min", 0) or utf16(value) > meta.get("max", 10**9):
        return False
    pattern = meta.get("pattern")
    return pattern is None or re.fullmatch(java_pattern(pattern), value) is not None


def deviates(field: str, value: str) -> bool:
    """True where DEVIATIONS make the client stricter than the model."""
    member = SHAPE.members[field]
    if member.serialization.get("location") != "header":
        return False
    unsafe = re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", value)
    ascii_only = member.metadata.get("pattern") == r"\p{ASCII}*"
    return unsafe is not None or (ascii_only and not re.fullmatch(r"[\t\x20-\x7e]*", value))


def accepted(field: str, value: Any) -> bool:
    try:
        validate_field(field, value)
    except ValidationError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(STRINGS), st.one_of(TEXT, PREFIXED, LONG))
def test_the_client_accepts_exactly_what_the_model_accepts(field: str, value: str) -> None:
    assert accepted(field, value) == (model_accepts(field, value) and not deviates(field, value))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["RequestTTLSeconds", "InvocationTimeoutSeconds"]), st.integers(-10, 10**6))
def test_integer_ranges_are_the_model_s(field: str, value: int) -> None:
    meta = SHAPE.members[field].metadata
    assert accepted(field, value) == (meta["min"] <= value <= meta["max"])


@pytest.mark.parametrize(
    ("java", "yes", "no"),
    [
        (r"\A\S[\p{Print}]*\z", ["id-1", "\xa0x", "a b"], [" x", "\tx", "a\x7f", "a\n"]),
        (r"\p{ASCII}*", ["", "a\x00\x7f"], ["é"]),
        (r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*", ["a--b"], ["a-", "-a"]),
    ],
)
def test_java_patterns_keep_their_java_meaning(java: str, yes: list[str], no: list[str]) -> None:
    python = java_pattern(java)
    assert all(re.fullmatch(python, v) for v in yes)
    assert not any(re.fullmatch(python, v) for v in no)


def test_every_pattern_of_the_model_is_understood() -> None:
    for member in SHAPE.members.values():
        if "pattern" in member.metadata:
            re.compile(java_pattern(member.metadata["pattern"]))  # raises on an unknown class
    assert len(DEVIATIONS) == 3
