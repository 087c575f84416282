"""One server interceptor for every RPC: request id, authentication, error mapping and access log.

It wraps each method handler rather than acting before it, so the contextvars it sets are visible
inside the handler (grpc.aio runs interceptors and handlers in different contexts otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError

from servicekit import auth, context, wire
from servicekit.errors import DomainError, ErrorKind, FieldViolation, invalid_argument
from servicekit.status import grpc_code, to_status

log = structlog.get_logger("servicekit.rpc")

# Health and reflection must work without a token (probes, grpcurl discovery).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REQUEST_ID_HEADER = "x-request-id"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"

# grpc's stubs type handlers as sync; under grpc.aio they are coroutines or async generators.
Behavior = Callable[..., Any]
Decoder = Callable[[bytes], Any]


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates callers and turns every failure into a well-formed status."""

    def __init__(
        self,
        tokens: auth.TokenPolicy,
        public_prefixes: Collection[str] = PUBLIC_PREFIXES,
        self_authenticated: Collection[str] = (),
    ) -> None:
        """
        Args:
            tokens: Which bearer tokens are accepted (users' and services', each with its secret).
            public_prefixes: Methods left entirely alone (health, reflection).
            self_authenticated: Full method names whose callers cannot send our bearer token (LiveKit's
                webhook, signed its own way). They get no principal; the handler must verify the
                request itself. Errors, request id and access log are handled as for any method.
        """
        self._tokens = tokens
        self._public = tuple(public_prefixes)
        self._self_authenticated = frozenset(self_authenticated)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(self._public):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        # The request arrives as bytes and is decoded inside the call scope: grpc's own decoding
        # would answer undecodable input (strings that are not UTF-8) with UNKNOWN and the
        # exception text, before any of our error mapping runs.
        decode = _decoder(method, handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, metadata, decode, handler.unary_unary),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, metadata, decode, handler.unary_stream),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        return handler  # our contracts have no client streams

    def _authenticate(self, metadata: dict[str, Any]) -> auth.Principal:
        header = metadata.get("authorization")
        if not isinstance(header, str) or not header:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED, "TOKEN_MISSING", "missing authorization: Bearer <token>"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DomainError(
                ErrorKind.UNAUTHENTICATED, "TOKEN_MISSING", "authorization must be 'Bearer <token>'"
            )
        # Envoy marks every call it forwards: those come from outside, where no service calls.
        principal = self._tokens.verify(token.strip(), from_edge=auth.EDGE_HEADER in metadata)
        # Bound only after verification, and reset by the wrapper's `finally` with the rest.
        context.bind_bearer_token(token.strip())
        return principal

    @contextlib.asynccontextmanager
    async def _call_scope(
        self,
        method: str,
        metadata: dict[str, Any],
        ctx: grpc.aio.ServicerContext[Any, Any],
        decode: Callable[[], Any],
    ) -> AsyncIterator[Any]:
        """One call: the decoded request, caller and request id bound for its duration, any failure
        ended as a status.

        Decoding comes first: a request that cannot be read is INVALID_ARGUMENT whoever sends it,
        and saying so reveals nothing a credential would protect.
        """
        started = time.perf_counter()
        tokens = context.bind(None, _request_id(metadata))
        bearer_reset = context.bind_bearer_token("")
        fields_reset = context.bind_call_fields()
        try:
            request = decode()
            if method not in self._self_authenticated:
                context.bind_principal(self._authenticate(metadata))
            yield request
            _log_done(method, started, "OK", **context.call_fields())
        except BaseException as exc:  # noqa: BLE001 - every failure must become a status
            await _abort(method, started, ctx, exc)
            raise
        finally:
            context.unbind_call_fields(fields_reset)
            context.unbind_bearer_token(bearer_reset)
            context.unbind(tokens)

    def _wrap_unary(
        self, method: str, metadata: dict[str, Any], decode: Decoder, behavior: Behavior
    ) -> Behavior:
        async def wrapped(raw: bytes, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with self._call_scope(method, metadata, ctx, lambda: decode(raw)) as request:
                return await behavior(request, ctx)

        return wrapped

    def _wrap_stream(
        self, method: str, metadata: dict[str, Any], decode: Decoder, behavior: Behavior
    ) -> Behavior:
        async def wrapped(raw: bytes, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with self._call_scope(method, metadata, ctx, lambda: decode(raw)) as request:
                async for item in behavior(request, ctx):
                    yield item

        return wrapped


def _decoder(method: str, deserializer: Callable[[bytes], Any] | None) -> Decoder:
    """Decodes one request for `method`; undecodable bytes become INVALID_ARGUMENT naming the fields."""
    if deserializer is None:
        return lambda raw: raw

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            raise _undecodable(method, raw) from None

    return decode


def _undecodable(method: str, raw: bytes) -> DomainError:
    try:
        # `/pkg.Service/Method` → the input type, from the descriptors the service registered.
        rpc = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
    except KeyError:
        rpc = None
    paths = wire.invalid_utf8_fields(rpc.input_type, raw) if rpc is not None else []
    if paths:
        return invalid_argument([FieldViolation(path, "is not valid UTF-8") for path in paths])
    return invalid_argument([FieldViolation("request", "is not a well-formed request message")])


def _request_id(metadata: dict[str, Any]) -> str:
    given = metadata.get(REQUEST_ID_HEADER)
    if isinstance(given, str) and 0 < len(given) <= 128 and given.isprintable():
        return given
    return uuid.uuid4().hex


def _log_done(method: str, started: float, code: str, **extra: Any) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    log.info("rpc finished", method=method, code=code, duration_ms=duration_ms, **extra)


async def _abort(
    method: str, started: float, ctx: grpc.aio.ServicerContext[Any, Any], exc: BaseException
) -> None:
    """Ends the call with a rich status; returns only for exceptions that must propagate as they are."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        _log_done(method, started, "CANCELLED")
        return
    if isinstance(exc, grpc.aio.AbortError):
        return  # the handler already set a status
    if isinstance(exc, DomainError):
        error = exc
    elif isinstance(exc, grpc.aio.AioRpcError):
        error = _from_downstream(exc)
    else:
        log.error("rpc failed unexpectedly", method=method, error_type=type(exc).__name__, exc_info=exc)
        error = DomainError(ErrorKind.INTERNAL, "INTERNAL", "internal error; it has been logged")
    _log_done(method, started, error.kind.value, reason=error.reason)
    status = to_status(error)
    await ctx.abort(
        grpc_code(error.kind),
        status.message,
        trailing_metadata=((_STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


def _from_downstream(exc: grpc.aio.AioRpcError) -> DomainError:
    """A downstream failure a client wrapper did not map: pass on availability, hide the rest."""
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return DomainError(
            ErrorKind.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE", "a service this call needs is unavailable"
        )
    return DomainError(ErrorKind.INTERNAL, "DEPENDENCY_FAILED", "a service this call needs failed")
