"""Structured logging: JSON lines (or readable console lines) on stderr, fixed messages, data in fields.

Every line of a call carries its `request_id` (the one the edge made or the caller sent) and, when
tracing is on, the `trace_id` and `span_id` of the active span, so logs, traces and the Envoy
access log of one request can be joined. Records from the standard `logging` module (grpc,
pymongo, livekit, asyncio) go through the same processors and come out as the same JSON; only
their message is kept, never the `extra` fields libraries attach (they can hold transcript text).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import structlog

from servicekit import context, times, tracing

LogFormat = Literal["json", "console"]
_HANDLER_NAME = "syntera-structlog"
# Tracebacks as JSON, without each frame's local variables: they can hold bearer tokens, webhook
# signatures and transcript text.
_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def configure(level: str = "INFO", fmt: LogFormat = "json", service: str = "") -> None:
    """Configures structlog and the stdlib root logger once per process."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_JsonDumps())
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _IsoTimeStamper(),
        add_correlation,
    ]
    if service:
        shared.append(_add_service(service))
    _route_stdlib(numeric, shared, renderer)
    # Python warnings and a crash's traceback would otherwise be plain text among the JSON lines.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    structlog.configure(
        processors=[*shared, _TRACEBACKS, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # The same bytes as PrintLogger's print(line, flush=True), with one call to write, not two.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class _IsoTimeStamper:
    """`timestamp`, exactly as structlog's TimeStamper(fmt="iso", utc=True) writes it
    (`2026-01-02T03:04:05.678901Z`, no fraction when it is zero), in under half its time.

    Every access log line gets one, so the date and time of day are formatted once per second
    rather than through a datetime per line. The same clock, floored to the microsecond as
    `datetime.now` floors it.
    """

    def __init__(self) -> None:
        # (whole second, its text) as one tuple: a stdlib record logged from another thread
        # never sees one second's number with another's text.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        second, micros = divmod(times.now_us(), times.US_PER_SECOND)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        event["timestamp"] = f"{cached[1]}.{micros:06d}Z" if micros else f"{cached[1]}Z"
        return event


class _JsonDumps:
    """`json.dumps(event, default=...)` as JSONRenderer calls it, with the encoder made once.

    json.dumps builds a new JSONEncoder on every call that passes `default`; JSONRenderer always
    does. The encoder holds no state between calls, so one per `default` gives the same text.
    """

    def __init__(self) -> None:
        self._encoders: dict[Callable[[Any], Any], json.JSONEncoder] = {}

    def __call__(self, event: Any, *, default: Callable[[Any], Any]) -> str:
        encoder = self._encoders.get(default)
        if encoder is None:
            encoder = self._encoders[default] = json.JSONEncoder(default=default)
        return encoder.encode(event)


def add_correlation(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Adds the current call's request id and the active trace and span ids, when there are any."""
    request_id = context.current_request_id()
    if request_id:
        event.setdefault("request_id", request_id)
    ids = tracing.current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _route_stdlib(
    level: int, shared: list[structlog.typing.Processor], renderer: structlog.typing.Processor
) -> None:
    """One handler on the root logger that renders stdlib records like our own lines."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, structlog.processors.format_exc_info],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replaces whatever was there (a library's basicConfig, a previous configure in the same process).
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    structlog.get_logger("servicekit.logs").critical(
        "process failed with an uncaught exception", exc_info=(kind, error, trace)
    )


def reclaim_stdlib() -> None:
    """Removes root handlers that a library added after `configure` (LiveKit's CLI adds its own).

    Their lines would duplicate ours in another format, and may carry the `extra` fields we leave
    out on purpose.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() != _HANDLER_NAME:
            root.removeHandler(handler)


def _add_service(service: str) -> structlog.typing.Processor:
    def add(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.setdefault("service", service)
        return event

    return add
