"""ReportTranscript: per-segment upsert, gap-free seq, final never back to interim, validation."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_service, as_user, create, report, segment, violations
from tests.chat_svc.support import ChatInProcess

pytestmark = pytest.mark.grpc


async def _messages(chat: ChatInProcess, conversation_id: str) -> list[pb.Message]:
    listed = await chat.stub.ListMessages(
        api.ListMessagesRequest(conversation_id=conversation_id, page_size=500),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    return list(listed.messages)


async def test_interim_then_final_updates_in_place(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    first = await report(chat.stub, conversation_id, segment("s1", "hel", final=False))
    final = await report(chat.stub, conversation_id, segment("s1", "hello", final=True))
    repeat = await report(chat.stub, conversation_id, segment("s1", "hello", final=True))
    late_interim = await report(chat.stub, conversation_id, segment("s1", "hel", final=False))
    assert [(r.seq, r.revision, r.created) for r in first.results] == [(1, 1, True)]
    assert [(r.seq, r.revision, r.created) for r in final.results] == [(1, 2, False)]
    assert [(r.seq, r.revision) for r in repeat.results] == [(1, 2)]
    assert [(r.seq, r.revision) for r in late_interim.results] == [(1, 2)]
    (stored,) = await _messages(chat, conversation_id)
    assert (stored.text, stored.final, stored.revision, stored.source) == (
        "hello",
        True,
        2,
        pb.MESSAGE_SOURCE_TRANSCRIPT,
    )


async def test_fields_are_stored(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    full = pb.TranscriptSegment(
        segment_id="room:conversation:x/item_1",
        role=pb.ROLE_AGENT,
        text="I was saying",
        final=True,
        interrupted=True,
        start_time=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5000),
        end_time=timestamp_pb2.Timestamp(seconds=1_700_000_002),
        language="en-US",
        confidence=0.5,
        metrics=pb.TurnMetrics(
            end_of_turn_delay=duration_pb2.Duration(nanos=300_000_000),
            llm_time_to_first_token=duration_pb2.Duration(nanos=150_000_000),
            tts_time_to_first_byte=duration_pb2.Duration(seconds=1),
        ),
    )
    await report(chat.stub, conversation_id, full)
    (stored,) = await _messages(chat, conversation_id)
    assert stored.interrupted
    assert stored.role == pb.ROLE_AGENT
    assert stored.language == "en-US"
    assert stored.start_time == full.start_time
    assert stored.end_time == full.end_time
    assert stored.metrics == full.metrics
    assert stored.confidence == pytest.approx(0.5)
    assert stored.sender_id == "voice_worker"


async def test_concurrent_reports_keep_seq_gap_free(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    # Several reporters at once, each segment twice (a retry racing the original).
    await asyncio.gather(
        *(
            report(chat.stub, conversation_id, segment(f"s{n}", f"turn {n}"))
            for n in range(12)
            for _ in range(2)
        )
    )
    stored = await _messages(chat, conversation_id)
    assert [m.seq for m in stored] == list(range(1, 13))
    assert sorted(m.segment_id for m in stored) == sorted(f"s{n}" for n in range(12))


async def test_transcripts_accepted_after_the_call_ended(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    await chat.stub.EndConversation(
        api.EndConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    result = await report(chat.stub, conversation_id, segment("late", "flushed after hang-up"))
    assert result.results[0].created


async def test_user_cannot_report(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.ReportTranscript(
            api.ReportTranscriptRequest(conversation_id=conversation_id, segments=[segment("s", "x")]),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_bad_field_is_named(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    bad = [
        pb.TranscriptSegment(segment_id="", role=pb.ROLE_USER, text="a", final=True),
        pb.TranscriptSegment(segment_id="has space", role=pb.ROLE_USER, text="a", final=True),
        pb.TranscriptSegment(segment_id="ok", role=pb.ROLE_UNSPECIFIED, text="a", final=True),
        pb.TranscriptSegment(segment_id="ok", role=pb.ROLE_USER, text="", final=True),
        pb.TranscriptSegment(segment_id="ok", role=pb.ROLE_USER, text="x" * 20001),
        pb.TranscriptSegment(
            segment_id="ok",
            role=pb.ROLE_USER,
            text="a",
            start_time=timestamp_pb2.Timestamp(seconds=10),
            end_time=timestamp_pb2.Timestamp(seconds=5),
        ),
        pb.TranscriptSegment(segment_id="ok", role=pb.ROLE_USER, text="a", confidence=1.5),
        pb.TranscriptSegment(segment_id="ok", role=pb.ROLE_USER, text="a", language="not a tag"),
        pb.TranscriptSegment(
            segment_id="ok",
            role=pb.ROLE_AGENT,
            text="a",
            metrics=pb.TurnMetrics(tts_time_to_first_byte=duration_pb2.Duration(seconds=-1)),
        ),
        pb.TranscriptSegment(segment_id="ok", role=pb.ROLE_USER, text="a", interrupted=True),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.ReportTranscript(
            api.ReportTranscriptRequest(conversation_id=conversation_id, segments=bad),
            metadata=as_service(),
            timeout=TIMEOUT,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [
        "segments[0].segment_id",
        "segments[1].segment_id",
        "segments[2].role",
        "segments[3].text",
        "segments[4].text",
        "segments[5].end_time",
        "segments[6].confidence",
        "segments[7].language",
        "segments[8].metrics.tts_time_to_first_byte",
        "segments[9].interrupted",
    ]
    assert await _messages(chat, conversation_id) == []
    for segments, expected in (([], "segments"), ([segment(f"s{n}", "a") for n in range(101)], "segments")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat.stub.ReportTranscript(
                api.ReportTranscriptRequest(conversation_id=conversation_id, segments=segments),
                metadata=as_service(),
                timeout=TIMEOUT,
            )
        assert violations(caught.value) == [expected]


async def test_call_metadata_is_merged_into_the_conversation(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    for providers in ("offline", "offline", "cloud"):
        await chat.stub.ReportTranscript(
            api.ReportTranscriptRequest(
                conversation_id=conversation_id,
                segments=[segment("s1", "hello")],
                call_metadata={"providers": providers, "stt": "whisper-tiny.en"},
            ),
            metadata=as_service(),
            timeout=TIMEOUT,
        )
    got = await chat.stub.GetConversation(
        api.GetConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    assert got.conversation.metadata["providers"] == "cloud"
    assert got.conversation.metadata["stt"] == "whisper-tiny.en"
    # What chat_svc itself put there at call setup is kept.
    assert got.conversation.metadata["agent_name"] == "syntera-voice"


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ({"Providers": "offline"}, "call_metadata"),
        ({"a.b": "x"}, "call_metadata"),
        ({"$set": "x"}, "call_metadata"),
        ({"stt": "x" * 201}, "call_metadata[stt]"),
        ({f"k{i}": "v" for i in range(17)}, "call_metadata"),
    ],
)
async def test_bad_call_metadata_is_named(chat: ChatInProcess, entries: dict[str, str], field: str) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    refused = await _refused_report(chat, conversation_id, entries)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(refused)


async def _refused_report(
    chat: ChatInProcess, conversation_id: str, call_metadata: dict[str, str]
) -> grpc.aio.AioRpcError:
    """The error of a one-segment report with `call_metadata` that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.ReportTranscript(
            api.ReportTranscriptRequest(
                conversation_id=conversation_id,
                segments=[segment("s1", "hello")],
                call_metadata=call_metadata,
            ),
            metadata=as_service(),
            timeout=TIMEOUT,
        )
    return caught.value


@pytest.mark.parametrize("call_metadata", [{}, {"providers": "offline"}])
async def test_a_report_for_an_unknown_conversation_is_not_found(
    chat: ChatInProcess, call_metadata: dict[str, str]
) -> None:
    # The first report of a conversation checks it exists, in the metadata merge when there is one.
    unknown = "0" * 32
    refused = await _refused_report(chat, unknown, call_metadata)
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in (refused.details() or "")


async def test_the_first_transcript_of_a_new_call_is_seq_1(chat: ChatInProcess) -> None:
    # A conversation this replica created starts at seq 1 without reading for the top seq.
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    first = await report(chat.stub, conversation_id, segment("s1", "hello"))
    second = await report(chat.stub, conversation_id, segment("s2", "again"))
    assert [r.seq for r in first.results] + [r.seq for r in second.results] == [1, 2]
