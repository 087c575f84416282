"""AgentService over real gRPC on the embedded store (nx-27017)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pymongo import AsyncMongoClient

from agent_svc.agent_store import COLLECTION, AgentDirectory
from syntera.agent.v1 import agent_service_pb2 as pb
from syntera.agent.v1 import resources_pb2 as res
from tests.agent_svc.conftest import AgentSvc
from tests.agent_svc.support import RichError, rich_error
from tests.conftest import Store
from tests.support.identity import bearer, service_token, user_token

pytestmark = pytest.mark.grpc

ALICE = bearer(user_token("alice"))
BOB = bearer(user_token("bob"))
SERVICE = bearer(service_token("ops"))


def _agent(name: str = "Helper", **fields: object) -> res.Agent:
    return res.Agent(display_name=name, **fields)  # type: ignore[arg-type]


async def test_default_profile_is_seeded(agent_svc: AgentSvc) -> None:
    reply = await agent_svc.agents.GetAgent(pb.GetAgentRequest(agent_id="default"), metadata=ALICE)
    assert reply.agent.agent_id == "default"
    assert reply.agent.display_name
    assert reply.agent.owner_id == ""
    assert reply.agent.create_time.seconds > 0


async def test_seeding_again_keeps_edits(agent_svc: AgentSvc, store: Store, database_name: str) -> None:
    await agent_svc.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=res.Agent(agent_id="default", greeting="Hi from ops"),
            update_mask=field_mask_pb2.FieldMask(paths=["greeting"]),
        ),
        metadata=SERVICE,
    )
    # What a restart does: seed again (with $setOnInsert), and the edit survives.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store.uri, tz_aware=True)
    try:
        await AgentDirectory(client[database_name][COLLECTION]).prepare()
    finally:
        await client.close()
    reply = await agent_svc.agents.GetAgent(pb.GetAgentRequest(agent_id="default"), metadata=ALICE)
    assert reply.agent.greeting == "Hi from ops"


async def test_create_get_list_update(agent_svc: AgentSvc) -> None:
    created = (
        await agent_svc.agents.CreateAgent(
            pb.CreateAgentRequest(
                agent=_agent(
                    "Zed",
                    instructions="Be brief.",
                    greeting="Hi",
                    voice_settings=res.VoiceSettings(
                        voice="en-us",
                        language="en-US",
                        speaking_rate=1.25,
                        stt_model="whisper-tiny.en",
                        llm_model="openai/gpt-4.1-mini",
                        tts_model="espeak-ng",
                        provider_mode=res.PROVIDER_MODE_OFFLINE,
                    ),
                )
            ),
            metadata=ALICE,
        )
    ).agent
    assert len(created.agent_id) == 32
    assert created.owner_id == "alice"
    assert created.voice_settings.provider_mode == res.PROVIDER_MODE_OFFLINE
    fetched = (
        await agent_svc.agents.GetAgent(pb.GetAgentRequest(agent_id=created.agent_id), metadata=BOB)
    ).agent
    assert fetched == created

    updated = (
        await agent_svc.agents.UpdateAgent(
            pb.UpdateAgentRequest(
                agent=res.Agent(
                    agent_id=created.agent_id,
                    display_name="Ignored because not in mask",
                    greeting="Hello there",
                    voice_settings=res.VoiceSettings(voice="en-gb", language="xx-ignored"),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["greeting", "voice_settings.voice"]),
            ),
            metadata=ALICE,
        )
    ).agent
    assert updated.display_name == "Zed"
    assert updated.greeting == "Hello there"
    assert updated.voice_settings.voice == "en-gb"
    assert updated.voice_settings.language == "en-US"
    assert updated.voice_settings.speaking_rate == 1.25
    assert updated.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()
    assert updated.create_time == created.create_time


async def test_create_is_idempotent_on_request_id(agent_svc: AgentSvc) -> None:
    request = pb.CreateAgentRequest(agent=_agent("Once"), request_id="req-1")
    first = await agent_svc.agents.CreateAgent(request, metadata=ALICE)
    second = await agent_svc.agents.CreateAgent(request, metadata=ALICE)
    assert first.agent.agent_id == second.agent.agent_id
    # Another user's request id is their own.
    other = await agent_svc.agents.CreateAgent(request, metadata=BOB)
    assert other.agent.agent_id != first.agent.agent_id


async def test_list_pages_by_display_name(agent_svc: AgentSvc) -> None:
    names = ["delta", "alpha", "charlie", "bravo", "alpha"]
    for name in names:
        await agent_svc.agents.CreateAgent(pb.CreateAgentRequest(agent=_agent(name)), metadata=ALICE)
    seen: list[str] = []
    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await agent_svc.agents.ListAgents(
            pb.ListAgentsRequest(page_size=2, page_token=token), metadata=ALICE
        )
        pages += 1
        assert len(reply.agents) <= 2
        seen += [a.display_name for a in reply.agents]
        ids += [a.agent_id for a in reply.agents]
        token = reply.next_page_token
        if not token:
            break
    expected = sorted([*names, "Syntera Assistant"])
    assert seen == expected
    assert len(set(ids)) == len(ids) == 6
    assert pages == 3


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListAgentsRequest(page_size=-1), "page_size"),
        (pb.ListAgentsRequest(page_token="garbage!"), "page_token"),
        (pb.ListAgentsRequest(page_token="WzFd"), "page_token"),
    ],
)
async def test_list_rejects_bad_paging(
    agent_svc: AgentSvc, request_: pb.ListAgentsRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.agents.ListAgents(request_, metadata=ALICE)
    error = rich_error(caught.value)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


@pytest.mark.parametrize(
    ("agent", "fields"),
    [
        (res.Agent(), ["agent.display_name"]),
        (_agent("   "), ["agent.display_name"]),
        (_agent("x" * 101), ["agent.display_name"]),
        (_agent("bell\x07"), ["agent.display_name"]),
        (_agent(instructions="i" * 20001), ["agent.instructions"]),
        (_agent(greeting="g" * 1001), ["agent.greeting"]),
        (_agent(voice_settings=res.VoiceSettings(speaking_rate=0.4)), ["agent.voice_settings.speaking_rate"]),
        (_agent(voice_settings=res.VoiceSettings(speaking_rate=2.5)), ["agent.voice_settings.speaking_rate"]),
        (
            _agent(voice_settings=res.VoiceSettings(speaking_rate=float("nan"))),
            ["agent.voice_settings.speaking_rate"],
        ),
        (_agent(voice_settings=res.VoiceSettings(language="english!")), ["agent.voice_settings.language"]),
        (_agent(voice_settings=res.VoiceSettings(stt_model="bad model")), ["agent.voice_settings.stt_model"]),
        (_agent(voice_settings=res.VoiceSettings(llm_model="a;rm -rf")), ["agent.voice_settings.llm_model"]),
        (_agent(voice_settings=res.VoiceSettings(tts_model="m" * 129)), ["agent.voice_settings.tts_model"]),
        (_agent(voice_settings=res.VoiceSettings(voice="<script>")), ["agent.voice_settings.voice"]),
        (
            _agent(voice_settings=res.VoiceSettings(provider_mode=42)),  # type: ignore[arg-type]
            ["agent.voice_settings.provider_mode"],
        ),
        (
            res.Agent(display_name="", greeting="g" * 1001),
            ["agent.display_name", "agent.greeting"],
        ),
    ],
)
async def test_create_rejects_bad_fields(agent_svc: AgentSvc, agent: res.Agent, fields: list[str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.agents.CreateAgent(pb.CreateAgentRequest(agent=agent), metadata=ALICE)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert sorted(error.fields) == sorted(fields)


async def test_create_rejects_bad_request_id(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.agents.CreateAgent(
            pb.CreateAgentRequest(agent=_agent(), request_id="has space"), metadata=ALICE
        )
    assert rich_error(caught.value).fields == ["request_id"]


async def test_get_errors(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.agents.GetAgent(pb.GetAgentRequest(agent_id="missing"), metadata=ALICE)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "AGENT_NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.agents.GetAgent(pb.GetAgentRequest(agent_id="../etc"), metadata=ALICE)
    assert rich_error(caught.value).fields == ["agent_id"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.agents.GetAgent(pb.GetAgentRequest(agent_id="default"))
    assert rich_error(caught.value).code == grpc.StatusCode.UNAUTHENTICATED


async def test_update_errors(agent_svc: AgentSvc) -> None:
    created = (
        await agent_svc.agents.CreateAgent(pb.CreateAgentRequest(agent=_agent()), metadata=ALICE)
    ).agent

    async def update(paths: list[str], metadata: tuple[tuple[str, str], ...], **fields: object) -> RichError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent_svc.agents.UpdateAgent(
                pb.UpdateAgentRequest(
                    agent=res.Agent(agent_id=fields.pop("agent_id", created.agent_id), **fields),  # type: ignore[arg-type]
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=metadata,
            )
        return rich_error(caught.value)

    error = await update(["owner_id"], ALICE)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"])
    error = await update(["no_such_field"], ALICE)
    assert error.fields == ["update_mask"]
    error = await update([], ALICE)
    assert error.fields == ["update_mask"]
    error = await update(["greeting"], BOB, greeting="mine now")
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "AGENT_NOT_OWNED")
    error = await update(["greeting"], ALICE, agent_id="default", greeting="x")
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    error = await update(["display_name"], ALICE, display_name="")
    assert error.fields == ["agent.display_name"]
    error = await update(["greeting"], ALICE, agent_id="missing", greeting="x")
    assert error.code == grpc.StatusCode.NOT_FOUND
    # A service may update any profile.
    ok = await agent_svc.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=res.Agent(agent_id=created.agent_id, voice_settings=res.VoiceSettings(speaking_rate=0.75)),
            update_mask=field_mask_pb2.FieldMask(paths=["voice_settings"]),
        ),
        metadata=SERVICE,
    )
    assert ok.agent.voice_settings.speaking_rate == 0.75
