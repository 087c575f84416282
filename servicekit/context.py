"""Per-call context (who is calling, request id) carried in contextvars.

Set by the server interceptor for the duration of one handler; read by servicers and domain code
through `current_principal()` so they never touch grpc metadata themselves.
"""

from __future__ import annotations

import contextvars
from typing import Any

from servicekit.auth import Principal
from servicekit.errors import unauthenticated

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The caller's raw bearer token, so a service can forward a user's own credentials downstream
# (e.g. agent_svc asking chat_svc whether the user owns a conversation). Never log it.
_bearer_token: contextvars.ContextVar[str] = contextvars.ContextVar("bearer_token", default="")
# What the handler adds to the call's access log line ("rpc finished"), instead of a line of its
# own: one JSON line per call costs less than two on a hot path (GenerateToken).
_call_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "call_fields", default=None
)


def current_principal() -> Principal:
    """The authenticated caller; UNAUTHENTICATED if the call carried none."""
    principal = _principal.get()
    if principal is None:
        raise unauthenticated("this call needs a bearer token", "TOKEN_MISSING")
    return principal


def current_request_id() -> str:
    return _request_id.get()


def current_bearer_token() -> str:
    """The caller's bearer token as it arrived (empty when the call carried none)."""
    return _bearer_token.get()


def bind_bearer_token(token: str) -> contextvars.Token[str]:
    """Sets the caller's raw token for the current call; reset it with `unbind_bearer_token`."""
    return _bearer_token.set(token)


def unbind_bearer_token(token: contextvars.Token[str]) -> None:
    _bearer_token.reset(token)


def bind_principal(principal: Principal) -> None:
    """Sets the caller for the rest of the current call (the interceptor resets it afterwards)."""
    _principal.set(principal)


def bind(
    principal: Principal | None, request_id: str
) -> tuple[contextvars.Token[Principal | None], contextvars.Token[str]]:
    return _principal.set(principal), _request_id.set(request_id)


def unbind(tokens: tuple[contextvars.Token[Principal | None], contextvars.Token[str]]) -> None:
    _principal.reset(tokens[0])
    _request_id.reset(tokens[1])


def add_call_fields(**fields: Any) -> None:
    """Adds `fields` to the current call's access log line (never secrets: it is logged at INFO)."""
    current = _call_fields.get()
    if current is None:
        _call_fields.set(dict(fields))
    else:
        current.update(fields)


def call_fields() -> dict[str, Any]:
    """What the current call's handler added with `add_call_fields`."""
    return _call_fields.get() or {}


def bind_call_fields() -> contextvars.Token[dict[str, Any] | None]:
    """Starts a call with no fields added; reset it with `unbind_call_fields`."""
    return _call_fields.set(None)


def unbind_call_fields(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _call_fields.reset(token)
