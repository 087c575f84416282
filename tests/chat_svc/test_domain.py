"""chat_svc's rules on conversations, messages and transcripts, without a store or a server.

The domain runs on the hand-written store fake (`tests.chat_svc.fakes`), with the indexes that
`ensure_indexes` declares, so each test takes milliseconds. The grpc and mesh tiers still cover the
wire and the real store; these cover the rules, including the races and store failures those tiers
rarely reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from pymongo.errors import AutoReconnect, NetworkTimeout

from chat_svc.conversations import Conversations, CreateInput
from chat_svc.messages import MessageLog
from chat_svc.records import CallState, Channel, Conversation, Message, Role, Status
from chat_svc.store import ensure_indexes
from chat_svc.transcripts import SegmentInput, Transcripts, segment_message_id
from chat_svc.validation import RawTime
from servicekit.auth import Principal
from servicekit.errors import DomainError, ErrorKind
from tests.chat_svc.fakes import FakeCallSetup, FakeCollection, StoreDown, fake_collections

pytestmark = pytest.mark.unit

ALICE = Principal("alice", is_service=False)
BOB = Principal("bob", is_service=False)
WORKER = Principal("voice_worker", is_service=True)
PAGE_SIZE, PAGE_SIZE_MAX = 3, 10


@dataclass
class Domain:
    conversations: Conversations
    messages: MessageLog
    transcripts: Transcripts
    calls: FakeCallSetup
    conversation_docs: FakeCollection
    message_docs: FakeCollection


@pytest.fixture
async def domain() -> Domain:
    collections, conversation_docs, message_docs = fake_collections()
    await ensure_indexes(collections)
    calls = FakeCallSetup()
    conversations = Conversations(collections, calls, PAGE_SIZE, PAGE_SIZE_MAX)
    messages = MessageLog(collections, conversations, PAGE_SIZE, PAGE_SIZE_MAX)
    return Domain(
        conversations,
        messages,
        Transcripts(collections, conversations, messages),
        calls,
        conversation_docs,
        message_docs,
    )


def request(channel: Channel | None = Channel.TEXT, **fields: str) -> CreateInput:
    values = {"agent_id": "default", "title": "", "request_id": ""} | fields
    return CreateInput(channel=channel, **values)


async def create(domain: Domain, channel: Channel = Channel.TEXT, who: Principal = ALICE) -> Conversation:
    return (await domain.conversations.create(who, request(channel))).conversation


def fields_of(caught: pytest.ExceptionInfo[DomainError]) -> list[str]:
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    return [v.field for v in caught.value.violations]


# -- conversations ---------------------------------------------------------------------------------


async def test_a_text_conversation_needs_no_call_and_asks_agent_svc_for_no_grant(domain: Domain) -> None:
    created = await domain.conversations.create(ALICE, request(title="Billing"))
    assert created.join is None
    stored = await domain.conversations.get(ALICE, created.conversation.conversation_id)
    assert (stored.status, stored.channel, stored.title, stored.room_name) == (
        Status.ACTIVE,
        Channel.TEXT,
        "Billing",
        "",
    )
    assert stored.call is None
    assert domain.calls.grants == []


async def test_a_call_gets_its_grant_before_it_is_stored_and_waits_for_its_user(domain: Domain) -> None:
    created = await domain.conversations.create(ALICE, request(Channel.VOICE))
    conversation = created.conversation
    assert created.join is not None
    assert conversation.room_name == created.join.room_name == f"conversation:{conversation.conversation_id}"
    assert conversation.metadata["agent_name"] == "syntera-voice"
    assert conversation.metadata["dispatch"] == "token"
    assert conversation.call is not None
    assert (conversation.call.state, conversation.call.revision) == (CallState.WAITING, 0)
    assert domain.calls.grants == [(conversation.conversation_id, "alice", "default", Channel.VOICE)]


async def test_agent_svc_down_or_an_unknown_agent_leaves_nothing_stored(domain: Domain) -> None:
    with pytest.raises(DomainError) as caught:
        await domain.conversations.create(ALICE, request(Channel.VOICE, agent_id="nobody"))
    assert caught.value.kind is ErrorKind.NOT_FOUND
    domain.calls.down = True
    with pytest.raises(DomainError) as caught:
        await domain.conversations.create(ALICE, request(Channel.VOICE))
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert domain.conversation_docs.docs == {}


async def test_a_repeated_request_id_returns_the_first_conversation_with_a_fresh_grant(
    domain: Domain,
) -> None:
    first = await domain.conversations.create(ALICE, request(Channel.VOICE, request_id="req-1"))
    again = await domain.conversations.create(ALICE, request(Channel.VOICE, request_id="req-1"))
    bobs = await domain.conversations.create(BOB, request(Channel.VOICE, request_id="req-1"))
    assert again.conversation.conversation_id == first.conversation.conversation_id
    assert again.join is not None
    assert first.join is not None
    assert again.join.token != first.join.token
    assert bobs.conversation.conversation_id != first.conversation.conversation_id
    assert len(domain.conversation_docs.docs) == 2


async def test_a_concurrent_create_with_the_same_request_id_answers_with_the_winner(domain: Domain) -> None:
    winner = await domain.conversations.create(BOB, request(request_id="req-1"))
    winner_doc = domain.conversation_docs.docs[winner.conversation.conversation_id]

    def another_replica_inserts_first(doc: dict[str, object]) -> None:
        domain.conversation_docs.before_insert = None
        domain.conversation_docs.put({**winner_doc, "_id": "raced", "user_id": "alice"})

    domain.conversation_docs.before_insert = another_replica_inserts_first
    created = await domain.conversations.create(ALICE, request(request_id="req-1"))
    assert created.conversation.conversation_id == "raced"
    assert [d["_id"] for d in domain.conversation_docs.docs.values() if d["user_id"] == "alice"] == ["raced"]


async def test_every_bad_create_field_is_named_at_once(domain: Domain) -> None:
    with pytest.raises(DomainError) as caught:
        await domain.conversations.create(
            ALICE, request(None, agent_id="no spaces", title="x" * 201, request_id="has space")
        )
    assert fields_of(caught) == ["agent_id", "channel", "title", "request_id"]
    with pytest.raises(DomainError) as caught:
        await domain.conversations.create(ALICE, request(title="bell\x07"))
    assert fields_of(caught) == ["title"]


async def test_only_the_owner_or_a_service_may_open_a_conversation(domain: Domain) -> None:
    conversation_id = (await create(domain)).conversation_id
    assert (await domain.conversations.get(WORKER, conversation_id)).user_id == "alice"
    with pytest.raises(DomainError) as caught:
        await domain.conversations.get(BOB, conversation_id)
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.PERMISSION_DENIED, "NOT_CONVERSATION_OWNER")
    with pytest.raises(DomainError) as caught:
        await domain.conversations.get(ALICE, "0" * 32)
    assert caught.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(DomainError) as caught:
        await domain.conversations.get(ALICE, "not/an/id")
    assert fields_of(caught) == ["conversation_id"]


async def test_listing_is_the_callers_newest_first_in_pages_with_each_last_seq(domain: Domain) -> None:
    ids = [(await create(domain)).conversation_id for _ in range(5)]
    await create(domain, who=BOB)
    for conversation_id in ids:  # same microsecond or not: the id breaks ties
        domain.conversation_docs.docs[conversation_id]["create_time"] = 1_000
    domain.conversation_docs.docs[ids[0]]["create_time"] = 2_000
    await domain.messages.send(ALICE, ids[1], "hello", "")
    await domain.messages.send(ALICE, ids[1], "again", "")

    first, token = await domain.conversations.list(ALICE, 0, "")
    second, end = await domain.conversations.list(ALICE, 0, token)
    listed = [c.conversation_id for c in first + second]
    assert len(first) == PAGE_SIZE
    assert end == ""
    assert listed == [ids[0], *sorted(ids[1:], reverse=True)]
    assert {c.conversation_id: c.last_seq for c in first + second}[ids[1]] == 2
    with pytest.raises(DomainError) as caught:
        await domain.conversations.list(ALICE, PAGE_SIZE_MAX + 1, "")
    assert fields_of(caught) == ["page_size"]
    with pytest.raises(DomainError) as caught:
        await domain.conversations.list(ALICE, 0, "p1.not-json")
    assert fields_of(caught) == ["page_token"]


async def test_hanging_up_ends_once_and_deletes_the_room(domain: Domain) -> None:
    conversation = await create(domain, Channel.VIDEO)
    ended = await domain.conversations.end(ALICE, conversation.conversation_id)
    again = await domain.conversations.end(ALICE, conversation.conversation_id)
    assert ended.status is Status.ENDED
    assert ended.end_time_us is not None
    assert ended.duration_us is not None
    assert ended.duration_us == ended.end_time_us - conversation.create_time_us
    assert again.end_time_us == ended.end_time_us
    assert domain.calls.deleted == [conversation.conversation_id]
    assert again.metadata["room_cleanup"] == "done"


async def test_a_room_that_cannot_be_deleted_leaves_the_hang_up_standing(domain: Domain) -> None:
    conversation = await create(domain, Channel.VOICE)
    domain.calls.delete_fails = True
    ended = await domain.conversations.end(ALICE, conversation.conversation_id)
    assert ended.status is Status.ENDED
    assert ended.metadata["room_cleanup"] == "pending"


async def test_a_call_that_ends_closes_only_an_open_conversation(domain: Domain) -> None:
    conversation = await create(domain, Channel.VOICE)
    await domain.conversations.end_with_call(conversation, conversation.create_time_us + 5_000_000)
    ended = await domain.conversations.load(conversation.conversation_id)
    assert (ended.status, ended.duration_us, ended.metadata["ended_by"]) == (Status.ENDED, 5_000_000, "call")
    await domain.conversations.end_with_call(conversation, conversation.create_time_us + 9_000_000)
    assert (await domain.conversations.load(conversation.conversation_id)).duration_us == 5_000_000


@pytest.mark.parametrize("error", [AutoReconnect("connection refused"), NetworkTimeout("timed out")])
async def test_a_store_that_is_unreachable_or_slow_is_unavailable_not_unknown(
    domain: Domain, error: Exception
) -> None:
    conversation_id = (await create(domain)).conversation_id
    domain.conversation_docs.fail_next("find_one", error)
    with pytest.raises(DomainError) as caught:
        await domain.conversations.get(ALICE, conversation_id)
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.UNAVAILABLE, "STORE_UNAVAILABLE")
    assert (await domain.conversations.get(ALICE, conversation_id)).conversation_id == conversation_id


async def test_any_other_store_error_is_not_dressed_up_as_unavailable(domain: Domain) -> None:
    conversation_id = (await create(domain)).conversation_id
    domain.conversation_docs.fail_next("find_one", StoreDown("bad query"))
    with pytest.raises(StoreDown):
        await domain.conversations.get(ALICE, conversation_id)


# -- messages --------------------------------------------------------------------------------------


async def test_messages_take_seqs_one_two_three(domain: Domain) -> None:
    conversation_id = (await create(domain)).conversation_id
    sent = [await domain.messages.send(ALICE, conversation_id, text, "") for text in ("a", "b", "c")]
    assert [(m.seq, m.revision, m.role, m.final) for m in sent] == [
        (1, 1, Role.USER, True),
        (2, 1, Role.USER, True),
        (3, 1, Role.USER, True),
    ]
    assert (await domain.messages.send(WORKER, conversation_id, "from the agent", "")).role is Role.AGENT


async def test_a_seq_taken_by_another_replica_is_skipped_without_a_gap(domain: Domain) -> None:
    conversation_id = (await create(domain)).conversation_id
    await domain.messages.send(ALICE, conversation_id, "mine", "")
    # Another replica stores seq 2 between this one's read and its insert: this one's hint (2) fails
    # on the unique index, and it reads the highest seq again.
    other = {**domain.message_docs.docs[next(iter(domain.message_docs.docs))], "_id": "other", "seq": 2}
    domain.message_docs.put(other)
    mine = await domain.messages.send(ALICE, conversation_id, "next", "")
    assert mine.seq == 3
    assert sorted(d["seq"] for d in domain.message_docs.docs.values()) == [1, 2, 3]


async def test_endless_contention_is_unavailable_rather_than_a_hang(domain: Domain) -> None:
    conversation_id = (await create(domain)).conversation_id
    stolen = iter(range(1_000_000))

    def another_writer_takes_the_seq(doc: dict[str, object]) -> None:
        domain.message_docs.put({**doc, "_id": f"other-{next(stolen)}"})

    domain.message_docs.before_insert = another_writer_takes_the_seq
    with pytest.raises(DomainError) as caught:
        await domain.messages.send(ALICE, conversation_id, "never stored", "")
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.UNAVAILABLE, "SEQ_CONTENTION")


async def test_a_retried_send_returns_the_stored_message_and_tells_listeners_it_is_not_new(
    domain: Domain,
) -> None:
    conversation_id = (await create(domain)).conversation_id
    told: list[tuple[str, int, bool]] = []

    async def listener(principal: Principal, conversation: Conversation, message: Message, new: bool) -> None:
        told.append((principal.subject, message.seq, new))

    domain.messages.on_sent(listener)
    first = await domain.messages.send(ALICE, conversation_id, "hello", "req-1")
    again = await domain.messages.send(ALICE, conversation_id, "hello (retry)", "req-1")
    assert again == first
    assert told == [("alice", 1, True), ("alice", 1, False)]
    assert len(domain.message_docs.docs) == 1


async def test_an_ended_conversation_takes_no_new_message_but_answers_a_retry(domain: Domain) -> None:
    conversation_id = (await create(domain)).conversation_id
    stored = await domain.messages.send(ALICE, conversation_id, "before", "req-1")
    await domain.conversations.end(ALICE, conversation_id)
    assert await domain.messages.send(ALICE, conversation_id, "before", "req-1") == stored
    with pytest.raises(DomainError) as caught:
        await domain.messages.send(ALICE, conversation_id, "after", "req-2")
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.FAILED_PRECONDITION, "CONVERSATION_ENDED")


@pytest.mark.parametrize(("text", "request_id"), [(" \n\t", ""), ("x" * 4001, ""), ("ok", "a b")])
async def test_bad_messages_name_their_field(domain: Domain, text: str, request_id: str) -> None:
    conversation_id = (await create(domain)).conversation_id
    with pytest.raises(DomainError) as caught:
        await domain.messages.send(ALICE, conversation_id, text, request_id)
    assert fields_of(caught) == (["request_id"] if request_id else ["text"])
    assert domain.message_docs.docs == {}


async def test_listing_messages_pages_after_a_seq_and_refuses_another_conversations_token(
    domain: Domain,
) -> None:
    conversation_id = (await create(domain)).conversation_id
    other_id = (await create(domain)).conversation_id
    for n in range(7):
        await domain.messages.send(ALICE, conversation_id, f"m{n}", "")
    page, token = await domain.messages.list(ALICE, conversation_id, 0, "", after_seq=2)
    rest, end = await domain.messages.list(ALICE, conversation_id, 0, token, after_seq=2)
    assert [m.seq for m in page] == [3, 4, 5]
    assert [m.seq for m in rest] == [6, 7]
    assert end == ""
    with pytest.raises(DomainError) as caught:
        await domain.messages.list(ALICE, other_id, 0, token, after_seq=0)
    assert fields_of(caught) == ["page_token"]
    with pytest.raises(DomainError) as caught:
        await domain.messages.list(BOB, conversation_id, 0, "", after_seq=0)
    assert caught.value.kind is ErrorKind.PERMISSION_DENIED


# -- transcripts -----------------------------------------------------------------------------------


def segment(
    segment_id: str, text: str, *, role: Role | None = Role.USER, final: bool = True, **more: object
) -> SegmentInput:
    values: dict[str, object] = {
        "interrupted": False,
        "start_time": None,
        "end_time": None,
        "language": "",
        "confidence": 0.0,
    } | more
    return SegmentInput(segment_id=segment_id, role=role, text=text, final=final, **values)  # type: ignore[arg-type]


async def test_only_services_report_transcripts(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    with pytest.raises(DomainError) as caught:
        await domain.transcripts.report(ALICE, conversation_id, [segment("s1", "hi")])
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.PERMISSION_DENIED, "SERVICE_ONLY")


async def test_a_segment_is_one_message_updated_in_place_and_a_repeat_changes_nothing(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    report = domain.transcripts.report
    (interim,) = await report(WORKER, conversation_id, [segment("call:user:0", "I would", final=False)])
    (final,) = await report(WORKER, conversation_id, [segment("call:user:0", "I would like tea")])
    (repeat,) = await report(WORKER, conversation_id, [segment("call:user:0", "I would like tea")])
    (late,) = await report(WORKER, conversation_id, [segment("call:user:0", "I would", final=False)])
    assert (interim.seq, interim.revision, interim.created) == (1, 1, True)
    assert (final.seq, final.revision, final.created) == (1, 2, False)
    assert (repeat.revision, late.revision) == (2, 2)  # a retry, and an interim after the final: no-ops
    stored = domain.message_docs.docs[segment_message_id(conversation_id, "call:user:0")]
    assert (stored["text"], stored["final"], stored["revision"]) == ("I would like tea", True, 2)
    assert len(domain.message_docs.docs) == 1


async def test_segments_interleave_with_typed_messages_in_seq_order(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    results = await domain.transcripts.report(
        WORKER, conversation_id, [segment("g", "Hello!", role=Role.AGENT), segment("u0", "hi")]
    )
    typed = await domain.messages.send(ALICE, conversation_id, "typed", "")
    (answer,) = await domain.transcripts.report(
        WORKER, conversation_id, [segment("a1", "Hi!", role=Role.AGENT)]
    )
    assert [r.seq for r in results] + [typed.seq, answer.seq] == [1, 2, 3, 4]


async def test_a_segment_keeps_the_role_of_its_first_report(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "hi")])
    with pytest.raises(DomainError) as caught:
        await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "hi", role=Role.AGENT)])
    assert fields_of(caught) == ["segments[0].role"]


async def test_turns_are_still_taken_after_the_hang_up(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    await domain.conversations.end(ALICE, conversation_id)
    (result,) = await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "flushed late")])
    assert result.created


async def test_an_update_racing_another_replicas_update_is_applied_on_top_of_it(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "one", final=False)])
    stored = domain.message_docs.docs[segment_message_id(conversation_id, "s1")]

    def another_replica_updates_first(_query: object) -> None:
        domain.message_docs.before_update = None
        stored.update(text="one two", revision=2)

    domain.message_docs.before_update = another_replica_updates_first
    (result,) = await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "one two three")])
    assert (result.revision, stored["revision"], stored["text"]) == (3, 3, "one two three")


async def test_call_metadata_is_merged_and_written_only_when_it_changes(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    labels = {"providers": "offline", "stt_model": "tiny.en"}
    for _ in range(3):
        await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "hi")], labels)
    await domain.transcripts.report(
        WORKER, conversation_id, [segment("s1", "hi")], labels | {"providers": "cloud"}
    )
    metadata = domain.conversation_docs.docs[conversation_id]["metadata"]
    assert (metadata["providers"], metadata["stt_model"], metadata["agent_name"]) == (
        "cloud",
        "tiny.en",
        "syntera-voice",
    )
    assert domain.conversation_docs.calls.count("update_one") == 2
    with pytest.raises(DomainError) as caught:
        await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "hi")], {"Bad-Key": "x"})
    assert fields_of(caught) == ["call_metadata"]


async def test_a_report_for_an_unknown_conversation_is_not_found_and_stores_nothing(domain: Domain) -> None:
    with pytest.raises(DomainError) as caught:
        await domain.transcripts.report(WORKER, "0" * 32, [segment("s1", "hi")])
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert domain.message_docs.docs == {}


async def test_every_bad_segment_field_is_named_and_nothing_is_stored(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    bad = [
        segment("", "no id"),
        segment("spaces are not allowed", "x"),
        segment("s2", "x", role=None),
        segment("s3", "   "),
        segment("s4", "x", interrupted=True),
        segment("s5", "x", start_time=RawTime(10, 0), end_time=RawTime(9, 0)),
        segment("s6", "x", language="english!"),
        segment("s7", "x", confidence=math.nan),
        segment("s8", "x", end_of_turn_delay=RawTime(-1, 0)),
    ]
    with pytest.raises(DomainError) as caught:
        await domain.transcripts.report(WORKER, conversation_id, bad)
    assert fields_of(caught) == [
        "segments[0].segment_id",
        "segments[1].segment_id",
        "segments[2].role",
        "segments[3].text",
        "segments[4].interrupted",
        "segments[5].end_time",
        "segments[6].language",
        "segments[7].confidence",
        "segments[8].metrics.end_of_turn_delay",
    ]
    with pytest.raises(DomainError) as caught:
        await domain.transcripts.report(WORKER, conversation_id, [segment(f"s{n}", "x") for n in range(101)])
    assert fields_of(caught) == ["segments"]
    assert domain.message_docs.docs == {}


async def test_an_interim_segment_may_be_empty(domain: Domain) -> None:
    conversation_id = (await create(domain, Channel.VOICE)).conversation_id
    (result,) = await domain.transcripts.report(WORKER, conversation_id, [segment("s1", "", final=False)])
    assert (result.created, result.seq) == (True, 1)
