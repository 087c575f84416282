"""One server interceptor for every RPC: request id, authentication, error mapping, access log and
the RPC metrics.

It wraps each method handler rather than acting before it, so the contextvars it sets are visible
inside the handler (grpc.aio runs interceptors and handlers in different contexts otherwise).

grpc.aio asks the interceptor for every call, so what depends only on the method (its decoder,
metric series, whether it authenticates) is made once per method; a call only binds its own
metadata to the method's wrapper. The metrics are recorded in the same wrapper rather than by an
interceptor of their own: one layer per call, not two.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, TypeAlias

import grpc
import structlog
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError

from servicekit import auth, context, metrics, wire
from servicekit.errors import DomainError, ErrorKind, FieldViolation, invalid_argument
from servicekit.status import grpc_code, to_status

log = structlog.get_logger("servicekit.rpc")

# Health and reflection must work without a token (probes, grpcurl discovery).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REQUEST_ID_HEADER = "x-request-id"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Methods prepared (one entry per method); only a generic handler that accepts any method name
# could reach it, and then the cache starts over rather than grow.
_METHODS_MAX = 1024

# grpc's stubs type handlers as sync; under grpc.aio they are coroutines or async generators.
Behavior = Callable[..., Any]
Decoder = Callable[[bytes], Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only
Context = grpc.aio.ServicerContext[Any, Any]
Metadata = Sequence[tuple[str, Any]]
Binder = Callable[[Metadata], Handler]


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates callers, turns every failure into a well-formed status, logs and counts calls."""

    def __init__(
        self,
        tokens: auth.TokenPolicy,
        public_prefixes: Collection[str] = PUBLIC_PREFIXES,
        self_authenticated: Collection[str] = (),
    ) -> None:
        """
        Args:
            tokens: Which bearer tokens are accepted (users' and services', each with its secret).
            public_prefixes: Methods left alone but for their metrics (health, reflection).
            self_authenticated: Full method names whose callers cannot send our bearer token (LiveKit's
                webhook, signed its own way). They get no principal; the handler must verify the
                request itself. Errors, request id and access log are handled as for any method.
        """
        self._tokens = tokens
        self._public = tuple(public_prefixes)
        self._self_authenticated = frozenset(self_authenticated)
        # Method → (the handler grpc found for it, how its calls get their handler).
        self._methods: dict[str, tuple[Handler, Binder]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        prepared = self._methods.get(method)
        # Compared by identity: a generic handler that made a new handler gets a new wrapper, never
        # a stale one.
        if prepared is None or prepared[0] is not handler:
            prepared = (handler, self._binder(method, handler))
            if len(self._methods) >= _METHODS_MAX:
                self._methods.clear()
            self._methods[method] = prepared
        return prepared[1](handler_call_details.invocation_metadata or ())

    def _binder(self, method: str, handler: Handler) -> Binder:
        """How each call of `method` gets its handler, made once per method.

        All but the call's metadata is bound here. The metadata grpc read for the call is bound to
        that call's handler only (a partial and a handler tuple): reading it again inside the call
        from the servicer context would cost more, as grpc builds it anew on each read.
        """
        if method.startswith(self._public):
            timed = metrics.timed(method, handler)
            return lambda _: timed
        # The request arrives as bytes and is decoded inside the call scope: grpc's own decoding
        # would answer undecodable input (strings that are not UTF-8) with UNKNOWN and the
        # exception text, before any of our error mapping runs.
        decode = _decoder(method, handler.request_deserializer)
        authenticate = method not in self._self_authenticated
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            series = metrics.MethodMetrics(method, metrics.UNARY)
            unary = functools.partial(self._unary, method, decode, authenticate, series, handler.unary_unary)
            return lambda metadata: grpc.unary_unary_rpc_method_handler(
                functools.partial(unary, metadata), request_deserializer=None, response_serializer=serializer
            )
        if handler.unary_stream is not None:
            series = metrics.MethodMetrics(method, metrics.SERVER_STREAM)
            streamed = handler.unary_stream
            stream = functools.partial(self._stream, method, decode, authenticate, series, streamed)
            return lambda metadata: grpc.unary_stream_rpc_method_handler(
                functools.partial(stream, metadata), request_deserializer=None, response_serializer=serializer
            )
        return lambda _: handler  # our contracts have no client streams

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

    # One call, in both wrappers below: the decoded request, caller and request id bound for its
    # duration, any failure ended as a status, the access log line and the metrics. Written out in
    # each rather than shared through a context manager: this runs for every RPC, and an async
    # context manager cost a generator and two more awaits per call.
    #
    # Decoding comes first: a request that cannot be read is INVALID_ARGUMENT whoever sends it,
    # and saying so reveals nothing a credential would protect. The metrics are recorded last, after
    # any failure was mapped, so they count the status the caller got.

    async def _unary(
        self,
        method: str,
        decode: Decoder,
        authenticate: bool,
        series: metrics.MethodMetrics,
        behavior: Behavior,
        call_metadata: Metadata,
        raw: bytes,
        ctx: Context,
    ) -> Any:
        series.started()
        started = time.perf_counter()
        outcome: BaseException | None = None
        metadata, resets = _bind_call(call_metadata)
        try:
            request = self._admit(decode, raw, authenticate, metadata)
            response = await behavior(request, ctx)
            _log_done(method, started, "OK", **context.call_fields())
            return response
        except BaseException as exc:  # noqa: BLE001 - every failure must become a status
            outcome = exc
            await _abort(method, started, ctx, exc)
            raise
        finally:
            _unbind_call(resets)
            series.handled(metrics.status_name(ctx, outcome), time.perf_counter() - started)

    async def _stream(
        self,
        method: str,
        decode: Decoder,
        authenticate: bool,
        series: metrics.MethodMetrics,
        behavior: Behavior,
        call_metadata: Metadata,
        raw: bytes,
        ctx: Context,
    ) -> AsyncIterator[Any]:
        series.started()
        started = time.perf_counter()
        outcome: BaseException | None = None
        series.stream_opened()
        metadata, resets = _bind_call(call_metadata)
        try:
            request = self._admit(decode, raw, authenticate, metadata)
            async for item in behavior(request, ctx):
                yield item
            _log_done(method, started, "OK", **context.call_fields())
        except BaseException as exc:  # noqa: BLE001 - every failure must become a status
            outcome = exc
            await _abort(method, started, ctx, exc)
            raise
        finally:
            _unbind_call(resets)
            series.stream_closed()
            series.handled(metrics.status_name(ctx, outcome), time.perf_counter() - started)

    def _admit(self, decode: Decoder, raw: bytes, authenticate: bool, metadata: dict[str, Any]) -> Any:
        """The decoded request, its caller bound first when the method authenticates."""
        request = decode(raw)
        if authenticate:
            context.bind_principal(self._authenticate(metadata))
        return request


# What `_bind_call` set, for `_unbind_call` to reset: the request id, the bearer token, the log fields.
_Resets: TypeAlias = tuple[Any, Any, Any]


def _bind_call(call_metadata: Metadata) -> tuple[dict[str, Any], _Resets]:
    """The call's metadata as a dict, with its request id bound and no bearer token or log fields yet."""
    metadata = dict(call_metadata)
    tokens = context.bind(None, _request_id(metadata))
    return metadata, (tokens, context.bind_bearer_token(""), context.bind_call_fields())


def _unbind_call(resets: _Resets) -> None:
    tokens, bearer_reset, fields_reset = resets
    context.unbind_call_fields(fields_reset)
    context.unbind_bearer_token(bearer_reset)
    context.unbind(tokens)


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


async def _abort(method: str, started: float, ctx: Context, exc: BaseException) -> None:
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
