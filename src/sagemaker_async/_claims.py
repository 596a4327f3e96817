"""Claims on batch items through S3 conditional writes: who works on an item, until when.

One small JSON object per item (``<claims prefix><item>``) says who holds the item and until
when (a lease, in wall-clock seconds shared by every process), and how far its work went:

- ``claimed``: claimed, not sent yet.
- ``sending``: its invoke may have been sent (written just before the invoke).
- ``submitted``: sent and accepted; the claim holds the handle (``to_dict()``).
- ``rejected``: refused for sure: nothing runs; anyone may take it and send it afresh.
- ``done``: finished; the claim holds the item's manifest entry.

A process claims an absent item with ``If-None-Match: *``, renews or takes over an existing
claim with ``If-Match`` on the ETag it read: of two processes racing, exactly one write holds.
Every write carries a fresh token, so no two writes share an ETag. The rules that need no S3
(what a claim read at some time means) are :func:`verdict`'s.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from ._clock import Clock
from ._errors import InvocationError
from ._s3 import Absent, ObjectStore, Unavailable

__all__ = ["Claim", "ClaimBook", "Verdict", "verdict"]

logger = logging.getLogger("sagemaker_async")

CLAIMED, SENDING, SUBMITTED = "claimed", "sending", "submitted"
REJECTED, DONE = "rejected", "done"


class Verdict(enum.Enum):
    """What a claim read at some time means for a process that does not hold it."""

    FINISHED = "finished"  # done: nothing to do
    HELD = "held"  # another process holds a live lease: wait for it
    LAPSED = "lapsed"  # its lease lapsed (or it was released): take it over


def verdict(record: dict[str, Any], now: float) -> Verdict:
    """The meaning of claim ``record`` at wall-clock time ``now``."""
    if record.get("state") == DONE:
        return Verdict.FINISHED
    if float(record.get("expires", 0.0)) > now:
        return Verdict.HELD
    return Verdict.LAPSED


@dataclass
class Claim:
    """An item this process holds: its claim's content and the ETag of its last write."""

    item: str
    record: dict[str, Any]
    etag: str
    taken_over: bool = False  # from a process whose lease lapsed
    previous_state: str | None = None  # the state it was taken over in
    lost: bool = False  # another process took it over: stop, write nothing
    sent: bool = False  # this process called InvokeEndpointAsync for it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one write at a time

    @property
    def unsent_state(self) -> str:
        """The state to leave when this process gives the item up without sending it.

        ``claimed`` (never sent: send it afresh) for an item it claimed fresh; the state it
        was taken over in otherwise (an earlier holder may have sent it).
        """
        if self.taken_over and self.previous_state in (SENDING, SUBMITTED):
            return self.previous_state
        return CLAIMED

    @property
    def inference_id(self) -> str:
        """The InferenceId the item is sent with (kept across takeovers)."""
        return str(self.record["inference_id"])


@dataclass(frozen=True)
class Busy:
    """An item another process holds, until ``expires`` (wall-clock seconds) at least."""

    item: str
    expires: float
    owner: str = ""


class ClaimBook:
    """One process's claims under ``prefix``: leases of ``lease`` seconds, kept renewed."""

    def __init__(
        self, store: ObjectStore, clock: Clock, prefix: str, *, lease: float, owner: str
    ) -> None:
        self._store = store
        self._clock = clock
        self._prefix = prefix
        self.lease = lease
        self.owner = owner
        self.held: dict[str, Claim] = {}
        self.renewals = 0  # conditional writes that extended a lease

    def uri(self, item: str) -> str:
        """Where ``item``'s claim lives."""
        return self._prefix + item

    def _body(self, record: dict[str, Any]) -> bytes:
        return json.dumps(record, sort_keys=True).encode()

    async def read(self, item: str) -> tuple[dict[str, Any], str] | None:
        """The claim of ``item`` and its ETag; None when there is none."""
        while True:
            try:
                got = await self._store.read(self.uri(item))
            except Unavailable:
                await self._clock.sleep(min(1.0, self.lease / 10))
                continue
            if isinstance(got, Absent):
                if got is Absent.FORBIDDEN:
                    raise InvocationError(
                        f"{self.uri(item)} cannot be read (403)",
                        code="AccessDenied",
                        operation="GetObject",
                    )
                return None
            try:
                record = json.loads(got.body)
            except ValueError:
                record = {}  # not a claim of ours: lapsed, taken over
            return record, got.etag or ""

    async def acquire(
        self, item: str, inference_id: str, *, seen: bool = False
    ) -> Claim | Busy | None:
        """Claim ``item``: a :class:`Claim` held now, :class:`Busy`, or None when finished.

        ``seen``: its claim was seen before (it is read first, not written).
        """
        for _ in range(8):  # each turn loses a race to another process, which then holds it
            now = self._clock.wall()
            token = uuid.uuid4().hex
            record = {
                "item": item,
                "owner": self.owner,
                "token": token,
                "expires": now + self.lease,
                "state": CLAIMED,
                "inference_id": inference_id,
            }
            if not seen:
                etag = await self._store.put_if(self.uri(item), self._body(record))
                if etag is not None:
                    return self._hold(Claim(item, record, etag))
            seen = False
            found = await self.read(item)
            if found is None:
                continue  # gone between the two calls: claim again
            existing, existing_etag = found
            if existing.get("token") == token:  # our own write, answered 412 on a retry
                return self._hold(Claim(item, existing, existing_etag))
            meaning = verdict(existing, self._clock.wall())
            if meaning is Verdict.FINISHED:
                return None
            if meaning is Verdict.HELD:
                return Busy(item, float(existing["expires"]), str(existing.get("owner", "")))
            taken = {
                **existing,
                "item": item,
                "owner": self.owner,
                "token": token,
                "expires": self._clock.wall() + self.lease,
                "inference_id": existing.get("inference_id") or inference_id,
            }
            if existing.get("state") not in (SENDING, SUBMITTED):  # it was never sent
                taken["state"] = CLAIMED
            etag = await self._store.put_if(
                self.uri(item), self._body(taken), if_match=existing_etag
            )
            if etag is not None:
                logger.info(
                    "item %s: took over the lapsed claim of %s (%s)",
                    item,
                    existing.get("owner"),
                    existing.get("state"),
                )
                return self._hold(
                    Claim(
                        item,
                        taken,
                        etag,
                        taken_over=True,
                        previous_state=str(existing.get("state")),
                    )
                )
        raise InvocationError(
            f"the claim of item {item!r} keeps changing under {self.uri(item)}",
            code="ClaimContention",
            operation="PutObject",
        )

    def _hold(self, claim: Claim) -> Claim:
        self.held[claim.item] = claim
        return claim

    async def update(self, claim: Claim, *, release: bool = False, **changes: Any) -> bool:
        """Write ``changes`` to a held claim; False when it was lost (taken over by another).

        ``release``: end the lease now (another process may take the item at once) and stop
        holding it; a ``done`` claim is released too.
        """
        async with claim.lock:  # a renewal and a step must not race on one ETag
            return await self._update(claim, release, changes)

    async def _update(self, claim: Claim, release: bool, changes: dict[str, Any]) -> bool:
        if claim.lost:
            return False
        now = self._clock.wall()
        record = {
            **claim.record,
            **changes,
            "token": uuid.uuid4().hex,
            "expires": now if release else now + self.lease,
        }
        etag = await self._store.put_if(
            self.uri(claim.item), self._body(record), if_match=claim.etag
        )
        if etag is None:
            found = await self.read(claim.item)
            if found is not None and found[0].get("token") == record["token"]:
                etag = found[1]  # our own write, answered 412 on a retry
        if etag is None:
            self._lose(claim)
            return False
        claim.record, claim.etag = record, etag
        if release or record.get("state") == DONE:
            self.held.pop(claim.item, None)
        return True

    def _lose(self, claim: Claim) -> None:
        if not claim.lost:
            claim.lost = True
            self.held.pop(claim.item, None)
            logger.warning(
                "item %s: another process took it over (this one was too slow to renew its "
                "lease); leaving it to that process",
                claim.item,
            )

    async def renew_due(self) -> None:
        """Renew each held lease with less than three quarters of it left."""
        now = self._clock.wall()
        due = [
            claim
            for claim in list(self.held.values())
            if float(claim.record["expires"]) - now < self.lease * 3 / 4
        ]

        async def renew(claim: Claim) -> None:
            try:
                if await self.update(claim):
                    self.renewals += 1
            except InvocationError as exc:  # try again at the next turn, if still in time
                logger.warning("item %s: its lease could not be renewed: %s", claim.item, exc)

        await asyncio.gather(*(renew(claim) for claim in due))

    async def keep_renewed(self) -> None:
        """Renew leases as they come due, until cancelled.

        It looks every quarter of a lease, so each lease is renewed about halfway through:
        a renewal may be late by a quarter of a lease before another process may take over.
        """
        while True:
            await self._clock.sleep(self.lease / 4)
            await self.renew_due()

    async def release_all(self) -> None:
        """End every lease still held (best effort), so that others take the items at once."""

        async def release(claim: Claim) -> None:
            unsent = {} if claim.sent else {"state": claim.unsent_state}
            try:
                await self.update(claim, release=True, **unsent)
            except InvocationError as exc:
                logger.warning("item %s: its claim could not be released: %s", claim.item, exc)

        await asyncio.gather(*(release(claim) for claim in list(self.held.values())))
