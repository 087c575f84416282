"""gRPC adapter for `syntera.livekit.v1.LiveKitService`: validate → domain → map back."""

from __future__ import annotations

from typing import Any

import grpc

from agent_svc.livekit_access import UNRECOGNISED, Caller, LiveKitAccess, TokenRequest
from agent_svc.model import CallMedia, ParticipantKind, ParticipantState, ParticipantView, TrackSource
from servicekit import context
from servicekit.prototime import timestamp_from_datetime, to_seconds
from syntera.livekit.v1 import livekit_service_pb2 as pb
from syntera.livekit.v1 import livekit_service_pb2_grpc as pb_grpc
from syntera.livekit.v1 import resources_pb2 as res

Context = grpc.aio.ServicerContext[Any, Any]

_KIND_IN = {
    res.PARTICIPANT_KIND_UNSPECIFIED: None,
    res.PARTICIPANT_KIND_USER: ParticipantKind.USER,
    res.PARTICIPANT_KIND_AGENT: ParticipantKind.AGENT,
}
_KIND_OUT = {
    ParticipantKind.USER: res.PARTICIPANT_KIND_USER,
    ParticipantKind.AGENT: res.PARTICIPANT_KIND_AGENT,
}
_MEDIA_IN = {
    res.CALL_MEDIA_UNSPECIFIED: None,
    res.CALL_MEDIA_VOICE: CallMedia.VOICE,
    res.CALL_MEDIA_VIDEO: CallMedia.VIDEO,
}
_STATE_OUT = {
    ParticipantState.JOINING: res.PARTICIPANT_STATE_JOINING,
    ParticipantState.JOINED: res.PARTICIPANT_STATE_JOINED,
    ParticipantState.ACTIVE: res.PARTICIPANT_STATE_ACTIVE,
    ParticipantState.DISCONNECTED: res.PARTICIPANT_STATE_DISCONNECTED,
}
_SOURCE_OUT = {
    TrackSource.MICROPHONE: res.TRACK_SOURCE_MICROPHONE,
    TrackSource.CAMERA: res.TRACK_SOURCE_CAMERA,
    TrackSource.SCREEN_SHARE: res.TRACK_SOURCE_SCREEN_SHARE,
    TrackSource.SCREEN_SHARE_AUDIO: res.TRACK_SOURCE_SCREEN_SHARE_AUDIO,
}


class LiveKitServicer(pb_grpc.LiveKitServiceServicer):
    """Serves LiveKitService from `LiveKitAccess`."""

    def __init__(self, access: LiveKitAccess) -> None:
        self._access = access

    async def GenerateToken(self, request: pb.GenerateTokenRequest, _: Context) -> pb.GenerateTokenResponse:
        minted = await self._access.generate_token(
            _caller(),
            TokenRequest(
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                agent_id=request.agent_id,
                kind=_KIND_IN.get(request.participant_kind, UNRECOGNISED),
                media=_MEDIA_IN.get(request.media, UNRECOGNISED),
                ttl_seconds=to_seconds(request.ttl) if request.HasField("ttl") else None,
                display_name=request.display_name,
            ),
        )
        return pb.GenerateTokenResponse(
            token=minted.token,
            url=minted.url,
            room_name=minted.room_name,
            identity=minted.identity,
            participant_kind=_KIND_OUT[minted.kind],
            expire_time=timestamp_from_datetime(minted.expire_time),
            agent_name=minted.agent_name,
        )

    async def CreateRoom(self, request: pb.CreateRoomRequest, _: Context) -> pb.CreateRoomResponse:
        created = await self._access.create_room(_caller(), request.conversation_id, request.agent_id)
        return pb.CreateRoomResponse(
            room_name=created.room_name,
            exists=created.existed,
            sid=created.sid,
            dispatch_id=created.dispatch_id,
        )

    async def ListParticipants(
        self, request: pb.ListParticipantsRequest, _: Context
    ) -> pb.ListParticipantsResponse:
        participants = await self._access.list_participants(_caller(), request.conversation_id)
        return pb.ListParticipantsResponse(participants=[_participant(p) for p in participants])

    async def DispatchAgent(self, request: pb.DispatchAgentRequest, _: Context) -> pb.DispatchAgentResponse:
        dispatched = await self._access.dispatch_agent(_caller(), request.conversation_id, request.agent_id)
        return pb.DispatchAgentResponse(
            room_name=dispatched.room_name,
            dispatch_id=dispatched.dispatch_id,
            already_dispatched=dispatched.already_dispatched,
        )

    async def DeleteRoom(self, request: pb.DeleteRoomRequest, _: Context) -> pb.DeleteRoomResponse:
        deleted = await self._access.delete_room(_caller(), request.conversation_id)
        return pb.DeleteRoomResponse(room_name=deleted.room_name, deleted=deleted.deleted)


def _caller() -> Caller:
    return Caller(context.current_principal(), context.current_bearer_token())


def _participant(view: ParticipantView) -> res.Participant:
    participant = res.Participant(
        identity=view.identity,
        name=view.name,
        kind=_KIND_OUT[view.kind],
        state=_STATE_OUT[view.state],
        published_sources=[_SOURCE_OUT[s] for s in view.published_sources],
    )
    if view.join_time is not None:
        participant.join_time.CopyFrom(timestamp_from_datetime(view.join_time))
    return participant
