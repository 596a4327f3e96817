"""The ``sagemaker-async`` command, run as a subprocess against an emulator in this process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint

CLI = [sys.executable, "-m", "sagemaker_async._cli"]


async def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def emulator(local_async_endpoint_factory: Any) -> LocalAsyncEndpoint:
    endpoint: LocalAsyncEndpoint = await local_async_endpoint_factory(
        [
            EndpointConfig("echo", model="echo"),
            EndpointConfig("broken", model="fail"),
            EndpointConfig(
                "slow",
                model="sleep:0.4",
                instance_count=1,
                max_concurrent_invocations_per_instance=5,
            ),
        ]
    )
    return endpoint


async def test_invoke_then_wait(emulator: LocalAsyncEndpoint, tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "invoke",
        "echo",
        "--body",
        '{"hello": "cli"}',
        "--content-type",
        "application/json",
        env=emulator.env,
    )
    assert code == 0, err
    handle = json.loads(out)
    assert handle["endpoint_name"] == "echo" and handle["output_location"].startswith("s3://")
    code, out, err = await run_cli("wait", env=emulator.env, stdin=out.encode())
    assert code == 0, err
    assert json.loads(out) == {"hello": "cli"}
    handle_file = tmp_path / "handle.json"
    handle_file.write_text(json.dumps(handle))
    code, _, err = await run_cli(
        "wait", str(handle_file), "-o", str(tmp_path / "r.json"), env=emulator.env
    )
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text()) == {"hello": "cli"}


async def test_wait_reports_a_model_failure(emulator: LocalAsyncEndpoint) -> None:
    code, out, err = await run_cli("invoke", "broken", "--body", "x", env=emulator.env)
    assert code == 0, err
    code, _, err = await run_cli("wait", env=emulator.env, stdin=out.encode())
    assert code == 1
    assert "inference failed" in err and "fail" in err


async def test_invoke_rejects_bad_input_with_field_and_rule(emulator: LocalAsyncEndpoint) -> None:
    code, _, err = await run_cli(
        "invoke", "echo", "--body", "x", "--request-ttl-seconds", "5", env=emulator.env
    )
    assert code == 2
    assert "request_ttl_seconds (RequestTTLSeconds)" in err and "60..21600" in err


async def test_batch_of_a_folder_and_of_jsonl(emulator: LocalAsyncEndpoint, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / f"item{i}.txt").write_text(f"payload {i}")
    # names that a lossy escaping would map onto each other
    (folder / "a b.txt").write_text("space")
    (folder / "a_b.txt").write_text("underscore")
    (folder / "sub" / "x.txt").write_text("nested")
    (folder / "sub_x.txt").write_text("flat")
    code, out, err = await run_cli(
        "batch", "echo", str(folder), "--out", str(tmp_path / "out1"), env=emulator.env
    )
    assert code == 0, err
    assert json.loads(out)["succeeded"] == 7
    results = tmp_path / "out1" / "results"
    assert (results / "item2.txt.out").read_text() == "payload 2"
    assert (results / "a b.txt.out").read_text() == "space"
    assert (results / "a_b.txt.out").read_text() == "underscore"
    assert (results / "sub" / "x.txt.out").read_text() == "nested"
    assert (results / "sub_x.txt.out").read_text() == "flat"
    assert "7/7" in err  # the progress bar

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"i": i}) for i in range(4)) + "\n")
    code, out, err = await run_cli(
        "batch", "broken", str(jsonl), "--out", str(tmp_path / "out2"), env=emulator.env
    )
    assert code == 1, err  # some items failed
    assert json.loads(out)["failed"] == 4
    assert len(list((tmp_path / "out2/errors").iterdir())) == 4


def _events(manifest: Path) -> list[dict[str, Any]]:
    if not manifest.exists():
        return []
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.endswith("}")]


async def test_batch_resumes_after_a_kill_without_submitting_twice(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    n = 30
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"i": i}) for i in range(n)) + "\n")
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "batch",
        "slow",
        str(jsonl),
        "--out",
        str(out),
        "--no-progress",
        env={**os.environ, **emulator.env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    # Kill it once everything is submitted but only part is done (the endpoint runs 5 at once).
    for _ in range(600):
        events = _events(manifest)
        submitted = sum(e["event"] == "submitted" for e in events)
        finished = sum(e["event"] == "succeeded" for e in events)
        if submitted == n and finished >= 3:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    finished_before = sum(e["event"] == "succeeded" for e in _events(manifest))
    assert 0 < finished_before < n

    code, stdout, err = await run_cli(
        "batch", "slow", str(jsonl), "--out", str(out), env=emulator.env
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["skipped"] == finished_before
    assert report["succeeded"] + report["skipped"] == n
    assert report["resubmitted"] == 0 and report["not_submitted"] == 0
    # (a write cut short by the kill leaves a temporary file: the rerun removes it)
    results = sorted(p.name for p in (out / "results").iterdir())
    assert results == sorted(f"line-{i:06d}.out" for i in range(1, n + 1))
    # The endpoint received each item exactly once across both runs.
    await emulator.endpoint("slow").join()
    assert emulator.stats("slow").received == n


async def test_emulate_prints_exports_that_clients_use(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.json"
    config.write_text(json.dumps({"endpoints": [{"name": "mood", "model": "sentiment"}]}))
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "emulate",
        "--endpoint",
        "echo=echo",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        env, _ = await read_exports(proc)
        assert env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"].startswith("http://127.0.0.1:")
        assert env["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
        code, out, err = await run_cli("invoke", "echo", "--body", "via exports", env=env)
        assert code == 0, err
        code, out, err = await run_cli("wait", env=env, stdin=out.encode())
        assert code == 0, err
        assert out == "via exports"
        code, out, err = await run_cli(
            "invoke", "mood", "--body", '{"inputs": "I love it"}', env=env
        )
        assert code == 0, err
        code, out, err = await run_cli("wait", env=env, stdin=out.encode())
        assert code == 0, err
        assert "positive" in out.lower(), out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_a_rerun_removes_temporary_files_a_kill_left(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"i": 1}\n')
    out = tmp_path / "out"
    stale = out / "results" / f".{'ab' * 16}.tmp"  # as a write cut short by a kill leaves it
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a res")
    keep = out / "results" / ".keep.tmp"  # not one of ours
    keep.write_bytes(b"")
    code, _, err = await run_cli("batch", "echo", str(jsonl), "--out", str(out), env=emulator.env)
    assert code == 0, err
    assert sorted(p.name for p in (out / "results").iterdir()) == [".keep.tmp", "line-000001.out"]


async def read_exports(proc: asyncio.subprocess.Process) -> tuple[dict[str, str], str]:
    """The ``export`` lines ``emulate`` prints, and its ``#`` line after them."""
    assert proc.stdout is not None
    env: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "emulate exited early"
        if line.startswith("export "):
            name, _, value = line[len("export ") :].strip().partition("=")
            env[name] = value.strip("'")
        elif line.startswith("#"):
            return env, line


async def test_emulate_with_no_endpoint_serves_the_control_plane_and_403_mode() -> None:
    import aiobotocore.session
    from botocore.exceptions import ClientError

    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "emulate",
        "--no-list-bucket",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        env, said = await read_exports(proc)
        assert "create them with the SageMaker API" in said
        session = aiobotocore.session.get_session()
        options: dict[str, Any] = {
            "region_name": "us-east-1",
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        }
        async with (
            session.create_client(
                "sagemaker", endpoint_url=env["AWS_ENDPOINT_URL_SAGEMAKER"], **options
            ) as sagemaker,
            session.create_client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], **options) as s3,
        ):
            assert (await sagemaker.list_endpoints())["Endpoints"] == []
            with pytest.raises(ClientError) as caught:
                await s3.get_object(Bucket="sagemaker-async-emulator", Key="missing")
            assert caught.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_emulate_refuses_403_mode_with_another_s3() -> None:
    code, _, err = await run_cli(
        "emulate", "--no-list-bucket", "--s3-endpoint-url", "http://127.0.0.1:9", timeout=60
    )
    assert code == 2 and "--no-list-bucket" in err and "Traceback" not in err


async def test_demo_runs(tmp_path: Path) -> None:
    code, out, err = await run_cli("demo", "--count", "40", "--out", str(tmp_path), timeout=300)
    assert code == 0, err
    assert "succeeded" in out and "S3 requests" in out
    succeeded = int(out.split("succeeded")[1].split()[0])
    failed = int(out.split("failed")[1].split()[0])
    assert succeeded + failed == 40 and succeeded > 0


def test_a_torn_manifest_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    from sagemaker_async._batch import _Manifest

    (tmp_path / "manifest.jsonl").write_text('{"key": "a", "event": "submitted"}\n{"key": "z", "ev')
    manifest = _Manifest(tmp_path)
    manifest.write(key="b", event="submitting", inference_id="id-b")
    manifest.close()
    reread = _Manifest(tmp_path)
    reread.close()
    assert reread.state["b"]["inference_id"] == "id-b"
    assert reread.state["a"]["event"] == "submitted" and "z" not in reread.state


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["batch", "ep", "SRC", "--out", "OUT", "--max-in-flight", "0"], "--max-in-flight"),
        (["batch", "ep", "SRC", "--out", "OUT", "--max-in-flight", "-1"], "--max-in-flight"),
        (["wait", "-", "--timeout", "nan"], "--timeout"),
        (["wait", "-", "--timeout", "-3"], "--timeout"),
        (["demo", "--count", "0"], "--count"),
    ],
)
async def test_numeric_options_are_checked_before_anything_runs(
    args: list[str], option: str, tmp_path: Path
) -> None:
    """Issue 9, defect 4: ``--max-in-flight 0`` hung forever, ``-1`` printed an internal error."""
    (tmp_path / "src").mkdir()
    args = [
        a.replace("SRC", str(tmp_path / "src")).replace("OUT", str(tmp_path / "out")) for a in args
    ]
    code, _, err = await run_cli(*args, stdin=b"{}", timeout=30)
    assert code == 2, err
    assert option in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


async def test_a_rerun_never_reuses_an_answer_for_another_request(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    """Issue 9, defect 1: answers were matched by line number or file name only."""
    jsonl, out = tmp_path / "in.jsonl", tmp_path / "out"
    jsonl.write_text('{"i": 1}\n{"i": 2}\n')
    code, _, err = await run_cli("batch", "echo", str(jsonl), "--out", str(out), env=emulator.env)
    assert code == 0, err
    jsonl.write_text('{"i": 0}\n{"i": 1}\n{"i": 2}\n')  # a line inserted at the top
    code, summary, err = await run_cli(
        "batch", "echo", str(jsonl), "--out", str(out), env=emulator.env
    )
    assert code == 0, err
    results = out / "results"
    for n, expected in enumerate(('{"i": 0}', '{"i": 1}', '{"i": 2}'), 1):
        assert (results / f"line-{n:06d}.out").read_text() == expected
    # another endpoint into the same --out: nothing is "already done"
    code, summary, err = await run_cli(
        "batch", "broken", str(jsonl), "--out", str(out), env=emulator.env
    )
    assert json.loads(summary)["skipped"] == 0 and json.loads(summary)["failed"] == 3, summary


async def test_a_folder_batch_skips_its_own_output_and_hidden_files(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    """Issue 9, defect 2: --out inside the source made every rerun submit earlier results."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    (folder / ".DS_Store").write_text("hidden")
    os.mkfifo(folder / "pipe")
    for _ in range(3):
        code, summary, err = await run_cli(
            "batch", "echo", str(folder), "--out", str(folder / "out"), env=emulator.env
        )
        assert code == 0, err
        assert json.loads(summary)["total"] == 2, summary
    assert "pipe" in err and "skipped" in err  # what was not read is said


async def test_two_batches_on_one_out_folder_do_not_both_run(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    """Issue 9, defect 3: two runs on the same --out each submitted everything."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(75):  # 6 s at 5 at a time: the second run starts well before the end
        (folder / f"{i}.txt").write_text(str(i))
    first = asyncio.create_task(
        run_cli("batch", "slow", str(folder), "--out", str(out), env=emulator.env)
    )
    for _ in range(600):  # the first run has started once its manifest exists
        if (out / "manifest.jsonl").exists():
            break
        await asyncio.sleep(0.05)
    code, _, err = await run_cli("batch", "slow", str(folder), "--out", str(out), env=emulator.env)
    assert code == 2 and "another batch" in err and str(out) in err, err
    code, summary, err = await first
    assert code == 0 and json.loads(summary)["succeeded"] == 75, err


async def test_with_s3_unreachable_wait_and_batch_say_so_and_stop_at_timeout(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    """Issue 9, defect 5: they sat silent until the handle's deadline (about 6 h)."""
    nowhere = ["--s3-endpoint-url", "http://127.0.0.1:9"]  # nothing listens on port 9
    code, out, err = await run_cli("invoke", "echo", "--body", "x", env=emulator.env)
    assert code == 0, err
    code, printed, err = await run_cli(
        "wait", "--timeout", "3", *nowhere, env=emulator.env, stdin=out.encode(), timeout=60
    )
    assert code == 3, err
    assert "S3" in err and "ConnectionError" in err and "retrying" in err, err
    assert json.loads(printed)["inference_id"] == json.loads(out)["inference_id"]  # resumable

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    code, summary, err = await run_cli(
        "batch", "echo", str(folder), "--out", str(tmp_path / "out"), "--timeout", "3",
        *nowhere, env=emulator.env, timeout=60,
    )  # fmt: skip
    assert code == 1, err
    assert json.loads(summary)["unfinished"] == 1
    assert "ConnectionError" in err and "retrying" in err, err


async def test_batch_exit_code_is_nonzero_when_an_item_failed(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"a": 1}\n')
    code, out, err = await run_cli(
        "batch", "broken", str(jsonl), "--out", str(tmp_path / "out"), env=emulator.env
    )
    assert code == 1, err
    assert json.loads(out)["failed"] == 1


async def test_items_rejected_before_submission_are_not_resubmitted_on_a_rerun(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.txt").write_bytes(b"")  # refused by the client: never sent
    (folder / "fine.txt").write_text("fine")
    out = tmp_path / "out"
    for _ in range(2):
        code, stdout, err = await run_cli(
            "batch", "echo", str(folder), "--out", str(out), env=emulator.env
        )
        assert code == 1, err
        report = json.loads(stdout)
        assert report["not_submitted"] == 1 and report["resubmitted"] == 0
        assert "resubmitting" not in err
    events = [e for e in _events(out / "manifest.jsonl") if e["key"] == "empty.txt"]
    assert [e["event"] for e in events] == ["submitting", "rejected"] * 2


async def test_a_batch_stops_early_when_every_item_would_fail(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(f'{{"n": {i}}}\n' for i in range(40)))
    out = str(tmp_path / "out")
    code, stdout, err = await run_cli(
        "batch", "no-such-endpoint", str(jsonl), "--out", out, "--max-in-flight", "4",
        env=emulator.env,
    )  # fmt: skip
    assert code == 1, err
    report = json.loads(stdout)
    assert report["succeeded"] == 0 and report["not_submitted"] == 40
    assert "stopped" in report and "no-such-endpoint" in report["stopped"]
    assert err.count("was not submitted") <= 4  # not 40 identical errors


async def test_an_item_whose_result_cannot_be_written_fails_alone(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = "x" * 250
    (folder / long_name).write_text("long")
    (folder / "short.txt").write_text("short")
    out = tmp_path / "out"
    code, stdout, err = await run_cli(
        "batch", "echo", str(folder), "--out", str(out), env=emulator.env
    )
    report = json.loads(stdout)
    assert report["succeeded"] + report["failed"] == 2, err
    assert (out / "results" / "short.txt.out").read_text() == "short"
    if report["failed"]:  # a name too long for the file system: that item fails, clearly
        assert code == 1 and "file name" in err
    else:
        assert (out / "results" / f"{long_name}.out").read_text() == "long"


async def test_ctrl_c_prints_the_summary_and_how_to_resume(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(f'{{"n": {i}}}\n' for i in range(30)))
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        *CLI, "batch", "slow", str(jsonl), "--out", str(out), "--no-progress",
        env={**os.environ, **emulator.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for _ in range(600):
        if any(e["event"] == "succeeded" for e in _events(out / "manifest.jsonl")):
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, stderr.decode()
    report = json.loads(stdout.decode())
    assert report["succeeded"] >= 1 and report["interrupted"] is True
    assert "rerun the same command to resume" in stderr.decode()
    buckets = ("succeeded", "failed", "skipped", "not_submitted", "unfinished")
    assert sum(report[b] for b in buckets) == report["total"] == 30, report  # each item once


@pytest.fixture
async def resetting_proxy(emulator: LocalAsyncEndpoint) -> AsyncIterator[str]:
    """Forwards to the emulator; drops the connection after the first acceptance of each
    InferenceId (SageMaker accepted it, the client never hears so and retries)."""
    seen: set[str] = set()

    async def forward(request: web.Request) -> web.StreamResponse:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                emulator.url + request.path_qs,
                headers=request.headers,
                data=await request.read(),
            ) as answer,
        ):
            body = await answer.read()
            headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-amzn")}
        inference_id = request.headers.get("X-Amzn-SageMaker-Inference-Id", "")
        if inference_id and inference_id not in seen:
            seen.add(inference_id)
            assert request.transport is not None
            request.transport.close()  # accepted, and the answer is lost
        return web.Response(
            status=answer.status, body=body, headers=headers, content_type=answer.content_type
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_batch_counts_the_duplicates_that_retried_invokes_made(
    emulator: LocalAsyncEndpoint, resetting_proxy: str, tmp_path: Path
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(f'{{"n": {i}}}\n' for i in range(5)))
    env = {**emulator.env, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": resetting_proxy}
    code, stdout, err = await run_cli(
        "batch", "echo", str(jsonl), "--out", str(tmp_path / "out"), env=env
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["succeeded"] == 5
    assert report["duplicates"] == 5  # each item was sent twice, and ran twice
    assert emulator.endpoint("echo").stats().received == 10


async def test_jsonl_lines_must_be_json_unless_sent_as_text(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"ok": 1}\nnot json\n')
    code, _, err = await run_cli(
        "batch", "echo", str(jsonl), "--out", str(tmp_path / "a"), env=emulator.env
    )
    assert code == 2 and "line 2" in err and "--content-type text/plain" in err, err
    assert not (tmp_path / "a" / "manifest.jsonl").exists()  # nothing was sent
    code, _, err = await run_cli(
        "batch", "echo", str(jsonl), "--out", str(tmp_path / "b"),
        "--content-type", "text/plain", env=emulator.env,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "b" / "results" / "line-000002.out").read_text() == "not json"


def test_help_describes_every_option_and_verbose_works_after_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sagemaker_async._cli import _parser, main

    for command in ("invoke", "wait", "batch", "demo", "emulate"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert "Example" in text, command
        for action in _parser()._subparsers._group_actions[0].choices[command]._actions:  # type: ignore[union-attr,index]
            assert action.help, f"{command} {action.option_strings or action.dest} has no help"
        if command == "wait":
            assert "--input-prefix" not in text and "--endpoint-url" not in text
    args = _parser().parse_args(["wait", "-v", "h.json"])
    assert args.verbose


async def test_a_demo_rerun_into_the_same_folder_says_why_it_cannot_resume(
    tmp_path: Path,
) -> None:
    out = tmp_path / "demo"
    code, _, err = await run_cli("demo", "--count", "3", "--out", str(out), "--no-progress")
    assert code == 0, err
    code, _, err = await run_cli("demo", "--count", "3", "--out", str(out), "--no-progress")
    assert code == 2
    assert "cannot resume" in err and "another --out" in err


async def test_advice_in_errors_names_the_command_line_option(
    emulator: LocalAsyncEndpoint, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 200_000)
    code, _, err = await run_cli("invoke", "echo", "--body-file", str(big), env=emulator.env)
    assert code == 2 and "--input-prefix" in err and "input_prefix=" not in err, err
    env = {**emulator.env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    code, _, err = await run_cli("invoke", "echo", "--body", "x", env=env)
    assert code == 2 and "credentials" in err and "AWS_ACCESS_KEY_ID" in err, err


async def test_very_verbose_logs_show_no_payload_custom_attributes_or_token(
    emulator: LocalAsyncEndpoint,
) -> None:
    env = {**emulator.env, "AWS_SESSION_TOKEN": "SECRET-SESSION-TOKEN"}
    code, _, err = await run_cli(
        "-vv", "invoke", "echo", "--body", "SECRET-PAYLOAD-123",
        "--custom-attributes", "SECRET-ATTRIBUTE", env=env,
    )  # fmt: skip
    assert code == 0, err
    assert "DEBUG botocore" in err  # the AWS SDK's debug log is there...
    for secret in ("SECRET-PAYLOAD-123", "SECRET-ATTRIBUTE", "SECRET-SESSION-TOKEN"):
        assert secret not in err  # ... without what must stay private
    assert "Signature=" not in err


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("[]", "must be a JSON object"),
        ('{"endpoints": [{"name": "a", "modle": "echo"}]}', "unknown key 'modle'"),
        ('{"endpoints": [{"name": "a"}], "prot": 8080}', "unknown key 'prot'"),
        ('{"endpoints": "a=echo"}', "must be a list"),
        ('{"endpoints": [{"name": "a", "instance_count": "2"}]}', "instance_count"),
        ("{not json", "is not JSON"),
    ],
)
async def test_emulate_config_errors_are_one_clear_line(
    tmp_path: Path, config: str, words: str
) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(config)
    code, _, err = await run_cli("emulate", "--config", str(path), timeout=60)
    assert code == 2, err
    assert "Traceback" not in err and words in err and str(path) in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "99999"], "0..65535"),
        (["--host", "256.1.1.1"], "256.1.1.1"),
        (["--s3-endpoint-url", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ],
)
async def test_emulate_start_errors_are_one_clear_line(args: list[str], words: str) -> None:
    code, _, err = await run_cli("emulate", "--endpoint", "a=echo", *args, timeout=60)
    assert code == 2, err
    assert "Traceback" not in err and words in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


@pytest.mark.parametrize("command", [["emulate", "--endpoint", "a=echo"], ["demo", "--count", "1"]])
async def test_a_missing_extra_is_named_in_one_line(command: list[str]) -> None:
    # As with only the fastapi extra installed: moto cannot be imported.
    blocked = (
        "import sys; sys.modules['moto'] = None; from sagemaker_async._cli import main; "
        f"sys.exit(main({command!r}))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", blocked,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
    err = err_bytes.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "moto" in err and 'pip install "sagemaker-async[emulator]"' in err, err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["batch", "echo", "{jsonl}", "--out", "{file}"], ["--out", "{file}", "is a file"]),
        (["batch", "echo", "{jsonl}", "--out", "{file}/sub"], ["--out", "{file}/sub"]),
        (["demo", "--count", "1", "--out", "{file}"], ["--out", "{file}", "is a file"]),
        (["wait", "{tmp}/nothere.json"], ["handle", "nothere.json", "cannot be read"]),
        (["wait", "{tmp}"], ["handle", "cannot be read"]),  # a folder
        (["invoke", "echo", "--body-file", "{tmp}/nothere"], ["--body-file", "cannot be read"]),
    ],
)
async def test_file_errors_name_the_argument_and_the_rule(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    """No raw errno text ("[Errno 17] File exists"): the argument, the problem, the rule."""
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"a": 1}\n')
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    names = {"jsonl": str(jsonl), "file": str(afile), "tmp": str(tmp_path)}
    code, _, err = await run_cli(*(a.format(**names) for a in args), timeout=60)
    assert code == 2, err
    assert "Errno" not in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "(rule: " in err, err
    for word in words:
        assert word.format(**names) in err, err
    assert afile.read_text() == "not a folder"


async def refuses(url: str) -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except (ConnectionRefusedError, ConnectionResetError):  # reset: closing as we connect
        return True
    writer.close()
    await writer.wait_closed()
    return False


@pytest.mark.parametrize("signals", [["SIGTERM"], ["SIGINT", "SIGTERM"]])
async def test_emulate_says_stopped_once_its_servers_are_closed(signals: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "-v", "emulate", "--endpoint", "a=echo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    env, _ = await read_exports(proc)
    s3, emulator = env["AWS_ENDPOINT_URL_S3"], env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"]
    first, *more = signals
    proc.send_signal(getattr(signal, first))
    if more:  # a second stop (another Ctrl-C, a supervisor's SIGTERM) while it closes
        for _ in range(10_000):
            if await refuses(emulator):  # the close has begun
                break
        else:
            raise AssertionError("the emulator kept listening after the first signal")
        proc.send_signal(getattr(signal, more[0]))
    said: list[str] = []
    while not any(line.startswith("# sagemaker-async emulator stopped") for line in said):
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line, f"no 'stopped' line:\n{''.join(said)}"
        said.append(line)
    # When it says so, nothing listens any more, and its close went all the way.
    assert await refuses(s3) and await refuses(emulator)
    assert any(
        "SageMaker async emulator on" in line and line.rstrip().endswith("stopped") for line in said
    ), "".join(said)
    rest = await asyncio.wait_for(proc.stderr.read(), 30)
    assert rest == b"" and await asyncio.wait_for(proc.wait(), 30) == 0, rest


async def test_emulate_exits_0_when_signalled_again_after_saying_stopped() -> None:
    """A supervisor that signals again while the process exits (after the "stopped" line,
    during the interpreter's exit) does not turn a clean stop into exit -15."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, "emulate", "--endpoint", "a=echo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    await read_exports(proc)
    proc.send_signal(signal.SIGINT)
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line, "no 'stopped' line"
        if line.startswith("# sagemaker-async emulator stopped"):
            break
    while proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.01)
    assert proc.returncode == 0
