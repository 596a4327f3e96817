"""RedactingFilter: the AWS SDK's debug records without payloads or secrets."""

from __future__ import annotations

import logging

import pytest

from sagemaker_async import RedactingFilter

SDK_MESSAGES = [
    "Making request for OperationModel(name=InvokeEndpointAsync) with params: {'url_path': "
    "'/endpoints/ep/async-invocations', 'headers': {'X-Amzn-SageMaker-Custom-Attributes': "
    "'SECRET', 'User-Agent': 'ua'}, 'body': b'SECRET \\' with a quote'}",
    "Sending http request: <AWSPreparedRequest headers={'Authorization': b'AWS4-HMAC-SHA256 "
    "Credential=AKIA/SECRET, Signature=SECRET', 'X-Amz-Security-Token': b'SECRET'}>",
    "CanonicalRequest:\nPOST\n/endpoints\n\nx-amz-security-token:SECRET\n",
    "StringToSign:\nAWS4-HMAC-SHA256\nSECRET",
    "Response body:\nb'SECRET'",
    "GET https://bucket.s3.amazonaws.com/k?X-Amz-Credential=SECRET&X-Amz-Signature=SECRET",
]


@pytest.mark.parametrize("message", SDK_MESSAGES)
def test_sdk_records_lose_payloads_and_secrets(message: str) -> None:
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, message, (), None)
    assert RedactingFilter().filter(record)
    text = record.getMessage()
    assert "SECRET" not in text and "<redacted>" in text


def test_records_of_other_loggers_pass_unchanged() -> None:
    record = logging.LogRecord("myapp", logging.INFO, __file__, 1, "'body': b'%s'", ("mine",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "'body': b'mine'"
