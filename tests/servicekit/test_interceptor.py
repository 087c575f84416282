"""The one server interceptor: auth on every RPC but health/reflection, and every failure a rich status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from servicekit import context
from servicekit.errors import (
    DomainError,
    ErrorKind,
    FieldViolation,
    QuotaViolation,
    invalid_argument,
    quota_exceeded,
)
from servicekit.server import RunningServer, start_server
from tests.support.identity import TOKEN_POLICY, bearer, service_token, user_token

pytestmark = pytest.mark.grpc

SERVICE = "test.Echo"


async def _whoami(request: bytes, _: Any) -> bytes:
    principal = context.current_principal()
    return f"{principal.subject}:{principal.is_service}".encode()


async def _whoami_later(request: bytes, _: Any) -> bytes:
    # Lets other calls of the same method run in between, then reads who this call is.
    await asyncio.sleep(0.01)
    principal = context.current_principal()
    return f"{principal.subject}:{context.current_request_id()}".encode()


class _FreshHandlers(grpc.GenericRpcHandler):
    """A new handler object on every lookup, each answering with its own number."""

    def __init__(self) -> None:
        self.made = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if handler_call_details.method != "/test.Fresh/Which":
            return None
        self.made += 1
        made = self.made

        async def which(request: bytes, _: Any) -> bytes:
            return str(made).encode()

        return grpc.unary_unary_rpc_method_handler(which)


async def _crash(request: bytes, _: Any) -> bytes:
    raise ValueError("secret-looking internal detail")


async def _invalid(request: bytes, _: Any) -> bytes:
    raise invalid_argument([FieldViolation("text", "x" * 20_000)] * 50)


async def _stream(request: bytes, _: Any) -> AsyncIterator[bytes]:
    yield b"one"
    raise invalid_argument([FieldViolation("after_seq", "must not be negative")])


async def _quota(request: bytes, _: Any) -> bytes:
    raise quota_exceeded(
        (QuotaViolation("QUOTA_MAX_CONCURRENT_AGENT_SESSIONS", "deployment", 5, "5 calls are running"),)
    )


async def _signed(request: bytes, ctx: Any) -> bytes:
    # Stands in for a webhook: no principal, the handler checks the raw header itself.
    header = dict(ctx.invocation_metadata()).get("authorization", "")
    if header != "signed-by-livekit":
        raise DomainError(ErrorKind.UNAUTHENTICATED, "SIGNATURE_INVALID", "bad signature")
    with pytest.raises(DomainError):
        context.current_principal()
    return b"accepted"


def _register(server: grpc.aio.Server) -> None:
    identity = {"request_deserializer": None, "response_serializer": None}
    handlers = {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami, **identity),
        "WhoAmILater": grpc.unary_unary_rpc_method_handler(_whoami_later, **identity),
        "Crash": grpc.unary_unary_rpc_method_handler(_crash, **identity),
        "Invalid": grpc.unary_unary_rpc_method_handler(_invalid, **identity),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, **identity),
        "Quota": grpc.unary_unary_rpc_method_handler(_quota, **identity),
        "Signed": grpc.unary_unary_rpc_method_handler(_signed, **identity),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers), _FreshHandlers())
    )


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    running: RunningServer = await start_server(
        host="127.0.0.1",
        port=0,
        tokens=TOKEN_POLICY,
        registrars=[_register],
        service_names=[SERVICE],
        self_authenticated=[f"/{SERVICE}/Signed"],
    )
    await running.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as chan:
        yield chan
    await running.stop(0)


def _unary(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{name}")


async def test_user_and_service_identity_reach_the_handler(channel: grpc.aio.Channel) -> None:
    assert await _unary(channel, "WhoAmI")(b"", metadata=bearer(user_token("alice"))) == b"alice:False"
    assert await _unary(channel, "WhoAmI")(b"", metadata=bearer(service_token("chat"))) == b"chat:True"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "TOKEN_MISSING"),
        ((("authorization", "Basic abc"),), "TOKEN_MISSING"),
        (bearer("not-a-jwt"), "TOKEN_INVALID"),
        (bearer(user_token("alice", ttl_seconds=-120)), "TOKEN_EXPIRED"),
    ],
)
async def test_bad_credentials_are_unauthenticated_with_reason(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "WhoAmI")(b"", metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(caught.value).reason == reason


async def test_health_needs_no_token(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_unexpected_exception_is_internal_and_hides_its_text(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Crash")(b"", metadata=bearer(user_token("alice")))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-looking" not in (caught.value.details() or "")
    assert _error_info(caught.value).reason == "INTERNAL"


async def test_huge_violation_text_is_clipped_not_resource_exhausted(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Invalid")(b"", metadata=bearer(user_token("alice")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "text"
    assert len(bad_request.field_violations[0].description) <= 200


async def test_stream_error_after_items_keeps_rich_status(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(f"/{SERVICE}/Stream")(b"", metadata=bearer(user_token("alice")))
    received: list[bytes] = []

    async def drain() -> None:
        async for item in call:
            received.append(item)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain()
    assert received == [b"one"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _error_info(caught.value).reason == "INVALID_FIELD"


async def test_quota_failure_names_the_limit(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Quota")(b"", metadata=bearer(user_token("alice")))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _error_info(caught.value).reason == "QUOTA_EXCEEDED"
    status = rpc_status.from_call(caught.value)
    assert status is not None
    failure = error_details_pb2.QuotaFailure()
    assert status.details[1].Unpack(failure)
    (violation,) = failure.violations
    assert violation.quota_id == "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS"
    assert violation.subject == "deployment"
    assert violation.quota_value == 5


async def test_self_authenticated_method_skips_bearer_check_but_maps_errors(
    channel: grpc.aio.Channel,
) -> None:
    signed = _unary(channel, "Signed")
    assert await signed(b"", metadata=(("authorization", "signed-by-livekit"),)) == b"accepted"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signed(b"", metadata=(("authorization", "forged"),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(caught.value).reason == "SIGNATURE_INVALID"
    # Every other method still wants a bearer token.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _unary(channel, "WhoAmI")(b"", metadata=(("authorization", "signed-by-livekit"),))
    assert _error_info(missing.value).reason == "TOKEN_MISSING"


async def test_concurrent_calls_of_one_method_each_see_their_own_caller_and_request_id(
    channel: grpc.aio.Channel,
) -> None:
    # The method's wrapper is made once and shared; each call must still get its own metadata.
    users = [f"user-{n}" for n in range(30)]
    replies = await asyncio.gather(
        *(
            _unary(channel, "WhoAmILater")(
                b"", metadata=(*bearer(user_token(user)), ("x-request-id", f"req-{user}"))
            )
            for user in users
        )
    )
    assert replies == [f"{user}:req-{user}".encode() for user in users]


async def test_a_new_handler_for_a_method_is_used_not_the_first_one_wrapped(
    channel: grpc.aio.Channel,
) -> None:
    which = channel.unary_unary("/test.Fresh/Which")
    first = int(await which(b"", metadata=bearer(user_token("alice"))))
    assert int(await which(b"", metadata=bearer(user_token("alice")))) == first + 1


def _count(name: str, method: str, **labels: str) -> float:
    service, _, rpc = method.lstrip("/").partition("/")
    found = REGISTRY.get_sample_value(name, {"grpc_service": service, "grpc_method": rpc, **labels})
    return found or 0.0


async def test_metrics_count_every_call_under_the_status_the_caller_got(channel: grpc.aio.Channel) -> None:
    whoami, crash, stream = f"/{SERVICE}/WhoAmI", f"/{SERVICE}/Crash", f"/{SERVICE}/Stream"
    health = "/grpc.health.v1.Health/Check"
    handled = "grpc_server_handled_total"
    expected = [
        (handled, whoami, {"grpc_type": "unary", "grpc_code": "OK"}),
        (handled, whoami, {"grpc_type": "unary", "grpc_code": "UNAUTHENTICATED"}),
        (handled, crash, {"grpc_type": "unary", "grpc_code": "INTERNAL"}),
        (handled, stream, {"grpc_type": "server_stream", "grpc_code": "INVALID_ARGUMENT"}),
        (handled, health, {"grpc_type": "unary", "grpc_code": "OK"}),
        ("grpc_server_started_total", crash, {"grpc_type": "unary"}),
        ("grpc_server_handling_seconds_count", crash, {"grpc_type": "unary"}),
    ]
    before = [_count(name, method, **labels) for name, method, labels in expected]
    streams_open = _count("grpc_server_streams_open", stream)

    await _unary(channel, "WhoAmI")(b"", metadata=bearer(user_token("alice")))
    for name, metadata in (("WhoAmI", ()), ("Crash", bearer(user_token("alice")))):
        with pytest.raises(grpc.aio.AioRpcError):
            await _unary(channel, name)(b"", metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in channel.unary_stream(stream)(b"", metadata=bearer(user_token("alice"))):
            pass
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))

    after = [_count(name, method, **labels) for name, method, labels in expected]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0] * len(expected)
    assert _count("grpc_server_streams_open", stream) == streams_open


def _error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info
