"""The SNS message SageMaker publishes when an async inference completes or fails."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

__all__ = ["MAX_RESPONSE_IN_NOTIFICATION", "build_notification", "iso_millis"]

#: Responses larger than this are left out of notifications (IncludeInferenceResponseIn).
MAX_RESPONSE_IN_NOTIFICATION = 128 * 1024

#: ``responseBody.message`` of a success notification, as the service words it.
SUCCESS_MESSAGE = "Check S3 path location(if configured) or Cloudwatch for additional details."


def iso_millis(moment: dt.datetime) -> str:
    """``2022-01-25T22:46:00.608Z``: the timestamp format of SageMaker's notifications."""
    utc = moment.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def build_notification(
    *,
    region: str,
    endpoint_name: str,
    inference_id: str,
    received_at: dt.datetime,
    completed_at: dt.datetime,
    request_content_type: str | None,
    input_location: str | None,
    request_accept: str | None = None,
    output_location: str | None = None,
    output_content_type: str | None = None,
    failure_location: str | None = None,
    failure_reason: str | None = None,
    response_body: bytes | None = None,
) -> str:
    """The JSON text of a success (``failure_reason is None``) or error notification.

    As the service writes them (captured messages): ``requestParameters`` has ``contentType``
    and ``accept`` only when the request had them; an error notification has no
    ``responseParameters`` (``failure_location`` is accepted and not written). The response
    is added as ``responseBody{content, message, encoding: "BASE64"}`` when given and at most
    :data:`MAX_RESPONSE_IN_NOTIFICATION` bytes.
    """
    del failure_location  # not in the service's error notifications
    failed = failure_reason is not None
    request_parameters: dict[str, Any] = {}
    if request_accept is not None:
        request_parameters["accept"] = request_accept
    if request_content_type is not None:
        request_parameters["contentType"] = request_content_type
    request_parameters["endpointName"] = endpoint_name
    if input_location is not None:
        request_parameters["inputLocation"] = input_location
    message: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": iso_millis(completed_at),
        "receivedTime": iso_millis(received_at),
        "invocationStatus": "Failed" if failed else "Completed",
    }
    if failed:
        message["failureReason"] = failure_reason
    message.update(
        {
            "requestParameters": request_parameters,
        }
    )
    if not failed:
        message["responseParameters"] = {
            "contentType": output_content_type or "application/octet-stream",
            "outputLocation": output_location,
        }
    message.update(
        {
            "inferenceId": inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
    )
    if response_body is not None and len(response_body) <= MAX_RESPONSE_IN_NOTIFICATION:
        message["responseBody"] = {
            "content": base64.b64encode(response_body).decode("ascii"),
            "message": failure_reason if failed else SUCCESS_MESSAGE,
            "encoding": "BASE64",
        }
    return json.dumps(message, separators=(",", ":"))
