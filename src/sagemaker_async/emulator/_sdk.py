"""A SageMaker Python SDK ``Session`` wired to the emulator (the SDK is not a dependency)."""

from __future__ import annotations

from typing import Any

from ._app import ACCOUNT_ID
from ._local import LocalAsyncEndpoint

__all__ = ["sagemaker_session"]


def sagemaker_session(
    emulator: LocalAsyncEndpoint,
    *,
    default_bucket: str | None = None,
    poll_seconds: float = 1.0,
) -> Any:
    """A ``sagemaker.Session`` whose every AWS call goes to ``emulator`` or its moto.

    Every boto3 client and resource the session makes goes to the emulator (``sagemaker``,
    ``sagemaker-runtime``) or to its moto (S3, STS and the rest), whatever endpoint URL the SDK
    asks for: the SDK builds its STS client with ``https://sts.<region>.amazonaws.com``, which
    the environment alone cannot redirect. The account id is the emulator's (123456789012),
    the default bucket is ``default_bucket`` (default: the emulator's own bucket, which exists),
    and endpoint deployments are polled every ``poll_seconds`` instead of the SDK's 30 s.

    Needs the ``sagemaker`` package (v2), which only the ``sdk`` extra installs
    (``pip install "sagemaker-async[sdk]"``).

    Raises:
        ModuleNotFoundError: the SageMaker Python SDK is not installed.
    """
    import boto3
    from sagemaker.session import Session

    access_key, secret_key = emulator.credentials
    moto = emulator.env["AWS_ENDPOINT_URL"]
    endpoints = {
        "sagemaker": emulator.url,
        "sagemaker-runtime": emulator.url,
        "s3": emulator.s3_endpoint_url,
        "sns": emulator.sns_endpoint_url,
        "sqs": emulator.sqs_endpoint_url,
    }

    class _LocalBoto3Session(boto3.Session):  # type: ignore[misc]
        """Every client and resource on 127.0.0.1, whatever endpoint_url the caller gives."""

        def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
            kwargs["endpoint_url"] = endpoints.get(service_name, moto)
            return super().client(service_name, *args, **kwargs)

        def resource(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
            kwargs["endpoint_url"] = endpoints.get(service_name, moto)
            return super().resource(service_name, *args, **kwargs)

    class _EmulatorSession(Session):  # type: ignore[misc]
        """The SDK's Session, with the emulator's account and a short deployment poll."""

        def account_id(self) -> str:
            return ACCOUNT_ID

        def wait_for_endpoint(
            self, endpoint: str, poll: float = poll_seconds, live_logging: bool = False
        ) -> Any:
            return super().wait_for_endpoint(
                endpoint, poll=min(poll, poll_seconds), live_logging=live_logging
            )

    boto_session = _LocalBoto3Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=emulator.region,
    )
    return _EmulatorSession(
        boto_session=boto_session,
        sagemaker_client=boto_session.client("sagemaker"),
        sagemaker_runtime_client=boto_session.client("sagemaker-runtime"),
        default_bucket=default_bucket or emulator.bucket,
    )
