"""client.map and as_completed, against the emulator over moto's S3."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fakeclock import FakeClock, settler
from sagemaker_async import (
    AsyncInferenceClient,
    InferenceFailedError,
    MapProgress,
    PollingConfig,
    RetryConfig,
    ValidationError,
    as_completed,
)
from sagemaker_async.emulator import EndpointConfig, InferenceRequest, LocalAsyncEndpoint
from support import other_tasks

WAIT = 30.0  # guards against hangs only


class Model:
    """Echoes after a delay taken from the payload (``b"0.05:text"``); fails on ``b"fail"``.

    ``b"gate:NAME:text"`` waits until the test opens :meth:`gate` NAME, and
    ``b"after:NAME:text"`` until the inference whose text is NAME has finished: orders of
    completion that do not depend on timing. Records the most inferences ever running in the
    model at once (each leaves it before its output is written, so before any client can see
    it: the endpoint's own counts end a little later, once the write has returned, and a
    client on a loaded machine could submit again in between).
    """

    def __init__(self) -> None:
        self.emu: LocalAsyncEndpoint | None = None
        self.peak_running = 0
        self._running = 0
        self._events: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        """The event that ``gate:NAME`` inferences wait on (set it to let them finish)."""
        return self._events.setdefault(f"gate:{name}", asyncio.Event())

    def finished(self, text: str) -> asyncio.Event:
        """Set once the inference whose text is ``text`` has finished."""
        return self._events.setdefault(f"done:{text}", asyncio.Event())

    async def __call__(self, request: InferenceRequest) -> tuple[bytes, str]:
        self._running += 1
        self.peak_running = max(self.peak_running, self._running)
        try:
            return await self._answer(request)
        finally:
            self._running -= 1

    async def _answer(self, request: InferenceRequest) -> tuple[bytes, str]:
        if request.payload == b"fail":
            raise RuntimeError("asked to fail")
        head, _, text = request.payload.partition(b":")
        if head in (b"gate", b"after"):
            name, _, text = text.partition(b":")
            wait = self.gate if head == b"gate" else self.finished
            await wait(name.decode()).wait()
        else:
            await asyncio.sleep(float(head or 0))
        self.finished(text.decode()).set()
        return text, "text/plain"


@pytest.fixture
async def model(local_async_endpoint_factory: Any) -> Model:
    model = Model()
    model.emu = await local_async_endpoint_factory(
        [EndpointConfig("ep", model=model, max_concurrent_invocations_per_instance=50)]
    )
    return model


@pytest.fixture
async def client(model: Model) -> AsyncIterator[AsyncInferenceClient]:
    assert model.emu is not None
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=model.emu.url,
        s3_endpoint_url=model.emu.s3_endpoint_url,
        polling=PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.0),
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
    ) as c:
        yield c


async def client_tasks() -> set[Any]:
    """Tasks left besides the client's own and the emulator's (its workers, its server)."""

    def where(task: Any) -> str:
        code = getattr(task.get_coro(), "cr_code", None)
        return code.co_filename if code is not None else ""

    return {
        t
        for t in await other_tasks()
        if "/emulator/" not in where(t) and "aiohttp/web_" not in where(t)
    }


class Counted:
    """An iterable of bodies that records how many were taken."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        for body in self.bodies:
            self.taken += 1
            yield body


async def test_map_reads_lazily_and_keeps_at_most_max_in_flight(
    client: AsyncInferenceClient, model: Model
) -> None:
    inputs = Counted([f"0.02:item {i}".encode() for i in range(40)])
    seen: list[int] = []
    async with contextlib.aclosing(client.map("ep", inputs, max_in_flight=4)) as outcomes:
        async for outcome in outcomes:
            # Read, but not yet given back: never more than max_in_flight.
            assert inputs.taken - len(seen) <= 4
            assert outcome.ok and outcome.result is not None and outcome.handle is not None
            assert outcome.result.body == f"item {outcome.index}".encode()
            assert outcome.input == inputs.bodies[outcome.index]
            seen.append(outcome.index)
    assert sorted(seen) == list(range(40))
    assert 1 <= model.peak_running <= 4  # counted in the model


async def test_map_in_order_holds_back_faster_outcomes(
    client: AsyncInferenceClient, model: Model
) -> None:
    # Each input finishes only after the next one: the last finishes first, the first last.
    def bodies(run: str) -> list[bytes]:
        return [
            (f"after:{run}{i + 1}:{run}{i}" if i < 5 else f"0:{run}{i}").encode() for i in range(6)
        ]

    free = [o.index async for o in client.map("ep", bodies("a"), max_in_flight=6)]
    assert sorted(free) == list(range(6))
    ordered = []
    async for outcome in client.map("ep", bodies("b"), max_in_flight=6, ordered=True):
        if outcome.index == 0:  # it finished last at the endpoint, yet comes first
            assert all(model.finished(f"b{i}").is_set() for i in range(1, 6))
        ordered.append(outcome.index)
    assert ordered == list(range(6))


async def test_map_reports_each_error_and_goes_on(client: AsyncInferenceClient) -> None:
    counts: list[MapProgress] = []
    inputs: list[Any] = [b"0:a", b"fail", 42, {"body": b"0:b", "accept": "text/plain"}, b""]
    outcomes = {
        o.index: o async for o in client.map("ep", inputs, max_in_flight=2, progress=counts.append)
    }
    assert outcomes[0].result is not None and outcomes[0].result.body == b"a"
    assert isinstance(outcomes[1].error, InferenceFailedError) and outcomes[1].handle is not None
    assert isinstance(outcomes[2].error, ValidationError) and outcomes[2].handle is None
    assert outcomes[3].result is not None and outcomes[3].result.body == b"b"
    assert isinstance(outcomes[4].error, ValidationError)  # empty body, never sent
    assert counts[-1] == MapProgress(read=5, submitted=3, succeeded=2, failed=3)
    assert [c.succeeded + c.failed for c in counts] == [1, 2, 3, 4, 5]


async def test_map_takes_async_inputs_and_per_item_options(
    client: AsyncInferenceClient, model: Model
) -> None:
    async def inputs() -> AsyncIterator[Any]:
        yield b"0:plain"
        yield {"body": "0:text", "inference_id": "chosen-id"}

    outcomes = [o async for o in client.map("ep", inputs(), ordered=True, accept="text/plain")]
    assert [o.result.body for o in outcomes if o.result] == [b"plain", b"text"]
    assert outcomes[1].handle is not None and outcomes[1].handle.inference_id == "chosen-id"


async def test_leaving_map_early_stops_reading_submitting_and_waiting(
    client: AsyncInferenceClient, model: Model
) -> None:
    assert model.emu is not None
    inputs = Counted([b"0:quick"] * 3 + [b"5:slow"] * 100)
    async with contextlib.aclosing(client.map("ep", inputs, max_in_flight=5)) as outcomes:
        async for outcome in outcomes:
            assert outcome.ok
            break
    received = model.emu.endpoint("ep").stats().received
    assert inputs.taken <= 6
    assert not await client_tasks()  # no submit or wait left running
    await asyncio.sleep(0.2)
    assert model.emu.endpoint("ep").stats().received == received  # nothing sent after


async def test_an_error_of_the_inputs_reaches_the_caller(client: AsyncInferenceClient) -> None:
    def inputs() -> Iterator[bytes]:
        yield b"0:one"
        raise KeyError("broken input")

    with pytest.raises(KeyError, match="broken input"):
        async for _ in client.map("ep", inputs()):
            pass


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"submit_rate": float("nan")}, "submit_rate"),
        ({"submit_rate": -1}, "submit_rate"),
        ({"progress": "print"}, "progress"),
        ({"body": b"x"}, "body"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_map_arguments_are_checked_before_anything_runs(
    options: dict[str, Any], field: str
) -> None:
    client = AsyncInferenceClient(region_name="us-east-1")
    with pytest.raises(ValidationError) as caught:
        client.map("ep", [b"x"], **options)
    assert caught.value.field == field
    with pytest.raises(ValidationError):
        client.map("ep", b"not a list of inputs")


async def test_submit_rate_spaces_submissions_in_virtual_time(model: Model) -> None:
    assert model.emu is not None
    clock = FakeClock()
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=model.emu.url,
        s3_endpoint_url=model.emu.s3_endpoint_url,
        polling=PollingConfig(initial_delay=0.1, max_delay=0.1, jitter=0.0),
        clock=clock,
    ) as client:
        outcomes: list[Any] = []
        taken: list[float] = []

        def inputs() -> Iterator[bytes]:
            for _ in range(5):
                taken.append(clock.now)  # an input is taken just before it is sent
                yield b"0:x"

        async def run() -> None:
            async for outcome in client.map("ep", inputs(), submit_rate=4):
                outcomes.append(outcome)

        task = asyncio.create_task(run())
        # Idle means nothing of the client runs, submissions included: time moves only then.
        await clock.run_until(task.done, settler(client), limit=30)
        await task
    assert all(o.ok for o in outcomes)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(taken)]
    assert gaps == [0.25, 0.25, 0.25, 0.25]


async def test_as_completed_yields_handles_as_they_finish(
    client: AsyncInferenceClient, model: Model
) -> None:
    slow = await client.invoke_endpoint_async("ep", body=b"gate:slow:slow")
    fast = await client.invoke_endpoint_async("ep", body=b"0:fast")
    broken = await client.invoke_endpoint_async("ep", body=b"fail")
    order = []
    async for handle in as_completed([slow, fast, broken]):
        assert handle.done()
        order.append(handle)
        if len(order) == 2:
            model.gate("slow").set()  # only now may the slow one finish
    assert order[-1] is slow and set(order) == {slow, fast, broken}
    assert isinstance(broken.exception(), InferenceFailedError)


async def test_leaving_as_completed_early_stops_watching(client: AsyncInferenceClient) -> None:
    fast = await client.invoke_endpoint_async("ep", body=b"0:fast")
    slow = await client.invoke_endpoint_async("ep", body=b"5:slow")
    async with contextlib.aclosing(as_completed([slow, fast])) as finished:
        async for handle in finished:
            assert handle is fast
            break
    assert not slow.done()
    assert not await client_tasks()
    with pytest.raises(ValidationError):
        async for _ in as_completed(["not a handle"]):  # type: ignore[list-item]
            pass
