"""Keeping payloads and secrets out of logs, the AWS SDK's DEBUG logs included."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter"]

_REDACTED = "<redacted>"
# Loggers of the AWS SDK stack whose DEBUG records print requests and answers.
_SDK_LOGGERS = ("botocore", "aiobotocore", "boto3", "urllib3", "aiohttp")
# Keys whose values (in printed dicts, headers or params) must not be shown.
_SECRET_KEYS = (
    r"authorization|x-amz-security-token|x-amzn-sagemaker-custom-attributes|"
    r"customattributes|body|sessiontoken|aws_session_token|secretaccesskey|"
    r"aws_secret_access_key|x-amz-sdk-checksum-algorithm|x-amz-checksum-crc32"
)
_KEYED_VALUE = re.compile(
    r"""(['"]?(?:""" + _SECRET_KEYS + r""")['"]?\s*[:=]\s*)(b?)(['"])(?:\\.|(?!\3).)*\3""",
    re.IGNORECASE | re.DOTALL,
)
_QUERY_SECRET = re.compile(
    r"(X-Amz-(?:Security-Token|Signature|Credential)=)[^&\s'\"]+", re.IGNORECASE
)
# Records that are a body or a signature computation as a whole.
_WHOLE = re.compile(
    r"^(Response body:|Request body:|CanonicalRequest:|StringToSign:|Signature:)", re.IGNORECASE
)


def redact(message: str) -> str:
    """``message`` without bodies, CustomAttributes, credentials, tokens or signatures."""
    whole = _WHOLE.match(message)
    if whole:
        return f"{whole.group(1)} {_REDACTED}"
    message = _KEYED_VALUE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{_REDACTED}{m.group(3)}", message
    )
    return _QUERY_SECRET.sub(rf"\1{_REDACTED}", message)


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs the AWS SDK's records of payloads and secrets.

    botocore's DEBUG records print request parameters, headers and bodies: the inference's
    payload, its CustomAttributes, the session token, signatures. This library never logs
    them itself; to turn the SDK's DEBUG logs on safely, attach the filter to your handlers::

        handler = logging.StreamHandler()
        handler.addFilter(sagemaker_async.RedactingFilter())
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])

    (The ``sagemaker-async`` command does this for ``-vv``.) Records of other loggers pass
    unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place if it comes from the AWS SDK; always keep it."""
        if record.name.startswith(_SDK_LOGGERS):
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True
