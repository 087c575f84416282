"""Property test: random field values at every agent_svc RPC get only documented status codes.

Runs against agent_svc as a real process in the shared mesh (with the real chat_svc for ownership, when
present, and the real LiveKit server), so validation, ownership and LiveKit errors are all on the path.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message as pb_message

from syntera.agent.v1 import agent_service_pb2 as agent_pb
from syntera.livekit.v1 import livekit_service_pb2 as livekit_pb
from tests.support.fuzzing import check_random_requests, unary_invoker
from tests.support.mesh import Mesh

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

RPCS: list[tuple[str, type[pb_message.Message], type[pb_message.Message]]] = [
    (
        "/syntera.livekit.v1.LiveKitService/GenerateToken",
        livekit_pb.GenerateTokenRequest,
        livekit_pb.GenerateTokenResponse,
    ),
    (
        "/syntera.livekit.v1.LiveKitService/CreateRoom",
        livekit_pb.CreateRoomRequest,
        livekit_pb.CreateRoomResponse,
    ),
    (
        "/syntera.livekit.v1.LiveKitService/ListParticipants",
        livekit_pb.ListParticipantsRequest,
        livekit_pb.ListParticipantsResponse,
    ),
    (
        "/syntera.livekit.v1.LiveKitService/DispatchAgent",
        livekit_pb.DispatchAgentRequest,
        livekit_pb.DispatchAgentResponse,
    ),
    (
        "/syntera.livekit.v1.LiveKitService/DeleteRoom",
        livekit_pb.DeleteRoomRequest,
        livekit_pb.DeleteRoomResponse,
    ),
    ("/syntera.agent.v1.AgentService/CreateAgent", agent_pb.CreateAgentRequest, agent_pb.CreateAgentResponse),
    ("/syntera.agent.v1.AgentService/GetAgent", agent_pb.GetAgentRequest, agent_pb.GetAgentResponse),
    ("/syntera.agent.v1.AgentService/ListAgents", agent_pb.ListAgentsRequest, agent_pb.ListAgentsResponse),
    ("/syntera.agent.v1.AgentService/UpdateAgent", agent_pb.UpdateAgentRequest, agent_pb.UpdateAgentResponse),
]


@pytest.fixture(scope="module")
def channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(mesh.agent_addr) as chan:
        yield chan


@pytest.mark.parametrize(
    ("path", "request_cls", "response_cls"), RPCS, ids=[p.rsplit("/", 1)[1] for p, _, _ in RPCS]
)
def test_random_input_gets_documented_codes_only(
    channel: grpc.Channel,
    path: str,
    request_cls: type[pb_message.Message],
    response_cls: type[pb_message.Message],
) -> None:
    check_random_requests(unary_invoker(channel, path, response_cls), request_cls, path, max_examples=60)
