"""Claims on batch items through S3 conditional writes, kept alive by one heartbeat per process.

Under an output prefix ``out``:

- ``<out>.claims/<item>``: one small JSON object per item, written when a process takes the
  item: who holds it (``owner``), its InferenceId, and how far its work went:

  - ``claimed``: not sent (left so by a process that gave the item up before sending it);
  - ``sending``: its invoke may have been sent (a process claims an item just before sending);
  - ``submitted``: sent and accepted; the claim holds the handle (``to_dict()``);
  - ``rejected``: refused for sure: nothing runs; anyone may take it and send it afresh.

- ``<out>.owners/<owner>``: each process's heartbeat, ``{"expires": <wall-clock seconds>}``,
  rewritten every quarter of a lease. A claim is held while its owner's heartbeat is fresh:
  renewing one object renews every claim of the process, so a claim is written at its
  transitions only (taken; handle saved; released), never to renew it.

A process claims an absent item with ``If-None-Match: *`` and takes over a lapsed claim with
``If-Match`` on the ETag it read: of two processes racing, exactly one write holds. Every
write carries a fresh token, so no two writes share an ETag.

A process that missed its own heartbeat (stalled past its lease) may have lost any claim: it
writes no result until it beat again and re-asserted each claim it holds with ``If-Match``
(:meth:`ClaimBook.beat`); a claim another process took meanwhile is lost, and left to it. A
taker reads the claim, then the owner's heartbeat, then writes with ``If-Match``: the holder
beats before re-asserting, so one of the two conditional writes fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from ._clock import Clock
from ._errors import InvocationError
from ._s3 import Absent, ObjectStore, Unavailable

__all__ = ["Busy", "Claim", "ClaimBook"]

logger = logging.getLogger("sagemaker_async")

CLAIMED, SENDING, SUBMITTED, REJECTED = "claimed", "sending", "submitted", "rejected"
CLAIMS, OWNERS = ".claims/", ".owners/"


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
    """An item another process holds (``owner``, when known: its claim was read)."""

    item: str
    owner: str = ""


class ClaimBook:
    """One process's claims under ``out`` (an ``s3://`` prefix), its heartbeat every lease/4."""

    def __init__(
        self, store: ObjectStore, clock: Clock, out: str, *, lease: float, owner: str
    ) -> None:
        self._store = store
        self._clock = clock
        self._claims = out + CLAIMS
        self._owners = out + OWNERS
        self.lease = lease
        self.owner = owner
        self.held: dict[str, Claim] = {}
        self.beats = 0  # heartbeats written
        self.alive_until = 0.0  # this process's claims hold until then (wall clock)
        self._others: dict[str, float] = {}  # owner: alive until (as last read)
        self._beating = asyncio.Lock()

    def uri(self, item: str) -> str:
        """Where ``item``'s claim lives."""
        return self._claims + item

    def _body(self, record: dict[str, Any]) -> bytes:
        return json.dumps(record, sort_keys=True).encode()

    async def _read(self, uri: str) -> tuple[dict[str, Any], str] | None:
        """The JSON object at ``uri`` and its ETag; None when there is none."""
        while True:
            try:
                got = await self._store.read(uri)
            except Unavailable:
                await self._clock.sleep(min(1.0, self.lease / 10))
                continue
            if isinstance(got, Absent):
                if got is Absent.FORBIDDEN:
                    raise InvocationError(
                        f"{uri} cannot be read (403)", code="AccessDenied", operation="GetObject"
                    )
                return None
            try:
                record = json.loads(got.body)
            except ValueError:
                record = {}  # not ours: lapsed, taken over
            return (record if isinstance(record, dict) else {}), got.etag or ""

    async def read_json(self, uri: str) -> tuple[dict[str, Any], str] | None:
        """The JSON object at ``uri`` (such as a marker) and its ETag; None when there is none."""
        return await self._read(uri)

    async def read(self, item: str) -> tuple[dict[str, Any], str] | None:
        """The claim of ``item`` and its ETag; None when there is none."""
        return await self._read(self.uri(item))

    # -- heartbeats ----------------------------------------------------------------------------
    def live(self, margin: float | None = None) -> bool:
        """True while this process's claims hold for ``margin`` more seconds (lease/4)."""
        margin = self.lease / 4 if margin is None else margin
        return self._clock.wall() + margin < self.alive_until

    async def beat(self, *, closing: bool = False) -> None:
        """Renew this process's heartbeat; first after a lapse, re-assert each held claim.

        ``closing``: end it instead (every claim still held lapses at once).
        """
        async with self._beating:
            now = self._clock.wall()
            lapsed = self.beats > 0 and now >= self.alive_until
            expires = now if closing else now + self.lease
            body = json.dumps({"owner": self.owner, "expires": expires}).encode()
            await self._store.put(self._owners + self.owner, body, content_type=None, deadline=None)
            self.beats += 1
            if lapsed and not closing:
                logger.warning(
                    "this process missed its heartbeat (stalled %.1f s past its lease): "
                    "checking its %d claim(s)",
                    now - self.alive_until,
                    len(self.held),
                )
                await asyncio.gather(*(self._reassert(c) for c in list(self.held.values())))
            self.alive_until = expires

    async def _reassert(self, claim: Claim) -> None:
        try:
            await self.update(claim)
        except InvocationError as exc:  # not known to hold it: give it up
            logger.warning("item %s: its claim could not be re-asserted: %s", claim.item, exc)
            self._lose(claim)

    async def keep_beating(self) -> None:
        """Beat every quarter of a lease, until cancelled (a failed beat is tried next time)."""
        while True:
            await self._clock.sleep(self.lease / 4)
            try:
                await self.beat()
            except InvocationError as exc:
                logger.warning("the heartbeat could not be written: %s", exc)

    async def owners(self) -> list[str]:
        """The owners of live heartbeats (this process's among them), sorted."""
        names: list[str] = []
        token: str | None = None
        bucket, _, prefix = self._owners.removeprefix("s3://").partition("/")
        while True:
            page = await self._store.list_page(bucket, prefix, token, recursive=True)
            names += [key[len(prefix) :] for key in page.keys]
            token = page.next_token
            if token is None:
                break
        now = self._clock.wall()
        live = [self.owner]
        for name in names:
            if name != self.owner and await self.alive(name, now):
                live.append(name)
        return sorted(live)

    async def alive(self, owner: str, now: float | None = None) -> bool:
        """True while ``owner``'s heartbeat is fresh (read again once it is not, as known)."""
        now = self._clock.wall() if now is None else now
        if not owner:
            return False  # released
        if owner == self.owner:
            return True
        if self._others.get(owner, 0.0) > now:
            return True
        found = await self._read(self._owners + owner)
        expires = float(found[0].get("expires", 0.0)) if found is not None else 0.0
        self._others[owner] = expires
        return expires > now

    # -- claims --------------------------------------------------------------------------------
    async def acquire(
        self,
        item: str,
        inference_id: str,
        *,
        takeover: bool = True,
        known: tuple[dict[str, Any], str] | None = None,
    ) -> Claim | Busy:
        """Claim ``item`` (state ``sending``: it is sent next): a :class:`Claim`, or :class:`Busy`.

        ``takeover``: when it is claimed already, read the claim and take it over if its owner's
        heartbeat lapsed; else answer :class:`Busy` at once (one request). ``known``: the
        claim and its ETag as just read (it is not written first).
        """
        for _ in range(8):  # each turn loses a race to another process, which then holds it
            token = uuid.uuid4().hex
            record = {
                "item": item,
                "owner": self.owner,
                "token": token,
                "state": SENDING,
                "inference_id": inference_id,
            }
            if known is None:
                etag = await self._store.put_if(self.uri(item), self._body(record))
                if etag is not None:
                    return self._hold(Claim(item, record, etag))
                if not takeover:
                    return Busy(item)
            found, known = known or await self.read(item), None
            if found is None:
                continue  # gone between the two calls: claim again
            existing, existing_etag = found
            if existing.get("token") == token:  # our own write, answered 412 on a retry
                return self._hold(Claim(item, existing, existing_etag))
            holder = str(existing.get("owner", ""))
            if holder == self.owner and item in self.held:
                return Busy(item, holder)
            if holder != self.owner and await self.alive(holder):
                return Busy(item, holder)
            state = str(existing.get("state"))
            taken = {
                **existing,
                "item": item,
                "owner": self.owner,
                "token": token,
                "inference_id": existing.get("inference_id") or inference_id,
                "state": SUBMITTED if state == SUBMITTED and existing.get("handle") else SENDING,
            }
            etag = await self._store.put_if(
                self.uri(item), self._body(taken), if_match=existing_etag
            )
            if etag is not None:
                if holder:
                    logger.info(
                        "item %s: took over the lapsed claim of %s (%s)", item, holder, state
                    )
                return self._hold(
                    Claim(item, taken, etag, taken_over=bool(holder), previous_state=state)
                )
        raise InvocationError(
            f"the claim of item {item!r} keeps changing under {self.uri(item)}",
            code="ClaimContention",
            operation="PutObject",
        )

    def _hold(self, claim: Claim) -> Claim:
        self.held[claim.item] = claim
        return claim

    def drop(self, claim: Claim) -> None:
        """Stop holding ``claim`` (its item is finished: nothing to re-assert or release)."""
        self.held.pop(claim.item, None)

    async def update(self, claim: Claim, *, release: bool = False, **changes: Any) -> bool:
        """Write ``changes`` to a held claim; False when it was lost (taken over by another).

        ``release``: give the item up (no owner: another process may take it at once).
        """
        async with claim.lock:  # a re-assertion and a step must not race on one ETag
            if claim.lost:
                return False
            record = {**claim.record, **changes, "token": uuid.uuid4().hex}
            if release:
                record["owner"] = ""
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
            if release:
                self.held.pop(claim.item, None)
            return True

    def _lose(self, claim: Claim) -> None:
        if not claim.lost:
            claim.lost = True
            self.held.pop(claim.item, None)
            logger.warning(
                "item %s: another process took it over (this one missed its heartbeat); "
                "leaving it to that process",
                claim.item,
            )

    async def close(self) -> None:
        """Give up every claim still held (best effort): others take them at once."""

        async def release(claim: Claim) -> None:
            unsent = {} if claim.sent else {"state": claim.unsent_state}
            try:
                await self.update(claim, release=True, **unsent)
            except InvocationError as exc:
                logger.warning("item %s: its claim could not be released: %s", claim.item, exc)

        unsent = [claim for claim in self.held.values() if not claim.sent]
        await asyncio.gather(*(release(claim) for claim in unsent))
        try:  # the rest (sent, with their handles) lapse with the heartbeat
            await self.beat(closing=True)
        except InvocationError as exc:
            logger.warning("the heartbeat could not be ended: %s", exc)
