"""Fills a conversation store the way months of use would, so benches measure a store that has been used.

Conversations and messages are built with chat_svc's own domain records and document mappers, so
they have exactly the shape chat_svc writes (indexes included). They are written with
`insert_many` straight into the store: going through the API would take longer than the
benchmarks themselves, and what matters here is what the store holds, not how it got there.

`python -m bench.seed --uri mongodb://127.0.0.1:PORT --database NAME [--conversations N]
[--messages M]` seeds a running store from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

from pymongo import AsyncMongoClient

from chat_svc.records import Channel, Conversation, Message, Role, Source, Status
from chat_svc.store import Collections, Document, conversation_to_doc, ensure_indexes, message_to_doc
from servicekit.times import now_us

DEFAULT_CONVERSATIONS = 10_000
DEFAULT_MESSAGES = 100_000
# Users that own the seeded conversations: enough that one user's listing stays realistic.
SEED_USERS = 500
_BATCH = 1_000
_SENTENCES = (
    "Hello, I would like to know more about my order.",
    "Of course, could you tell me the order number?",
    "It should have arrived on Tuesday but it did not.",
    "I am sorry about that, let me check what happened.",
)


@dataclass(frozen=True)
class Seeded:
    """What a seeding run wrote."""

    conversations: int
    messages: int
    seconds: float


def seed_user(n: int) -> str:
    """The user id of the n-th seeded owner; bench users never collide with these."""
    return f"seed-user-{n % SEED_USERS}"


def _conversation(n: int, created_us: int) -> Conversation:
    conversation_id = uuid.uuid4().hex
    voice = n % 3 != 0
    return Conversation(
        conversation_id=conversation_id,
        user_id=seed_user(n),
        agent_id="default",
        channel=Channel.VOICE if voice else Channel.TEXT,
        status=Status.ENDED,
        title=f"seeded conversation {n}",
        room_name=f"conv-{conversation_id}",
        metadata={},
        create_time_us=created_us,
        end_time_us=created_us + 60_000_000,
        duration_us=60_000_000 if voice else None,
    )


def _message(conversation: Conversation, seq: int) -> Message:
    at = conversation.create_time_us + seq * 1_000_000
    user_turn = seq % 2 == 1
    voice = conversation.channel is not Channel.TEXT
    return Message(
        message_id=uuid.uuid4().hex,
        conversation_id=conversation.conversation_id,
        seq=seq,
        revision=1,
        role=Role.USER if user_turn else Role.AGENT,
        source=Source.TRANSCRIPT if voice else Source.TEXT,
        text=_SENTENCES[seq % len(_SENTENCES)],
        final=True,
        interrupted=False,
        sender_id=conversation.user_id if user_turn else conversation.agent_id,
        create_time_us=at,
        update_time_us=at,
        segment_id=f"seg-{seq}" if voice else None,
        request_id=None if voice else uuid.uuid4().hex,
    )


async def seed(
    collections: Collections, *, conversations: int = DEFAULT_CONVERSATIONS, messages: int = DEFAULT_MESSAGES
) -> Seeded:
    """Writes `conversations` ended conversations holding `messages` messages between them."""
    started = time.perf_counter()
    await ensure_indexes(collections)
    per_conversation, extra = divmod(messages, max(conversations, 1))
    base_us = now_us() - conversations * 120_000_000
    conv_batch: list[Document] = []
    msg_batch: list[Document] = []
    written_messages = 0
    for n in range(conversations):
        conversation = _conversation(n, base_us + n * 120_000_000)
        conv_batch.append(conversation_to_doc(conversation))
        for seq in range(1, per_conversation + (1 if n < extra else 0) + 1):
            msg_batch.append(message_to_doc(_message(conversation, seq)))
        if len(msg_batch) >= _BATCH:
            await collections.messages.insert_many(msg_batch, ordered=False)
            written_messages += len(msg_batch)
            msg_batch = []
        if len(conv_batch) >= _BATCH:
            await collections.conversations.insert_many(conv_batch, ordered=False)
            conv_batch = []
    if msg_batch:
        await collections.messages.insert_many(msg_batch, ordered=False)
        written_messages += len(msg_batch)
    if conv_batch:
        await collections.conversations.insert_many(conv_batch, ordered=False)
    return Seeded(conversations, written_messages, time.perf_counter() - started)


async def seed_uri(
    uri: str, database: str, *, conversations: int = DEFAULT_CONVERSATIONS, messages: int = DEFAULT_MESSAGES
) -> Seeded:
    """`seed` on the store at `uri`, in the database chat_svc is configured with."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, timeoutMS=600_000)
    try:
        collections = Collections.of(client[database])
        return await seed(collections, conversations=conversations, messages=messages)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--conversations", type=int, default=DEFAULT_CONVERSATIONS)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    args = parser.parse_args()
    done = asyncio.run(
        seed_uri(args.uri, args.database, conversations=args.conversations, messages=args.messages)
    )
    print(f"seeded {done.conversations} conversations, {done.messages} messages in {done.seconds:.1f} s")


if __name__ == "__main__":
    main()
