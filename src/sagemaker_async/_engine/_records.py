"""The engine's records: per inference, per location and per S3 directory.

Sources and the engine share them: :class:`Watch`, :class:`Key`, :class:`Directory`.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._config import PollingConfig
from .._errors import InvocationError
from .._result import InferenceResult

if TYPE_CHECKING:
    from ._notifications import Notice

__all__ = ["Completion", "Directory", "Key", "Kind", "Mode", "Watch", "WatchTarget"]


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One submitted inference, as the engine needs it (times are wall-clock seconds)."""

    endpoint_name: str
    inference_id: str
    output_location: str
    failure_location: str | None  # None: the endpoint has no S3FailurePath
    submitted_at: float
    deadline: float
    #: The inference's OpenTelemetry span (None without OpenTelemetry): never saved.
    span: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Completion:
    """A source's news: the object at ``location`` exists (with its body, if the source has it)."""

    location: str
    body: bytes | None = None
    content_type: str | None = None


class Kind(enum.Enum):
    """Which of an inference's two locations a key is."""

    OUTPUT = "output"
    FAILURE = "failure"


class Mode(enum.Enum):
    """How a directory is watched."""

    POLL = "poll"
    LIST = "list"


class Watch:
    """One inference being watched: its outcome future and what the wait has learned."""

    __slots__ = (
        "deadline",
        "done",
        "forbidden",
        "keys",
        "last_error",
        "last_look",
        "notice",
        "outcome",
        "polling",
        "refs",
        "resolving",
        "source",
        "submitted",
        "target",
        "tasks",
    )

    def __init__(
        self,
        target: WatchTarget,
        polling: PollingConfig,
        outcome: asyncio.Future[InferenceResult],
        *,
        submitted: float,
        deadline: float,
    ) -> None:
        self.target = target
        self.polling = polling
        self.outcome = outcome
        self.submitted = submitted  # monotonic
        self.deadline = deadline  # monotonic
        self.refs = 1
        self.keys: tuple[Key, ...] = ()
        self.done = False
        self.resolving = False  # a source saw an object; its GET is under way
        self.forbidden = False  # S3 said 403: maybe missing s3:ListBucket
        self.last_error: InvocationError | None = None
        self.tasks: set[asyncio.Task[None]] | None = None  # requests made for this watch alone
        self.notice: Notice | None = None  # the notification that reported it, to delete
        self.last_look: object | None = None  # its deadline job, in the scheduler's heap
        self.source: str | None = None  # the source that found its outcome

    def enter(self) -> None:
        """The current task makes a request for this watch alone (see :meth:`cancel_tasks`)."""
        task = asyncio.current_task()
        if task is not None:
            if self.tasks is None:
                self.tasks = set()
            self.tasks.add(task)

    def leave(self) -> None:
        """The current task's request for this watch is over."""
        if self.tasks is not None:
            self.tasks.discard(asyncio.current_task())
            if not self.tasks:
                self.tasks = None

    def cancel_tasks(self) -> None:
        """Cancel the requests still running for this watch (it ended)."""
        current = asyncio.current_task()
        for task in self.tasks or ():
            if task is not current:
                task.cancel()


class Key:
    """One location of one watch, inside its directory; also its per-location poll schedule."""

    __slots__ = ("at_once", "directory", "gen", "kind", "name", "step", "watch")

    def __init__(self, watch: Watch, kind: Kind, directory: Directory, name: str) -> None:
        self.watch = watch
        self.kind = kind
        self.directory = directory
        self.name = name  # the full object key
        self.gen = 0  # bumped to invalidate a scheduled poll
        self.step = 0  # polls since the schedule (re)started
        self.at_once = False  # a failure location first read with its output (resumed late)

    @property
    def location(self) -> str:
        """The ``s3://`` URI."""
        return f"s3://{self.directory.bucket}/{self.name}"


class Directory:
    """The pending keys of one S3 directory, how it is watched, and what listing it costs."""

    __slots__ = (
        "bucket",
        "gen",
        "interval",
        "keys",
        "max_delay",
        "min_delay",
        "mode",
        "multiplier",
        "outputs",
        "pages",
        "pages_read",
        "prefix",
        "sweep_found",
        "sweep_started",
        "token",
    )

    def __init__(self, bucket: str, prefix: str, polling: PollingConfig) -> None:
        self.bucket = bucket
        self.prefix = prefix  # "" or ending with "/"
        self.keys: dict[str, Key] = {}
        self.outputs = 0  # how many keys are output locations
        self.mode = Mode.POLL
        self.gen = 0  # bumped to invalidate a scheduled sweep
        self.pages = 1  # pages a full listing took last time (at least)
        self.min_delay = polling.initial_delay
        self.max_delay = polling.max_delay
        self.multiplier = polling.multiplier
        self.interval = polling.initial_delay
        self.token: str | None = None  # where the sweep in progress goes on
        self.pages_read = 0
        self.sweep_found = False
        self.sweep_started = 0.0

    def adopt(self, polling: PollingConfig) -> None:
        """A watch joins: the directory moves at the pace of its most eager watch."""
        self.min_delay = min(self.min_delay, polling.initial_delay)
        self.max_delay = min(self.max_delay, polling.max_delay)
        self.multiplier = min(self.multiplier, polling.multiplier)

    @property
    def poll_weight(self) -> float:
        """GETs per polling round: each output location once, each failure location half."""
        return self.outputs + 0.5 * (len(self.keys) - self.outputs)
