"""Every rule of InvokeEndpointAsync is checked before any network call."""

from __future__ import annotations

from typing import Any

import pytest

from sagemaker_async import (
    AsyncInferenceClient,
    PollingConfig,
    RetryConfig,
    SageMakerAsyncError,
    ValidationError,
)

# Port 9 (discard) on loopback: nothing listens, so any network call would fail differently.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
async def offline_client() -> Any:
    client = AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=NOWHERE, s3_endpoint_url=NOWHERE
    )
    yield client
    await client.aclose()


OK: dict[str, Any] = {"input_location": "s3://bucket/key"}

CASES = [
    # (kwargs, field named in the error, words of the rule)
    ({"endpoint_name": ""}, "endpoint_name (EndpointName)", "length 1..63"),
    ({"endpoint_name": "a" * 64}, "endpoint_name (EndpointName)", "length 1..63"),
    ({"endpoint_name": "-leading-dash"}, "endpoint_name (EndpointName)", "must match"),
    ({"endpoint_name": "under_score"}, "endpoint_name (EndpointName)", "must match"),
    ({"endpoint_name": "trailing-"}, "endpoint_name (EndpointName)", "must match"),
    ({"endpoint_name": 5}, "endpoint_name (EndpointName)", "a str"),
    ({"endpoint_name": "ep\n"}, "endpoint_name (EndpointName)", "must match"),
    ({"inference_id": "abc\n"}, "inference_id (InferenceId)", "must match"),
    ({"content_type": "text/csv\n"}, "content_type (ContentType)", "US-ASCII"),
    ({"custom_attributes": "a=1\n"}, "custom_attributes (CustomAttributes)", "US-ASCII"),
    ({"filename": "out.json\n"}, "filename (Filename)", "must match"),
    (
        {"s3_output_path_extension": "a/b\n"},
        "s3_output_path_extension (S3OutputPathExtension)",
        "must match",
    ),
    ({"input_location": "s3://b/k\n"}, "input_location (InputLocation)", "must match"),
    ({"input_location": None}, "body (Body) / input_location (InputLocation)", "exactly one"),
    ({"body": b"x"}, "body (Body) / input_location (InputLocation)", "exactly one"),
    ({"input_location": "ftp://bucket/key"}, "input_location (InputLocation)", "must match"),
    ({"input_location": ""}, "input_location (InputLocation)", "length 1..1024"),
    ({"input_location": "s3://b/" + "k" * 1020}, "input_location (InputLocation)", "1..1024"),
    ({"content_type": "x" * 1025}, "content_type (ContentType)", "at most 1024"),
    ({"content_type": "text/ünïcode"}, "content_type (ContentType)", "US-ASCII"),
    ({"content_type": "a\r\nX-Injected: 1"}, "content_type (ContentType)", "US-ASCII"),
    ({"accept": "y" * 1025}, "accept (Accept)", "at most 1024"),
    ({"accept": "é"}, "accept (Accept)", "US-ASCII"),
    ({"custom_attributes": "z" * 1025}, "custom_attributes (CustomAttributes)", "at most 1024"),
    ({"custom_attributes": "secret\x00"}, "custom_attributes (CustomAttributes)", "US-ASCII"),
    ({"inference_id": ""}, "inference_id (InferenceId)", "length 1..64"),
    ({"inference_id": "i" * 65}, "inference_id (InferenceId)", "length 1..64"),
    ({"inference_id": " leading-space"}, "inference_id (InferenceId)", "must match"),
    ({"inference_id": "tab\there"}, "inference_id (InferenceId)", "must match"),
    ({"request_ttl_seconds": 59}, "request_ttl_seconds (RequestTTLSeconds)", "60..21600"),
    ({"request_ttl_seconds": 21601}, "request_ttl_seconds (RequestTTLSeconds)", "60..21600"),
    ({"request_ttl_seconds": 60.5}, "request_ttl_seconds (RequestTTLSeconds)", "integer"),
    ({"request_ttl_seconds": True}, "request_ttl_seconds (RequestTTLSeconds)", "integer"),
    (
        {"invocation_timeout_seconds": 0},
        "invocation_timeout_seconds (InvocationTimeoutSeconds)",
        "1..3600",
    ),
    (
        {"invocation_timeout_seconds": 3601},
        "invocation_timeout_seconds (InvocationTimeoutSeconds)",
        "1..3600",
    ),
    (
        {"s3_output_path_extension": "s3://bucket"},
        "s3_output_path_extension (S3OutputPathExtension)",
        "must match",
    ),
    (
        {"s3_output_path_extension": "a b"},
        "s3_output_path_extension (S3OutputPathExtension)",
        "must match",
    ),
    (
        {"s3_output_path_extension": "x" * 513},
        "s3_output_path_extension (S3OutputPathExtension)",
        "1..512",
    ),
    (
        {"s3_output_path_extension": ""},
        "s3_output_path_extension (S3OutputPathExtension)",
        "1..512",
    ),
    ({"filename": "two.dots.json"}, "filename (Filename)", "must match"),
    ({"filename": "-dash-first"}, "filename (Filename)", "must match"),
    ({"filename": "f" * 33}, "filename (Filename)", "1..32"),
    ({"filename": ""}, "filename (Filename)", "1..32"),
    ({"body": 123, "input_location": None}, "body (Body)", "bytes or str"),
    ({"polling": {"timeout": 3}}, "polling", "PollingConfig"),
]


@pytest.mark.parametrize(("overrides", "field", "rule"), CASES)
async def test_each_rule_names_field_and_rule(
    offline_client: AsyncInferenceClient, overrides: dict[str, Any], field: str, rule: str
) -> None:
    kwargs = {"endpoint_name": "my-endpoint", **OK, **overrides}
    endpoint = kwargs.pop("endpoint_name")
    with pytest.raises(ValidationError) as info:
        await offline_client.invoke_endpoint_async(endpoint, **kwargs)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, SageMakerAsyncError)
    assert err.field == field
    assert rule in err.rule, err
    assert str(err).startswith(field)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_location": "s3://b/k"},
        {"input_location": "https://b.s3.amazonaws.com/k"},
        {"body": b""},
        {"body": "x" * 128_000},
        {"endpoint_name": "a" * 63},
        {"endpoint_name": "a--b-9"},
        {"inference_id": "x" * 64, "request_ttl_seconds": 60, "invocation_timeout_seconds": 3600},
        {"request_ttl_seconds": 21600, "invocation_timeout_seconds": 1},
        {"s3_output_path_extension": "a/b!_.*'()-c", "filename": "out-put_1.json"},
        {"content_type": "application/json; charset=utf-8", "accept": "*/*"},
    ],
)
def test_valid_values_pass(kwargs: dict[str, Any]) -> None:
    from sagemaker_async._validation import PARAMETER_NAMES, validate_invoke_request

    api = {v: k for k, v in PARAMETER_NAMES.items()}
    fields = {"EndpointName": "ep", **{api[k]: v for k, v in kwargs.items()}}
    if "Body" not in fields and "InputLocation" not in fields:
        fields["InputLocation"] = "s3://b/k"
    if isinstance(fields.get("Body"), str):
        fields["Body"] = fields["Body"].encode()
    validate_invoke_request(fields)


async def test_sensitive_values_stay_out_of_the_error(offline_client: AsyncInferenceClient) -> None:
    with pytest.raises(ValidationError) as info:
        await offline_client.invoke_endpoint_async(
            "ep", input_location="s3://b/k", custom_attributes="token=hunter2\x01"
        )
    assert "hunter2" not in str(info.value)
    assert info.value.value is None


async def test_large_body_without_input_prefix_is_a_clear_error(
    offline_client: AsyncInferenceClient,
) -> None:
    with pytest.raises(ValidationError) as info:
        await offline_client.invoke_endpoint_async("ep", body=b"x" * 128_001)
    assert info.value.field == "body"
    assert "128001 bytes" in str(info.value) and "input_prefix" in str(info.value)


async def test_large_body_and_input_location_is_both_given(
    offline_client: AsyncInferenceClient,
) -> None:
    with pytest.raises(ValidationError, match="both are given"):
        await offline_client.invoke_endpoint_async(
            "ep", body=b"x" * 200_000, input_location="s3://b/k"
        )


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: PollingConfig(initial_delay=0), "PollingConfig.initial_delay"),
        (lambda: PollingConfig(initial_delay=-1), "PollingConfig.initial_delay"),
        (lambda: PollingConfig(max_delay=float("inf")), "PollingConfig.max_delay"),
        (lambda: PollingConfig(multiplier=0.5), "PollingConfig.multiplier"),
        (lambda: PollingConfig(jitter=-0.1), "PollingConfig.jitter"),
        (lambda: PollingConfig(jitter=1.0), "PollingConfig.jitter"),
        (lambda: PollingConfig(timeout=0), "PollingConfig.timeout"),
        (lambda: PollingConfig(initial_delay=5, max_delay=1), "PollingConfig.max_delay"),
        (lambda: PollingConfig(initial_delay="1"), "PollingConfig.initial_delay"),  # type: ignore[arg-type]
        (lambda: RetryConfig(max_attempts=0), "RetryConfig.max_attempts"),
        (lambda: RetryConfig(max_attempts=2.5), "RetryConfig.max_attempts"),  # type: ignore[arg-type]
        (lambda: RetryConfig(initial_delay=float("nan")), "RetryConfig.initial_delay"),
        (lambda: AsyncInferenceClient(input_prefix="bucket/prefix"), "input_prefix"),
        (lambda: AsyncInferenceClient(max_connections=0), "max_connections"),
        (lambda: AsyncInferenceClient(polling=3), "polling"),  # type: ignore[arg-type]
    ],
)
def test_config_is_validated(factory: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        factory()
    assert info.value.field == field


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ("not a dict", "state"),
        ({"version": 2}, "state.version"),
        ({"version": 1}, "state.inference_id"),
        (
            {
                "version": 1,
                "inference_id": "i",
                "endpoint_name": "ep",
                "output_location": "ftp://x",
                "failure_location": "s3://b/f",
            },
            "state.output_location",
        ),
        (
            {
                "version": 1,
                "inference_id": "i",
                "endpoint_name": "ep",
                "output_location": "s3://b/o",
                "failure_location": "s3://b/f",
                "submitted_at": "yesterday",
                "deadline": "2026-01-01T00:00:00+00:00",
            },
            "state.submitted_at",
        ),
        (
            {
                "version": 1,
                "inference_id": "i",
                "endpoint_name": "ep",
                "output_location": "s3://b/o",
                "failure_location": "s3://b/f",
                "submitted_at": "2026-01-01T00:00:00",
                "deadline": "2026-01-01T00:00:00+00:00",
            },
            "state.submitted_at",
        ),
    ],
)
def test_resume_validates_its_state(state: Any, field: str) -> None:
    client = AsyncInferenceClient(region_name="us-east-1")
    with pytest.raises(ValidationError) as info:
        client.resume(state)
    assert info.value.field == field


@pytest.mark.parametrize(
    "location",
    [
        "s3://bucket/key\r",
        "s3://bucket/ke\x0by",
        "s3://bucket/ke\x00y",
        "s3://bucket/ke\u0085y",
        "s3://bucket/ke\u2028y",
        "s3://bucket/" + "\U0001f600" * 510,  # 1,020 characters, 1,032 UTF-16 units
    ],
)
async def test_input_location_rejects_what_the_service_model_rejects(
    offline_client: AsyncInferenceClient, location: str
) -> None:
    """Issue 10, defect 7: these passed, and CR and NUL then failed as HTTPClientError."""
    with pytest.raises(ValidationError) as info:
        await offline_client.invoke_endpoint_async("ep", input_location=location)
    assert info.value.field == "input_location (InputLocation)"


async def test_a_str_body_with_a_lone_surrogate_is_a_validation_error(
    offline_client: AsyncInferenceClient,
) -> None:
    with pytest.raises(ValidationError) as info:
        await offline_client.invoke_endpoint_async("ep", body="ok \ud800 not ok")
    assert info.value.field == "body" and "UTF-8" in str(info.value)


def test_an_absurd_polling_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"PollingConfig\.timeout"):
        PollingConfig(timeout=3e11)  # handle.deadline would raise later


@pytest.mark.parametrize("body", [b"", ""])
async def test_an_empty_body_is_refused_before_the_call(
    offline_client: AsyncInferenceClient, body: bytes | str
) -> None:
    """Issue 9, defect 13: it passed, and the service refused it with a misleading message."""
    with pytest.raises(ValidationError) as info:
        await offline_client.invoke_endpoint_async("ep", body=body)
    assert info.value.field == "body" and "input_location" in info.value.rule


# -- resume() validates like invoke_endpoint_async (issue 18, E) -------------------------------

GOOD_STATE: dict[str, Any] = {
    "version": 1,
    "inference_id": "i-1",
    "endpoint_name": "ep",
    "output_location": "s3://b/out/o.out",
    "failure_location": "s3://b/fail/o-error.out",
    "submitted_at": "2026-01-01T00:00:00+00:00",
    "deadline": "2026-01-01T01:00:00+00:00",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"inference_id": "x" * 5_000_000}, "state.inference_id"),
        ({"inference_id": "x" * 65}, "state.inference_id"),
        ({"inference_id": "line\r\nInjected: header"}, "state.inference_id"),
        ({"inference_id": " leading space"}, "state.inference_id"),
        ({"endpoint_name": "not an endpoint!"}, "state.endpoint_name"),
        ({"output_location": "s3://bucket"}, "state.output_location"),
        ({"output_location": "s3://bucket/"}, "state.output_location"),
        ({"output_location": "s3:///key"}, "state.output_location"),
        ({"failure_location": "s3://bucket"}, "state.failure_location"),
        ({"output_location": "https://b.s3.us-east-1.amazonaws.com/"}, "state.output_location"),
        ({"version": True}, "state.version"),
        ({"version": 1.0}, "state.version"),
        ({"version": "1"}, "state.version"),
    ],
)
def test_resume_validates_each_field_like_an_invoke(change: dict[str, Any], field: str) -> None:
    client = AsyncInferenceClient(region_name="us-east-1")
    with pytest.raises(ValidationError) as info:
        client.resume(GOOD_STATE | change)
    assert info.value.field == field
    assert len(str(info.value)) < 500  # a 5 MB id is not repeated in the message


def test_resume_reads_an_https_location_as_the_s3_uri_it_names() -> None:
    client = AsyncInferenceClient(region_name="us-east-1")
    handle = client.resume(
        GOOD_STATE
        | {
            "output_location": "https://my.bucket.s3.us-east-1.amazonaws.com/out/a%20b.out",
            "failure_location": "https://s3.us-east-1.amazonaws.com/bucket/fail/x-error.out",
        }
    )
    assert handle.output_location == "s3://my.bucket/out/a b.out"
    assert handle.failure_location == "s3://bucket/fail/x-error.out"
    assert handle.to_dict()["output_location"] == "s3://my.bucket/out/a b.out"


def test_one_parser_for_every_s3_location() -> None:
    from sagemaker_async._validation import canonical_s3_uri, parse_s3_uri

    assert parse_s3_uri("s3://b/dir/k") == ("b", "dir/k")
    assert parse_s3_uri("https://b.s3.amazonaws.com/dir/k") == ("b", "dir/k")
    assert parse_s3_uri("https://s3.eu-west-1.amazonaws.com/b/dir/k") == ("b", "dir/k")
    assert parse_s3_uri("s3://b", key=False) == ("b", "")
    assert canonical_s3_uri("https://b.s3.eu-west-1.amazonaws.com/dir/k") == "s3://b/dir/k"
    for bad in ("s3://b", "s3://b/", "s3:///k", "ftp://b/k", "b/k", "https://b.s3.amazonaws.com/"):
        with pytest.raises(ValidationError):
            parse_s3_uri(bad)
