"""The engine's shared records: per inference, per location and per S3 directory.

Only what every source shares lives here. A source's own per-key state (a key's polling
schedule, a directory's sweep, the notification that reported a watch) is kept privately by the
source, in its own module: no source reads or writes another's state, and the engine reads none.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from .._config import PollingConfig
from .._errors import InvocationError
from .._result import InferenceResult, WatchTarget

__all__ = [
    "FAILURE",
    "LIST",
    "OUTPUT",
    "POLL",
    "Completion",
    "Directory",
    "Key",
    "Kind",
    "Listener",
    "Locations",
    "Mode",
    "Watch",
]


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


# The members as plain names, for the paths that run per watch (an enum member read off its
# class costs a descriptor call on Python 3.11).
OUTPUT, FAILURE = Kind.OUTPUT, Kind.FAILURE
POLL, LIST = Mode.POLL, Mode.LIST


class Listener(Protocol):
    """What waits on a watch (a handle): told once, of the outcome or of the client's close."""

    def _on_settled(self, watch: Watch, outcome: InferenceResult | BaseException) -> None:
        """``watch`` ended with ``outcome`` (called soon after, from the event loop)."""

    def _on_closed(self, watch: Watch) -> None:
        """The client closed while ``watch`` was under way (the inference is still pending)."""


class Watch:
    """One inference being watched: its target, who waits for it, its deadline.

    ``submitted`` and ``deadline`` are times of the client's monotonic clock. The watch is its
    own entry in the scheduler's deadline lane (ordered by ``deadline``), so a pending
    inference costs no job object and no heap tuple. ``output_dir`` is the directory its
    output location is filed in now (None while the engine itself reads one, and once the
    watch ended; the failure location's directory is looked up). ``last_error`` and
    ``forbidden`` are what the wait learned, for the timeout's message.

    A million of these may be alive at once: every field is a slot, and ``listeners`` is the
    one handle that waits (a list in the rare case of several handles of one inference).
    """

    __slots__ = (
        "deadline",
        "done",
        "forbidden",
        "last_error",
        "listeners",
        "output_dir",
        "polling",
        "source",
        "submitted",
        "target",
    )

    def __init__(
        self,
        target: WatchTarget,
        polling: PollingConfig,
        listener: Listener | None,
        *,
        submitted: float,
        deadline: float,
    ) -> None:
        self.target = target
        self.polling = polling
        self.listeners: Listener | list[Listener] | None = listener
        self.submitted = submitted  # monotonic
        self.deadline = deadline  # monotonic
        self.output_dir: Directory | None = None
        self.done = False
        self.forbidden = False  # S3 said 403: maybe missing s3:ListBucket
        self.last_error: InvocationError | None = None
        self.source: str | None = None  # the source that found its outcome

    def __lt__(self, other: Watch) -> bool:
        """Deadline order (the scheduler's deadline lane is a heap of watches)."""
        return self.deadline < other.deadline

    @property
    def owner(self) -> Watch:
        """The watch whose requests stop when it ends: itself (as a deadline-lane entry)."""
        return self

    @property
    def filed(self) -> bool:
        """True while its locations are with the sources."""
        return self.output_dir is not None

    def add(self, listener: Listener) -> None:
        """Another handle of the same inference waits too."""
        listeners = self.listeners
        if listeners is None:
            self.listeners = listener
        elif isinstance(listeners, list):
            listeners.append(listener)
        else:
            self.listeners = [listeners, listener]

    def remove(self, listener: Listener) -> bool:
        """``listener`` stopped waiting; True when nobody waits any more."""
        listeners = self.listeners
        if listeners is listener:
            self.listeners = None
        elif isinstance(listeners, list):
            kept = [other for other in listeners if other is not listener]
            self.listeners = kept[0] if len(kept) == 1 else kept or None
        return self.listeners is None

    def take_listeners(self) -> list[Listener]:
        """Everyone waiting, who waits no more (the watch ends)."""
        listeners, self.listeners = self.listeners, None
        if listeners is None:
            return []
        return listeners if isinstance(listeners, list) else [listeners]


class Key:
    """One location of one watch, inside its directory: what a source is told to cover.

    Made when a source needs it, not kept per pending watch: the directory files the
    watch under its location (``Directory.keys``), and a source that keeps per-key state
    (polling) keeps its key.
    """

    __slots__ = ("directory", "kind", "name", "watch")

    def __init__(self, watch: Watch, kind: Kind, directory: Directory, name: str) -> None:
        self.watch = watch
        self.kind = kind
        self.directory = directory
        self.name = name  # the full object key

    @property
    def location(self) -> str:
        """The ``s3://`` URI (the target's own string)."""
        target = self.watch.target
        if self.kind is OUTPUT:
            return target.output_location
        assert target.failure_location is not None
        return target.failure_location


# Dicts per directory: a million pending in one directory is 16 dicts of 62,500, and growing
# one of them (a copy of the whole dict) holds the event loop 5 ms, not 80.
_SHARDS = 16


class Locations:
    """The watches of one directory, by location: a dict in ``_SHARDS`` pieces (by hash)."""

    __slots__ = ("_count", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[str, Watch]] = [{} for _ in range(_SHARDS)]
        self._count = 0

    def get(self, location: str) -> Watch | None:
        """The watch filed under ``location``, if any."""
        return self._shards[hash(location) % _SHARDS].get(location)

    def __contains__(self, location: object) -> bool:
        return location in self._shards[hash(location) % _SHARDS]

    def __setitem__(self, location: str, watch: Watch) -> None:
        shard = self._shards[hash(location) % _SHARDS]
        self._count += location not in shard
        shard[location] = watch

    def __delitem__(self, location: str) -> None:
        del self._shards[hash(location) % _SHARDS][location]
        self._count -= 1

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[str, Watch]]:
        """Every (location, watch), shard by shard."""
        for shard in self._shards:
            yield from shard.items()

    def values(self) -> Iterator[Watch]:
        """Every watch filed here (one per location)."""
        for shard in self._shards:
            yield from shard.values()

    def clear_by_shard(self, step: int = 10_000) -> Iterator[None]:
        """Empty it, ``step`` locations at a time.

        What the caller does between the steps is its own (let the event loop run: the last
        reference to a watch may go with its location, and freeing a million takes time).
        """
        for shard in self._shards:
            while shard:
                for _ in range(min(step, len(shard))):
                    shard.popitem()
                self._count = sum(map(len, self._shards))
                yield


class Directory:
    """The pending locations of one S3 directory, how it is watched, what listing it costs.

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
        "root",
    )

    def __init__(self, bucket: str, prefix: str, polling: PollingConfig) -> None:
        self.bucket = bucket
        self.prefix = prefix  # "" or ending with "/"
        self.root = f"s3://{bucket}/"  # + an object key: its location
        # The watches with a location here, by that location (the target's own string, so a
        # pending location costs one dict entry and no string of its own).
        self.keys = Locations()
        self.outputs = 0  # how many keys are output locations
        self.mode = POLL
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

    def key(self, location: str, watch: Watch) -> Key:
        """The key of ``watch`` at ``location`` (one of its two, filed here)."""
        kind = OUTPUT if location == watch.target.output_location else FAILURE
        return Key(watch, kind, self, location[len(self.root) :])

    @property
    def poll_weight(self) -> float:
        """GETs per polling round: each output location once, each failure location half."""
        return self.outputs + 0.5 * (len(self.keys) - self.outputs)
