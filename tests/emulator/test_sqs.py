"""The embedded moto's SQS where clients sharing a queue can tell it from SQS."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any


async def test_a_message_visible_again_goes_to_any_waiting_receive(aws: dict[str, Any]) -> None:
    """SQS hands a message whose visibility ended to a long poll under way, whichever. moto's
    long polls looked again only once a second from their start, so the client that gave the
    message back (and polled again at once) looked just after it came back, every time, and a
    client already waiting almost never got it: on a shared queue, a result could miss its
    owner for a minute (0 of 24 here)."""
    sqs = aws["sqs"]

    async def lane(rounds: int) -> int:
        """How often, of ``rounds``, a poll already waiting got the message back."""
        url = (await sqs.create_queue(QueueName=f"fair-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody="m")

        async def receive(wait: int) -> list[dict[str, Any]]:
            answer = await sqs.receive_message(
                QueueUrl=url, WaitTimeSeconds=wait, VisibilityTimeout=30
            )
            return list(answer.get("Messages", []))

        (message,) = await receive(1)
        waiting_got = 0
        for _ in range(rounds):
            # The holder gives it back for 1 s and polls again at once; another poll waits.
            waiting = asyncio.create_task(receive(2))
            await asyncio.sleep(0.1)  # the waiting poll is under way
            await sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=1
            )
            holder = asyncio.create_task(receive(2))
            done, _ = await asyncio.wait({waiting, holder}, return_when=asyncio.FIRST_COMPLETED)
            winner = done.pop()
            (message,) = winner.result()
            waiting_got += winner is waiting
            assert await (holder if winner is waiting else waiting) == []  # ends empty
        return waiting_got

    # (Three queues at once: 6 polls, within the client's 10 connections.)
    wins = await asyncio.gather(lane(8), lane(8), lane(8))
    # A fair race gives the waiting poll about half (10 of 24 in two runs here); 0 of 24 with
    # a share of 0.3 would be 1 in 5,000.
    assert sum(wins) > 0, wins
