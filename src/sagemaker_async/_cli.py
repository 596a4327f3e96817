"""The ``sagemaker-async`` command: emulate, invoke, wait, batch, demo."""

from __future__ import annotations

import argparse
import asyncio
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


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS (default: the standard AWS configuration)")
    group.add_argument("--region", help="AWS region")
    group.add_argument("--endpoint-url", help="sagemaker-runtime endpoint URL")
    group.add_argument("--s3-endpoint-url", help="S3 endpoint URL")
    group.add_argument(
        "--input-prefix", help="s3://bucket/prefix/ to upload bodies over 128,000 bytes to"
    )


def _client(args: argparse.Namespace) -> AsyncInferenceClient:
    return AsyncInferenceClient(
        region_name=args.region,
        endpoint_url=args.endpoint_url,
        s3_endpoint_url=args.s3_endpoint_url,
        input_prefix=args.input_prefix,
    )


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sagemaker-async",
        description="Amazon SageMaker Asynchronous Inference from the shell, and a local "
        "emulator of async endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("emulate", help="serve emulated async endpoints over an embedded S3")
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="an endpoint and its model: echo, fail, sleep:SECONDS, sentiment, or a "
        "container URL (repeatable)",
    )
    p.add_argument("--config", type=Path, help='JSON file: {"endpoints": [{"name": ...}]}')
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--s3-endpoint-url", help="use this S3 instead of the embedded one")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--instances", type=_positive_int, default=1, help="instance count per endpoint")
    p.add_argument(
        "--max-concurrency", type=int, default=4, help="MaxConcurrentInvocationsPerInstance"
    )

    p = sub.add_parser("invoke", help="submit one inference; print its handle as JSON")
    p.add_argument("endpoint_name")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="the payload, as text")
    body.add_argument("--body-file", type=Path, help="read the payload from a file")
    body.add_argument("--input-location", help="s3:// URI of an uploaded payload")
    p.add_argument("--content-type")
    p.add_argument("--accept")
    p.add_argument("--custom-attributes")
    p.add_argument("--inference-id")
    p.add_argument("--request-ttl-seconds", type=int)
    p.add_argument("--invocation-timeout-seconds", type=int)
    p.add_argument("--s3-output-path-extension")
    p.add_argument("--filename")
    _add_aws_options(p)

    p = sub.add_parser("wait", help="wait on a handle printed by invoke; print or save the result")
    p.add_argument("handle", nargs="?", default="-", help="handle JSON file, or - for stdin")
    p.add_argument("--output", "-o", type=Path, help="save the result here instead of stdout")
    p.add_argument("--timeout", type=_positive_seconds, help="give up after this many seconds")
    _add_aws_options(p)

    p = sub.add_parser("batch", help="run every file of a folder or line of a JSONL file")
    p.add_argument("endpoint_name")
    p.add_argument("source", type=Path, help="a folder (one payload per file) or a .jsonl file")
    p.add_argument("--out", type=Path, required=True, help="results, errors and manifest go here")
    p.add_argument("--content-type")
    p.add_argument("--accept")
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
    p.add_argument("--no-progress", action="store_true")
    _add_aws_options(p)

    p = sub.add_parser("demo", help="a batch through a local emulated endpoint, no AWS needed")
    p.add_argument(
        "--count", type=_positive_int, default=300, help="inferences to run (default 300)"
    )
    p.add_argument("--out", type=Path, help="where results go (default: a temp folder)")
    p.add_argument("--no-progress", action="store_true")
    return parser


async def _invoke(args: argparse.Namespace) -> int:
    payload: bytes | str | None = args.body
    if args.body_file is not None:
        payload = args.body_file.read_bytes()
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
    source = sys.stdin if args.handle == "-" else open(args.handle)  # noqa: ASYNC230, SIM115
    with source:
        text = source.read()
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
        args.output.write_bytes(result.body)
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


async def _batch(args: argparse.Namespace) -> int:
    skipped: list[str] = []
    items = read_items(args.source, exclude=args.out, skipped=skipped)
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


def _print_summary(summary: BatchSummary, out: Path, *, interrupted: bool = False) -> None:
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
        "manifest": str(out / "manifest.jsonl"),
    }
    if summary.stopped:
        report["stopped"] = summary.stopped
    if interrupted:
        report["interrupted"] = True
    print(json.dumps(report), flush=True)


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    await run_demo(
        count=args.count, out_dir=args.out, stdout=sys.stdout, progress=not args.no_progress
    )
    return 0


async def _emulate(args: argparse.Namespace) -> int:
    from .emulator import EndpointConfig, parse_endpoint_spec, serve

    endpoints: list[EndpointConfig] = []
    options: dict[str, Any] = {}
    if args.config is not None:
        config = json.loads(args.config.read_text())
        endpoints += [EndpointConfig(**e) for e in config.pop("endpoints", [])]
        options.update(config)
    endpoints += [
        parse_endpoint_spec(
            spec,
            instance_count=args.instances,
            max_concurrent_invocations_per_instance=args.max_concurrency,
        )
        for spec in args.endpoint
    ]
    if not endpoints:
        raise ValidationError(
            "--endpoint", "no endpoint given", "--endpoint NAME=MODEL or --config"
        )
    options.setdefault("host", args.host)
    options.setdefault("port", args.port)
    options.setdefault("region", args.region)
    if args.s3_endpoint_url:
        options.setdefault("s3_endpoint_url", args.s3_endpoint_url)
    # Stop cleanly on SIGTERM and SIGINT, even where SIGINT was ignored by whoever started us.
    loop, main_task = asyncio.get_running_loop(), asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        await serve(endpoints, **options)
    except asyncio.CancelledError:
        print("# sagemaker-async emulator stopped", file=sys.stderr)
    return 0


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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_COMMANDS[args.command](args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
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
