"""Property test: random field values at every agent_svc RPC get only documented status codes.

Runs against agent_svc as a real process (with the real chat_svc for ownership, when present, and the
LiveKit stand-in), so validation, ownership and LiveKit errors are all on the path.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message as pb_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syntera.agent.v1 import agent_service_pb2 as agent_pb
from syntera.livekit.v1 import livekit_service_pb2 as livekit_pb
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import Mesh
from tests.support.proto_strategies import messages

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

# What a well-behaved server may answer to arbitrary input. UNKNOWN and INTERNAL mean a crash leaked
# out; UNAVAILABLE would mean a dependency died under the input.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
}

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

CALLERS = st.sampled_from(["user", "service"])


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
    call = channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )
    tokens = {"user": user_token("fuzz-user"), "service": service_token("fuzz-service")}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=messages(request_cls), caller=CALLERS)
    def check(request: pb_message.Message, caller: str) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            call(request, metadata=bearer(tokens[caller]), timeout=10)
        except grpc.RpcError as err:
            code, details = err.code(), err.details()  # type: ignore[attr-defined]
        assert code in DOCUMENTED, f"{path} answered {code} ({details[:300]}) to {str(request)[:500]}"

    check()
