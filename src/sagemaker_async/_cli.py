"""The ``sagemaker-async`` command: emulate, invoke, wait, batch, demo."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._batch import BatchSummary, ProgressBar, read_items, run_batch
from ._client import AsyncInferenceClient
from ._errors import (
    InferenceFailedError,
    InferenceTimeoutError,
    SageMakerAsyncError,
    ValidationError,
)
from ._logs import RedactingFilter
from ._validation import MAX_INLINE_BODY

__all__ = ["main"]


def _positive_int(text: str) -> int:
    """Argparse type: an int >= 1 (0 would wait forever, a negative one means nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (rule: >= 1)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range (rule: a whole number >= 1)")
    return value


def _positive_seconds(text: str) -> float:
    """Argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (rule: seconds > 0)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range (rule: finite seconds > 0)")
    return value


def _add_aws_options(parser: argparse.ArgumentParser, *, submits: bool = True) -> None:
    group = parser.add_argument_group("AWS (default: the standard AWS configuration)")
    group.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION or the profile's)")
    if submits:
        group.add_argument(
            "--endpoint-url",
            help="sagemaker-runtime endpoint URL (default: AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, "
            "or AWS's)",
        )
    group.add_argument(
        "--s3-endpoint-url", help="S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, or AWS's)"
    )
    if submits:
        group.add_argument(
            "--input-prefix",
            help="s3://bucket/prefix/ to upload bodies over 128,000 bytes to (default: none; "
            "such bodies are refused)",
        )


def _read_file(option: str, path: Path, rule: str) -> bytes:
    """``path``'s bytes; an error naming ``option`` and ``rule`` if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(
            option, f"{path} cannot be read ({exc.strerror or exc})", rule
        ) from None


def _output_folder(option: str, path: Path) -> None:
    """Make the folder ``path`` (an earlier run's may be there); an error naming ``option``."""
    rule = "a folder: a new one, or an earlier run's"
    if path.exists() and not path.is_dir():
        raise ValidationError(option, f"{path} is a file", rule)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(
            option, f"{path} cannot be made ({exc.strerror or exc})", rule
        ) from None


def _client(args: argparse.Namespace) -> AsyncInferenceClient:
    return AsyncInferenceClient(
        region_name=args.region,
        endpoint_url=getattr(args, "endpoint_url", None),
        s3_endpoint_url=args.s3_endpoint_url,
        input_prefix=getattr(args, "input_prefix", None),
    )


def _command(
    sub: Any, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand with a description, examples, and ``-v`` accepted after its name too."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="Examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log progress to stderr; -vv adds the AWS SDK's debug log, redacted (also "
        "accepted before the command)",
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sagemaker-async",
        description="Amazon SageMaker Asynchronous Inference from the shell, and a local "
        "emulator of async endpoints. 'sagemaker-async COMMAND --help' describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress to stderr; -vv adds the AWS SDK's debug log (payloads, "
        "CustomAttributes and credentials redacted)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "emulate",
        "serve emulated async endpoints over an embedded S3",
        "Serve emulated SageMaker async endpoints on 127.0.0.1, over an embedded S3 (moto), "
        "until Ctrl-C. Prints the environment variables that point AWS SDKs at it.",
        "  sagemaker-async emulate --endpoint my-endpoint=echo\n"
        "  sagemaker-async emulate --endpoint slow=sleep:2 --instances 2 --max-concurrency 8\n"
        "  sagemaker-async emulate      # no endpoint yet: create them with the SageMaker API\n",
    )
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="an endpoint and its model: echo, fail, sleep:SECONDS, sentiment, or a "
        "container URL (repeatable)",
    )
    p.add_argument("--config", type=Path, help='JSON file: {"endpoints": [{"name": ...}]}')
    p.add_argument("--host", help="address to bind (default 127.0.0.1; wins over --config's)")
    p.add_argument("--port", type=_port, help="port (default: a free one; wins over --config's)")
    p.add_argument("--s3-endpoint-url", help="use this S3 instead of the embedded one")
    p.add_argument("--region", help="region clients sign for (default us-east-1)")
    p.add_argument(
        "--instances", type=_positive_int, default=1, help="instance count per endpoint (default 1)"
    )
    p.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=4,
        help="MaxConcurrentInvocationsPerInstance (default 4)",
    )
    p.add_argument(
        "--no-list-bucket",
        action="store_true",
        help="the embedded S3 answers 403 for a missing key and for listings, as S3 does "
        "without s3:ListBucket",
    )

    p = _command(
        sub,
        "invoke",
        "submit one inference; print its handle as JSON",
        "Submit one inference with InvokeEndpointAsync and print its handle (JSON) at once; "
        "'wait' turns the handle into the result.",
        "  sagemaker-async invoke my-endpoint --body '{\"x\": 1}' --content-type "
        "application/json > handle.json\n"
        "  sagemaker-async invoke my-endpoint --input-location s3://bucket/in/payload.csv\n",
    )
    p.add_argument("endpoint_name", help="the async endpoint's name")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="the payload, as text")
    body.add_argument("--body-file", type=Path, help="read the payload from a file")
    body.add_argument("--input-location", help="s3:// URI of an uploaded payload")
    p.add_argument("--content-type", help="the payload's MIME type (ContentType)")
    p.add_argument("--accept", help="the MIME type wanted for the result (Accept)")
    p.add_argument("--custom-attributes", help="passed to the model as is (CustomAttributes)")
    p.add_argument("--inference-id", help="the InferenceId (default: a new UUID)")
    p.add_argument(
        "--request-ttl-seconds",
        type=_positive_int,
        help="how long the request may wait in the queue (default 21600, the service's)",
    )
    p.add_argument(
        "--invocation-timeout-seconds",
        type=_positive_int,
        help="how long the model may run (default 900, the service's)",
    )
    p.add_argument("--s3-output-path-extension", help="a path under the endpoint's S3OutputPath")
    p.add_argument("--filename", help="the output object's name (Filename)")
    _add_aws_options(p)

    p = _command(
        sub,
        "wait",
        "wait on a handle printed by invoke; print or save the result",
        "Wait for the result of a handle printed by 'invoke' (a file, or stdin); print it, "
        "or save it with -o. On --timeout the handle is printed again, to wait later.",
        "  sagemaker-async wait handle.json -o result.json\n"
        "  sagemaker-async invoke my-endpoint --body hi | sagemaker-async wait --timeout 60\n",
    )
    p.add_argument("handle", nargs="?", default="-", help="handle JSON file, or - for stdin")
    p.add_argument("--output", "-o", type=Path, help="save the result here instead of stdout")
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        help="give up after this many seconds (exit 3) (default: the handle's own deadline)",
    )
    _add_aws_options(p, submits=False)

    p = _command(
        sub,
        "batch",
        "run every file of a folder or line of a JSONL file",
        "Run every file of a folder, or every line of a JSONL file, through an endpoint. "
        "Results go to OUT/results, failures to OUT/errors, and a manifest records every "
        "step: rerun the same command to resume an interrupted run. JSONL lines must be "
        "JSON unless --content-type says otherwise (then each line is sent as raw text).",
        "  sagemaker-async batch my-endpoint requests.jsonl --out run1 --content-type "
        "application/json\n"
        "  sagemaker-async batch my-endpoint images/ --out run2 --content-type image/png\n",
    )
    p.add_argument("endpoint_name", help="the async endpoint's name")
    p.add_argument(
        "source",
        help="a folder (one payload per file), a .jsonl file, or s3://bucket/prefix/ (one "
        "payload per object, sent by InputLocation)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="results, errors and manifest go here: a folder, or s3://bucket/prefix/ with an "
        "s3:// source",
    )
    p.add_argument("--content-type", help="every payload's MIME type (ContentType)")
    p.add_argument("--accept", help="the MIME type wanted for the results (Accept)")
    p.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=256,
        help="inferences submitted and not yet finished, at most (default 256)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        help="stop waiting after this many seconds; unfinished items resume on a rerun "
        "(default: wait until each inference's own deadline, up to about 7 h)",
    )
    p.add_argument(
        "--lease",
        type=_positive_seconds,
        default=300.0,
        help="with an s3:// source: how long a process's claims hold without its heartbeat "
        "(renewed every quarter of it); a process that dies leaves its items to the others "
        "after this (default 300)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_aws_options(p)

    p = _command(
        sub,
        "demo",
        "a batch through a local emulated endpoint, no AWS needed",
        "Run a batch through a local emulated endpoint over an in-memory S3, and report "
        "latency and the S3 requests it took. Needs no AWS account.",
        "  sagemaker-async demo\n  sagemaker-async demo --count 1000 --out demo-results\n",
    )
    p.add_argument(
        "--count", type=_positive_int, default=300, help="inferences to run (default 300)"
    )
    p.add_argument(
        "--out", type=Path, help="where results go, a new folder (default: a temp folder)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


async def _invoke(args: argparse.Namespace) -> int:
    payload: bytes | str | None = args.body
    if args.body_file is not None:
        payload = _read_file("--body-file", args.body_file, "a file holding the payload")
    if payload is not None and len(payload) > MAX_INLINE_BODY and args.input_prefix is None:
        raise ValidationError(
            "--body-file" if args.body_file is not None else "--body",
            f"is {len(payload)} bytes, more than the {MAX_INLINE_BODY} bytes sent inline",
            "pass --input-prefix s3://bucket/prefix/ to upload it first, or upload it yourself "
            "and pass --input-location",
        )
    async with _client(args) as client:
        handle = await client.invoke_endpoint_async(
            args.endpoint_name,
            body=payload,
            input_location=args.input_location,
            content_type=args.content_type,
            accept=args.accept,
            custom_attributes=args.custom_attributes,
            inference_id=args.inference_id,
            request_ttl_seconds=args.request_ttl_seconds,
            invocation_timeout_seconds=args.invocation_timeout_seconds,
            s3_output_path_extension=args.s3_output_path_extension,
            filename=args.filename,
        )
        print(json.dumps(handle.to_dict()))
    return 0


async def _wait(args: argparse.Namespace) -> int:
    if args.handle == "-":
        text = sys.stdin.read()
    else:
        rule = "a file holding a handle that invoke printed, or - for stdin"
        text = _read_file("handle", Path(args.handle), rule).decode(errors="replace")
    if args.output is not None and not args.output.parent.is_dir():
        raise ValidationError(
            "--output", f"{args.output.parent} is not a folder", "a file in an existing folder"
        )
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("handle", f"is not JSON ({exc})", "the output of invoke") from None
    async with _client(args) as client:
        handle = client.resume(state)
        reporter = asyncio.create_task(_report_s3_trouble(client))
        try:
            result = await handle.result(timeout=args.timeout)
        except InferenceTimeoutError as exc:
            if exc.deadline_exceeded:
                raise
            print(json.dumps(handle.to_dict()))  # so that a piped handle is not lost
            print(
                f"timed out after {args.timeout:g} s; the handle is printed on stdout: pass "
                "it to wait again to resume",
                file=sys.stderr,
            )
            return 3
        finally:
            reporter.cancel()
    if args.output is not None:
        try:
            args.output.write_bytes(result.body)
        except OSError as exc:
            raise ValidationError(
                "--output",
                f"{args.output} cannot be written ({exc.strerror or exc}); the handle is still "
                "valid: wait again with another --output",
                "a file in an existing folder",
            ) from None
        print(f"saved {len(result.body)} bytes to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(result.body)
        sys.stdout.flush()
    return 0


async def _report_s3_trouble(client: AsyncInferenceClient, every: float = 1.0) -> None:
    """While S3 reads keep failing, say so on stderr (once per new reason): not a silent hang."""
    said = ""
    while True:
        await asyncio.sleep(every)
        error = client.last_s3_error
        text = f"{error.code}: {error}" if error is not None else ""
        if text and text != said:
            print(f"still waiting: S3 reads fail ({text}); retrying", file=sys.stderr)
        said = text


def _in_s3(args: argparse.Namespace) -> bool:
    """True for a batch over S3; refuses a local source with an S3 ``--out`` and the reverse."""
    source: bool = args.source.startswith("s3://")
    out: bool = args.out.startswith("s3://")
    if source != out:
        raise ValidationError(
            "--out" if out else "source",
            f"{args.out if out else args.source} is in S3 while "
            f"{'the source' if out else '--out'} is local",
            "both local (a folder or JSONL file, and a folder), or both s3://bucket/prefix/",
        )
    return source


async def _batch(args: argparse.Namespace) -> int:
    if _in_s3(args):
        return await _s3_batch(args)
    args.source, args.out = Path(args.source), Path(args.out)
    skipped: list[str] = []
    items = read_items(args.source, exclude=args.out, skipped=skipped)
    if args.source.is_file() and (args.content_type is None or "json" in args.content_type):
        for item in items:  # each line is a payload; as JSON, it must parse
            try:
                json.loads(item.body)
            except ValueError as exc:
                line = int(item.key.removeprefix("line-"))
                raise ValidationError(
                    "source",
                    f"line {line} of {args.source} is not JSON ({exc})",
                    "one JSON value per line, or --content-type text/plain (or another "
                    "type) to send each line as raw text",
                ) from None
    large = [item.key for item in items if len(item.body) > MAX_INLINE_BODY]
    if large and args.input_prefix is None:
        raise ValidationError(
            "source",
            f"{len(large)} item(s) are over {MAX_INLINE_BODY} bytes (first: {large[0]})",
            "pass --input-prefix s3://bucket/prefix/ to upload them first",
        )
    _output_folder("--out", args.out)
    if skipped:
        print(
            f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of "
            f"{args.source}: " + ", ".join(skipped),
            file=sys.stderr,
        )
    summary = BatchSummary()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGINT, task.cancel)  # Ctrl-C: the summary, then exit 130
    try:
        async with _client(args) as client:
            await run_batch(
                client,
                args.endpoint_name,
                items,
                args.out,
                content_type=args.content_type,
                accept=args.accept,
                max_in_flight=args.max_in_flight,
                progress=None if args.no_progress else ProgressBar(),
                timeout=args.timeout,
                summary=summary,
            )
    except asyncio.CancelledError:  # Ctrl-C: say where the run stands, then stop
        _print_summary(summary, args.out, interrupted=True)
        print(
            "interrupted: rerun the same command to resume (finished items are kept, "
            "submitted ones are waited for, the rest are submitted)",
            file=sys.stderr,
        )
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    _print_summary(summary, args.out)
    if summary.stopped:
        print(f"stopped: {summary.stopped}", file=sys.stderr)
    finished = summary.succeeded + summary.skipped
    return 0 if finished == summary.total and summary.failed == 0 else 1


async def _s3_batch(args: argparse.Namespace) -> int:
    from ._s3batch import MANIFEST, S3BatchPlan, run_s3_batch

    plan = S3BatchPlan.of(  # checked before any call
        args.source, args.out, args.lease, names=("source", "--out", "--lease")
    )
    summary = BatchSummary()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    manifest = plan.out + MANIFEST
    try:
        async with _client(args) as client:
            await run_s3_batch(
                client,
                args.endpoint_name,
                args.source,
                args.out,
                lease=args.lease,
                content_type=args.content_type,
                accept=args.accept,
                max_in_flight=args.max_in_flight,
                progress=None if args.no_progress else ProgressBar(shared=True),
                timeout=args.timeout,
                summary=summary,
            )
    except asyncio.CancelledError:
        _print_summary(summary, manifest, interrupted=True)
        print("interrupted: rerun the same command to go on", file=sys.stderr)
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    _print_summary(summary, manifest)
    if summary.total == 0:
        print(f"no objects under {args.source}: nothing to run", file=sys.stderr)
    if summary.stopped:
        print(f"stopped: {summary.stopped}", file=sys.stderr)
    finished = summary.succeeded + summary.skipped
    return 0 if finished == summary.total and summary.failed == 0 else 1


def _print_summary(summary: BatchSummary, out: Path | str, *, interrupted: bool = False) -> None:
    report: dict[str, object] = {
        "total": summary.total,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "resumed": summary.resumed,
        "resubmitted": summary.resubmitted,
        "duplicates": summary.duplicates,
        "not_submitted": summary.not_submitted,
        "unfinished": summary.unfinished,
        "manifest": out if isinstance(out, str) else str(out / "manifest.jsonl"),
    }
    if summary.stopped:
        report["stopped"] = summary.stopped
    if interrupted:
        report["interrupted"] = True
    print(json.dumps(report), flush=True)


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if args.out is not None and (args.out / "manifest.jsonl").exists():
        raise ValidationError(
            "--out",
            f"{args.out} holds an earlier demo run, which cannot resume: its inferences "
            "lived in that run's in-memory S3, gone now",
            "another --out, or none (a new temporary folder)",
        )
    if args.out is not None:
        _output_folder("--out", args.out)

    await run_demo(
        count=args.count, out_dir=args.out, stdout=sys.stdout, progress=not args.no_progress
    )
    return 0


def _read_emulator_config(path: Path) -> tuple[list[Any], dict[str, Any]]:
    """``--config``: endpoints and LocalAsyncEndpoint options, each problem one clear error."""
    import dataclasses
    import inspect

    from .emulator import EndpointConfig, LocalAsyncEndpoint

    where = f"--config {path}"
    shape = '{"endpoints": [{"name": "ep", "model": "echo"}], "port": 8080}'
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValidationError(where, f"cannot be read ({exc.strerror or exc})", shape) from None
    except json.JSONDecodeError as exc:
        raise ValidationError(
            where, f"is not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})", shape
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(where, "must be a JSON object", shape)
    options_known = set(inspect.signature(LocalAsyncEndpoint).parameters) - {"endpoints"}
    for key in data:
        if key != "endpoints" and key not in options_known:
            raise ValidationError(
                where,
                f"unknown key {key!r}",
                f"one of endpoints, {', '.join(sorted(options_known))}",
            )
    specs = data.pop("endpoints", [])
    if not isinstance(specs, list):
        raise ValidationError(f"{where}: endpoints", "must be a list", shape)
    fields = {f.name: f for f in dataclasses.fields(EndpointConfig)}
    endpoints = []
    for index, spec in enumerate(specs):
        at = f"{where}: endpoints[{index}]"
        if not isinstance(spec, dict):
            raise ValidationError(at, "must be a JSON object", '{"name": "ep", "model": "echo"}')
        for key, value in spec.items():
            if key not in fields:
                raise ValidationError(
                    at, f"unknown key {key!r}", f"one of {', '.join(sorted(fields))}"
                )
            wanted = {"instance_count": int, "max_concurrent_invocations_per_instance": int}
            if key in wanted and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValidationError(f"{at}.{key}", f"{value!r} is not a whole number", "an int")
        if isinstance(spec.get("include_inference_response_in"), list):
            spec["include_inference_response_in"] = tuple(spec["include_inference_response_in"])
        try:
            endpoints.append(EndpointConfig(**spec))
        except TypeError as exc:  # a missing name, a value of the wrong type
            raise ValidationError(at, str(exc), '{"name": "ep", "model": "echo"}') from None
    return endpoints, data


def _port(text: str) -> int:
    """Argparse type: a TCP port, 0 for a free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (rule: 0..65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is out of range (rule: 0..65535)")
    return value


async def _emulate(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .emulator import EndpointConfig, parse_endpoint_spec, serve

    endpoints: list[EndpointConfig] = []
    options: dict[str, Any] = {}
    if args.config is not None:
        endpoints, options = _read_emulator_config(args.config)
    endpoints += [
        parse_endpoint_spec(
            spec,
            instance_count=args.instances,
            max_concurrent_invocations_per_instance=args.max_concurrency,
        )
        for spec in args.endpoint
    ]
    if args.no_list_bucket:
        if args.s3_endpoint_url:
            raise ValidationError(
                "--no-list-bucket",
                "applies to the embedded S3 only, and --s3-endpoint-url was given",
                "one of the two",
            )
        options["list_bucket_allowed"] = False
    # Explicit options win over the config file's; the defaults come last.
    for name, default in (("host", "127.0.0.1"), ("port", 0), ("region", "us-east-1")):
        given = getattr(args, name)
        options[name] = given if given is not None else options.get(name, default)
    if args.s3_endpoint_url:
        options["s3_endpoint_url"] = args.s3_endpoint_url
    # Stop cleanly on SIGTERM and SIGINT, even where SIGINT was ignored by whoever started us.
    # The first one stops the servers; the close then runs to its end, whatever comes next
    # (a second Ctrl-C, a supervisor's SIGTERM), and main() says "stopped" once it is over.
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(serve(endpoints, **options), name="sagemaker-async emulate")
    stop_asked = False

    def stop() -> None:
        nonlocal stop_asked
        if not stop_asked:
            stop_asked = True
            serving.cancel()
            # Later signals are ignored by the process itself until it exits: the loop's
            # close would give them back their default action, and a SIGTERM during the
            # interpreter's exit would kill it (exit -15) after a clean close.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await serving
    except asyncio.CancelledError:
        if not stop_asked:
            raise
    except (BotoCoreError, ClientError) as exc:
        url = options.get("s3_endpoint_url", "the embedded S3")
        raise ValidationError(
            "--s3-endpoint-url", f"{url} cannot be used ({exc})", "a reachable S3 endpoint"
        ) from None
    except OSError as exc:
        address = f"{options['host']}:{options['port']}"
        if exc.errno == errno.EADDRINUSE:
            raise ValidationError("--port", f"{address} is in use", "a free port, or 0") from None
        raise ValidationError(
            "--host",
            f"cannot listen on {address} ({exc.strerror or exc})",
            "an address of this machine, such as 127.0.0.1",
        ) from None
    return 0


# Modules that only an extra installs: a command that needs one says which extra, in a line.
_EXTRAS = {"moto": "emulator", "werkzeug": "emulator", "flask": "emulator"}


def _missing_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """The one-line error for a module an extra installs; None for any other module."""
    module = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(module)
    if extra is None:
        return None
    return (
        f"sagemaker-async {command} needs {module}, from the {extra} extra: "
        f'pip install "sagemaker-async[{extra}]" (from a clone: pip install ".[{extra}]")'
    )


_COMMANDS = {
    "emulate": _emulate,
    "invoke": _invoke,
    "wait": _wait,
    "batch": _batch,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sagemaker-async`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())  # never a payload, CustomAttributes or a secret
    levels = {0: logging.WARNING, 1: logging.INFO}
    logging.basicConfig(
        level=levels.get(args.verbose, logging.DEBUG),
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    try:
        status = asyncio.run(_COMMANDS[args.command](args))
        if args.command == "emulate":  # only now is it true: servers, loop and threads are done
            print("# sagemaker-async emulator stopped", file=sys.stderr, flush=True)
        return status
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except ModuleNotFoundError as exc:
        message = _missing_extra(args.command, exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except InferenceFailedError as exc:
        print(f"inference failed: {exc.message}", file=sys.stderr)
        return 1
    except InferenceTimeoutError as exc:
        print(f"timed out: {exc}", file=sys.stderr)
        return 3
    except (SageMakerAsyncError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
