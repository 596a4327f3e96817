"""The engine's shared records: per inference, per location and per S3 directory.

Only what every source shares lives here. A source's own per-key state (a key's polling
schedule, a directory's sweep, the notification that reported a watch) is kept privately by the
source, in its own module: no source reads or writes another's state, and the engine reads none.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from .._config import PollingConfig
from .._errors import InvocationError
from .._result import InferenceResult, WatchTarget

__all__ = ["Completion", "Directory", "Key", "Kind", "Mode", "Watch"]


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
    """One inference being watched: its target, its outcome future, its deadline.

    ``submitted`` and ``deadline`` are times of the client's monotonic clock. ``keys`` are
    the locations filed with the sources now (empty while the engine itself reads one, and once
    the watch ended). ``last_error`` and ``forbidden`` are what the wait learned, for the
    timeout's message.
    """

    __slots__ = (
        "deadline",
        "done",
        "forbidden",
        "keys",
        "last_error",
        "outcome",
        "polling",
        "refs",
        "source",
        "submitted",
        "target",
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
        self.forbidden = False  # S3 said 403: maybe missing s3:ListBucket
        self.last_error: InvocationError | None = None
        self.source: str | None = None  # the source that found its outcome


class Key:
    """One location of one watch, inside its directory."""

    __slots__ = ("directory", "kind", "name", "watch")

    def __init__(self, watch: Watch, kind: Kind, directory: Directory, name: str) -> None:
        self.watch = watch
        self.kind = kind
        self.directory = directory
        self.name = name  # the full object key

    @property
    def location(self) -> str:
        """The ``s3://`` URI."""
        return f"s3://{self.directory.bucket}/{self.name}"


class Directory:
    """The pending keys of one S3 directory, how it is watched, and what listing it costs.

    ``pages`` is what the last full listing took (the listing source measures it, the cost
    model reads it); ``list_after`` is a monotonic time before which the directory is not
    listed (its listing kept failing).
    """

    __slots__ = (
        "bucket",
        "keys",
        "list_after",
        "max_delay",
        "min_delay",
        "mode",
        "multiplier",
        "outputs",
        "pages",
        "prefix",
    )

    def __init__(self, bucket: str, prefix: str, polling: PollingConfig) -> None:
        self.bucket = bucket
        self.prefix = prefix  # "" or ending with "/"
        self.keys: dict[str, Key] = {}
        self.outputs = 0  # how many keys are output locations
        self.mode = Mode.POLL
        self.pages = 1  # pages a full listing took last time (at least)
        self.list_after = float("-inf")
        self.min_delay = polling.initial_delay
        self.max_delay = polling.max_delay
        self.multiplier = polling.multiplier

    def adopt(self, polling: PollingConfig) -> None:
        """A watch joins: the directory moves at the pace of its most eager watch."""
        self.min_delay = min(self.min_delay, polling.initial_delay)
        self.max_delay = min(self.max_delay, polling.max_delay)
        self.multiplier = min(self.multiplier, polling.multiplier)

    @property
    def poll_weight(self) -> float:
        """GETs per polling round: each output location once, each failure location half."""
        return self.outputs + 0.5 * (len(self.keys) - self.outputs)
